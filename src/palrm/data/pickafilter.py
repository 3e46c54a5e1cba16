"""Pick-a-Pic on precomputed embeddings, and Pick-a-Filter, its semi-synthetic heterogeneous variant.

Input layout (:func:`load_pickapic_embeddings`), one row per comparison:

* ``user_id``     (n,)   user of the comparison (strings or integers);
* ``prompt_emb``  (n, D) embedding of the prompt (e.g. OpenCLIP ViT-H/14 text tower);
* ``image_a_emb`` (n, D) embedding of the first image; ``image_b_emb`` (n, D) of the second;
* ``label``       (n,)   1 = image A won, 0 = image B won, 0.5 = tie (ties are dropped).

Pick-a-Filter recipe (:func:`build_pickafilter`, documented in docs/datasets.md):

1. users (sorted ids) are permuted with the seed and split in two balanced halves: group 0 prefers a
   cool (blue) filter, group 1 a warm (red) filter;
2. round(beta * n) pairs, chosen with the seed, are filtered; in each of them *both* images get a
   filter: the user's preferred one on one image, the other group's filter on the other image. For
   round(n_filtered / 2) of them (seeded) the preferred filter goes on the original winner, for the
   rest on the original loser;
3. in a filtered pair the image with the user's preferred filter becomes the chosen one (so the
   label flips exactly where the preferred filter went on the loser); other pairs keep their label.

Because no CLIP weights are available here, a filter is modelled in embedding space: a fixed
direction v_f is added and the result rescaled to the original norm, e' = (e + v_f) ||e|| / ||e + v_f||.
This approximates CLIP's embedding of the filtered image (a colour cast moves a CLIP image embedding
along a roughly constant direction); with real filtered-image embeddings, pass them instead.
With ``beta=0`` the result is plain Pick-a-Pic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from palrm.data.schema import PairData
from palrm.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

FILTERS = ("cool", "warm")  # index = the group that prefers the filter
EMBEDDING_KEYS = ("prompt_emb", "image_a_emb", "image_b_emb")
ALL_KEYS = ("user_id", "label", *EMBEDDING_KEYS)
_MAX_REPORTED = 5


@dataclass
class PickAFilterDataset:
    """Pick-a-Filter pairs and the ground truth of the construction.

    Attributes:
        pairs: the pairs, in input order (ties dropped); ``embeddings`` holds every prompt and image
            vector (float32) and ``texts`` their keys ("prompt/i", "image_a/i", "image_b/i", with
            "+cool"/"+warm" for a filtered image, i = input row); ``group`` is the user's group.
        user_group: user id -> 0 (prefers cool) or 1 (prefers warm).
        filter_vectors: "cool"/"warm" -> (D,) direction added to a filtered image embedding.
        filtered: (n_pairs,) bool, aligned with ``pairs`` rows: the pair got filters.
        flipped: (n_pairs,) bool: the original label was reversed (preferred filter on the loser).
        input_rows: (n_pairs,) int, the input row of each pair.
        stats: counts (pairs, ties_dropped, filtered, flipped, users per group).
    """

    pairs: PairData
    user_group: dict[str, int]
    filter_vectors: dict[str, np.ndarray]
    filtered: np.ndarray
    flipped: np.ndarray
    input_rows: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)


def build_pickafilter(
    prompt_emb: np.ndarray,
    image_a_emb: np.ndarray,
    image_b_emb: np.ndarray,
    user_ids: np.ndarray | list,
    label: np.ndarray,
    *,
    beta: float = 0.5,
    filter_vectors: dict[str, np.ndarray] | None = None,
    filter_strength: float = 0.5,
    seed: int = 0,
    source: str = "<memory>",
) -> PickAFilterDataset:
    """Build Pick-a-Filter (or plain Pick-a-Pic with ``beta=0``) from per-comparison embeddings.

    Args:
        prompt_emb, image_a_emb, image_b_emb: (n, D) embeddings of the prompt and the two images.
        user_ids: (n,) user of each comparison.
        label: (n,) 1 = image A won, 0 = image B won, 0.5 = tie (dropped).
        beta: fraction of pairs that get filters, in [0, 1].
        filter_vectors: {"cool": (D,), "warm": (D,)} directions added to a filtered image's
            embedding; default: two seeded random unit directions times ``filter_strength`` times
            the median image-embedding norm.
        filter_strength: size of the default filter directions relative to the embedding norm.
        seed: seeds the user split, the filtered pairs, the winner/loser halves, default filters.
        source: where the arrays came from, for messages.
    """
    arrays = (prompt_emb, image_a_emb, image_b_emb)
    emb = {k: np.asarray(v, dtype=np.float32) for k, v in zip(EMBEDDING_KEYS, arrays)}  # (n, D) each
    users = np.asarray(user_ids).astype(str)
    label = np.asarray(label, dtype=np.float64)
    _check_arrays(emb, users, label, source)
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"beta must be in [0, 1] (the fraction of filtered pairs), got {beta!r}")
    dim = emb["prompt_emb"].shape[1]
    seq_users, seq_pairs, seq_halves, seq_filters = np.random.SeedSequence(seed).spawn(4)

    keep = np.flatnonzero(label != 0.5)
    a_won = label[keep] == 1.0  # (n,)
    n = len(keep)
    if n == 0:
        raise DataFormatError(f"{source}: all {len(label)} comparisons are ties (label 0.5); nothing to build")
    user_list = sorted(set(users[keep].tolist()))
    perm = np.random.default_rng(seq_users).permutation(len(user_list))
    group_of = {user_list[i]: int(rank >= (len(user_list) + 1) // 2) for rank, i in enumerate(perm)}
    vectors = _filter_vectors(filter_vectors, emb, dim, filter_strength, seq_filters, source)

    filtered = np.zeros(n, dtype=bool)
    chosen_idx = np.random.default_rng(seq_pairs).choice(n, size=int(round(beta * n)), replace=False)
    filtered[chosen_idx] = True
    on_winner = np.zeros(n, dtype=bool)
    halves = np.random.default_rng(seq_halves).permutation(np.sort(chosen_idx))
    on_winner[halves[: int(round(len(halves) / 2))]] = True
    flipped = filtered & ~on_winner

    user_row = {u: i for i, u in enumerate(user_list)}
    pair_user = np.array([user_row[u] for u in users[keep]], dtype=np.int64)
    group = np.array([group_of[u] for u in user_list], dtype=np.int64)[pair_user]
    final_a_won = a_won ^ flipped  # the preferred filter marks the new winner

    # Filter on each image: -1 none, else an index into FILTERS; the preferred one marks the winner.
    preferred = np.where(filtered, group, -1)  # (n,)
    other = np.where(filtered, 1 - group, -1)
    filter_a = np.where(final_a_won, preferred, other)
    filter_b = np.where(final_a_won, other, preferred)
    names = ("", "+" + FILTERS[0], "+" + FILTERS[1])  # indexed by filter + 1
    texts = [t for row, fa, fb in zip(keep.tolist(), filter_a.tolist(), filter_b.tolist())
             for t in (f"prompt/{row}", f"image_a/{row}{names[fa + 1]}", f"image_b/{row}{names[fb + 1]}")]
    vecs = np.empty((3 * n, dim), dtype=np.float32)  # rows: prompt, image A, image B of each pair
    vecs[0::3] = emb["prompt_emb"][keep]
    vecs[1::3] = _apply(emb["image_a_emb"][keep], vectors, filter_a)
    vecs[2::3] = _apply(emb["image_b_emb"][keep], vectors, filter_b)
    base = 3 * np.arange(n, dtype=np.int64)
    pairs = PairData(
        texts=texts, user_ids=user_list, user=pair_user, prompt=base,
        chosen=np.where(final_a_won, base + 1, base + 2), rejected=np.where(final_a_won, base + 2, base + 1),
        group=group, embeddings=vecs, source=source,
        meta={"dataset": "pickafilter" if beta > 0 else "pickapic",
              "params": dict(beta=beta, filter_strength=filter_strength, seed=seed)},
    )
    stats = dict(pairs=n, ties_dropped=len(label) - n, filtered=int(filtered.sum()),
                 flipped=int(flipped.sum()), users=len(user_list),
                 users_cool=sum(g == 0 for g in group_of.values()),
                 users_warm=sum(g == 1 for g in group_of.values()))
    logger.info("built Pick-a-Filter (beta=%s) from %s: %s", beta, source, stats)
    return PickAFilterDataset(pairs=pairs, user_group=group_of, filter_vectors=vectors, filtered=filtered,
                              flipped=flipped, input_rows=keep, stats=stats)


def load_pickapic_embeddings(path: str | Path) -> dict[str, Any]:
    """Read per-comparison Pick-a-Pic embeddings; the result unpacks into :func:`build_pickafilter`.

    Layouts (keys as in the module docstring):

    * ``.npz``: arrays ``user_id`` (strings or integers), ``label``, ``prompt_emb``,
      ``image_a_emb``, ``image_b_emb`` (read with ``allow_pickle=False``: no object arrays);
    * ``.safetensors``: the same tensors; ``user_id`` must be an integer tensor;
    * ``.parquet``: columns ``user_id``, ``label`` and the three embedding columns as fixed-length
      lists of floats.

    Returns:
        {"user_ids", "label", "prompt_emb", "image_a_emb", "image_b_emb", "source"}, e.g.
        ``build_pickafilter(**load_pickapic_embeddings("pickapic_clip_h.npz"), beta=0.5)``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file; pass a .npz, .safetensors or .parquet file with "
                              f"the arrays {list(ALL_KEYS)}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
        elif suffix == ".parquet":
            arrays = _read_parquet(path)
        else:
            raise DataFormatError(f"{path}: unsupported extension {suffix!r}; expected .npz, "
                                  ".safetensors or .parquet")
    except DataFormatError:
        raise
    except Exception as exc:  # numpy, zipfile, safetensors and pyarrow each raise their own types
        raise DataFormatError(f"{path}: could not be read as {suffix} ({exc}); re-save it in one of "
                              "the layouts documented in docs/datasets.md (Pick-a-Filter)") from exc
    missing = [k for k in ALL_KEYS if k not in arrays]
    if missing:
        raise DataFormatError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}; expected "
                              f"{list(ALL_KEYS)} (one row per comparison)")
    out = {"user_ids": np.asarray(arrays["user_id"]), "label": np.asarray(arrays["label"], dtype=np.float64)}
    out.update({k: np.asarray(arrays[k], dtype=np.float32) for k in EMBEDDING_KEYS})
    _check_arrays(out, out["user_ids"].astype(str), out["label"], str(path))
    return out | {"source": str(path)}


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    arrays: dict[str, np.ndarray] = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if name in EMBEDDING_KEYS:
            rows = column.to_pylist()
            lengths = {len(r) if r is not None else -1 for r in rows}
            if len(lengths) != 1 or -1 in lengths:
                bad = [i for i, r in enumerate(rows) if r is None or len(r) != len(rows[0] or [])][:_MAX_REPORTED]
                raise DataFormatError(f"{path}: column {name!r} must hold lists of one length; rows "
                                      f"{bad} differ from row 0 (length {len(rows[0] or [])}) or are null")
            arrays[name] = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
        else:
            arrays[name] = column.to_numpy(zero_copy_only=False)
    return arrays


def _check_arrays(emb: dict, users: np.ndarray, label: np.ndarray, source: str) -> None:
    problems = []
    n = len(users)
    dims = set()
    for key in EMBEDDING_KEYS:
        x = emb[key]
        if x.ndim != 2 or len(x) != n:
            problems.append(f"{key} has shape {x.shape}, expected ({n}, D)")
            continue
        dims.add(x.shape[1])
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if len(bad):
            problems.append(f"{key} has NaN/inf in rows {bad[:_MAX_REPORTED].tolist()}")
    if len(dims) > 1:
        problems.append(f"the embedding widths differ ({sorted(dims)}); all three must share D")
    if label.shape != (n,):
        problems.append(f"label has shape {label.shape}, expected ({n},)")
    else:
        bad = np.flatnonzero(~np.isin(label, (0.0, 0.5, 1.0)))
        if len(bad):
            problems.append(f"label must be 1 (A won), 0 (B won) or 0.5 (tie); rows {bad[:_MAX_REPORTED].tolist()} "
                            f"hold {label[bad[:_MAX_REPORTED]].tolist()}")
    if n == 0:
        problems.append("there are no comparisons")
    if problems:
        raise DataFormatError(f"{source}: Pick-a-Pic arrays are malformed:\n  - " + "\n  - ".join(problems)
                              + "\nfix the arrays (one row per comparison) and retry")


def _filter_vectors(given, emb, dim, strength, seq, source) -> dict[str, np.ndarray]:
    if given is not None:
        if set(given) != set(FILTERS):
            raise ConfigError(f"filter_vectors needs exactly the keys {FILTERS}, got {sorted(given)}")
        out = {k: np.asarray(v, dtype=np.float32).reshape(-1) for k, v in given.items()}
        bad = {k: v.shape for k, v in out.items() if v.shape != (dim,)}
        if bad:
            raise ConfigError(f"filter_vectors must have shape ({dim},) like the embeddings of {source}; got {bad}")
        return out
    if not strength > 0:
        raise ConfigError(f"filter_strength must be > 0, got {strength!r}")
    norms = np.concatenate([np.linalg.norm(emb[k], axis=1) for k in ("image_a_emb", "image_b_emb")])
    scale = strength * float(np.median(norms))
    directions = np.random.default_rng(seq).standard_normal((2, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return {name: (scale * directions[i]).astype(np.float32) for i, name in enumerate(FILTERS)}


def _apply(x: np.ndarray, vectors: dict[str, np.ndarray], which: np.ndarray) -> np.ndarray:
    """Rows with ``which >= 0`` get FILTERS[which] added and are rescaled to their original norm."""
    out = x.copy()  # (n, D)
    for index, name in enumerate(FILTERS):
        rows = which == index
        moved = x[rows] + vectors[name]  # (m, D)
        scale = np.linalg.norm(x[rows], axis=1) / np.maximum(np.linalg.norm(moved, axis=1), 1e-12)
        out[rows] = moved * scale[:, None]
    return out
