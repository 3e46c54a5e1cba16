"""`palrm data NAME --out FILE`: any dataset builder's pairs as palrm-format files for `palrm train`.

Seen users go to FILE with a `split` column (train / validation / test per user, `split_pairs`
with val 0.1, test 0.2 and the seed) and a `group` column where the builder knows the true group.
Builders with held-out users (synthetic, persona, tldr) also write FILE's stem + ".unseen" + suffix
for those users, with `split` = "train" for each user's adaptation pool (the first `--shots` pairs
of `few_shot_split`) and "test" for the rest. Precomputed-embedding sets (synthetic, pickafilter,
paircomp) also write FILE's stem + ".embeddings.parquet": train with
`palrm train --data FILE --embeddings STEM.embeddings.parquet`.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from palrm.errors import ConfigError

logger = logging.getLogger(__name__)


def _synthetic(**kw):
    from palrm.data.synthetic import build_synthetic

    return build_synthetic(**kw)


def _persona(**kw):
    from palrm.data.persona import build_persona

    return build_persona(**kw)


def _tldr(source=None, **kw):
    from palrm.data.tldr import build_tldr

    if source is None:
        raise ConfigError("palrm data tldr needs --source PATH (a summarize_from_feedback comparisons file or folder)")
    return build_tldr(source, **kw)


def _pickafilter(source=None, **kw):
    from palrm.data.pickafilter import build_pickafilter, load_pickapic_embeddings

    if source is None:
        raise ConfigError("palrm data pickafilter needs --source FILE (Pick-a-Pic CLIP embeddings: .npz, .safetensors or .parquet)")
    return build_pickafilter(**load_pickapic_embeddings(source), **kw)


def _paircomp(name=None, **kw):
    from palrm.data.paircomp import build_paircomp

    if name is None:
        raise ConfigError("palrm data paircomp needs --name (Topmodel2007, FirstNames, GermanParties2009 or SoundQuality)")
    return build_paircomp(name, **kw)


def _polis(**kw):
    from palrm.data.polis import build_polis

    return build_polis(**kw)


@dataclass(frozen=True)
class Builder:
    func: Callable
    target: str  # the palrm.data function whose keyword arguments are accepted
    extra: tuple = ()  # accepted arguments handled by the wrapper


BUILDERS: dict[str, Builder] = {
    "synthetic": Builder(_synthetic, "palrm.data.synthetic:build_synthetic"),
    "persona": Builder(_persona, "palrm.data.persona:build_persona"),
    "tldr": Builder(_tldr, "palrm.data.tldr:build_tldr", ("source",)),
    "pickafilter": Builder(_pickafilter, "palrm.data.pickafilter:build_pickafilter", ("source",)),
    "paircomp": Builder(_paircomp, "palrm.data.paircomp:build_paircomp", ("name",)),
    "polis": Builder(_polis, "palrm.data.polis:build_polis"),
}


def builder_parameters(name: str) -> list[str]:
    import importlib

    module, func = BUILDERS[name].target.split(":")
    params = inspect.signature(getattr(importlib.import_module(module), func)).parameters
    skip = {"path", "name", "user_ids", "prompt_emb", "image_a_emb", "image_b_emb", "label"}
    return sorted({p for p in params if p not in skip} | set(BUILDERS[name].extra))


def build(name: str, options: dict[str, Any]):
    """Run builder `name` with keyword `options` (unknown names are reported with the accepted ones)."""
    if name not in BUILDERS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {', '.join(BUILDERS)}")
    accepted = builder_parameters(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"palrm data {name}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    return BUILDERS[name].func(**options)


def sibling(path: Path, tag: str, suffix: str | None = None) -> Path:
    """FILE.jsonl -> FILE.<tag><suffix> (suffix defaults to FILE's)."""
    return path.with_name(f"{path.stem}.{tag}{suffix if suffix is not None else path.suffix}")


def write_dataset(name: str, out: str | Path, options: dict[str, Any], *, seed: int = 0, shots: int = 50,
                  val_frac: float = 0.1, test_frac: float = 0.2) -> dict:
    """Build and write; returns {"pairs": path, "unseen": path|None, "embeddings": path|None, counts}."""
    import numpy as np

    from palrm.data.io import save_embeddings, save_pairs
    from palrm.data.splits import few_shot_split, split_pairs

    out = Path(out)
    if out.suffix.lower() not in (".jsonl", ".json", ".csv", ".parquet", ".pq"):
        raise ConfigError(f"--out {out}: use a .jsonl, .csv or .parquet file name")
    if "seed" in builder_parameters(name):
        options = {"seed": seed, **options}
    ds = build(name, options)
    pairs = ds.pairs
    unseen_ids = list(getattr(ds, "unseen_users", []) or [])
    seen_ids = list(getattr(ds, "seen_users", []) or []) or [u for u in pairs.user_ids if u not in set(unseen_ids)]
    seen = pairs.for_users(seen_ids)
    parts = split_pairs(seen, val_frac=val_frac, test_frac=test_frac, seed=seed)
    labelled = []
    for split_name, part in parts:
        part.split = np.full(len(part), split_name, dtype=object)
        labelled.append(part)
    seen_out = _concat(labelled)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"pairs": str(save_pairs(seen_out, out)), "n_pairs": len(seen_out),
                              "n_users": len(seen_out.users_present()), "unseen": None, "embeddings": None}
    if unseen_ids:
        pool, test = few_shot_split(pairs.for_users(unseen_ids), max_shots=shots, seed=seed)
        pool.split = np.full(len(pool), "train", dtype=object)
        test.split = np.full(len(test), "test", dtype=object)
        unseen_out = _concat([pool, test])
        result["unseen"] = str(save_pairs(unseen_out, sibling(out, "unseen")))
        result["n_unseen_pairs"], result["n_unseen_users"] = len(unseen_out), len(unseen_out.users_present())
    if pairs.embeddings is not None:
        result["embeddings"] = str(save_embeddings(pairs, sibling(out, "embeddings", ".parquet")))
    return result


def _concat(parts):
    """Concatenate PairData parts that share texts and user ids."""
    from dataclasses import replace

    import numpy as np

    first = parts[0]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return replace(first, user=cat("user"), prompt=cat("prompt"), chosen=cat("chosen"), rejected=cat("rejected"),
                   split=np.concatenate([p.split for p in parts]),
                   group=None if first.group is None else cat("group"))
