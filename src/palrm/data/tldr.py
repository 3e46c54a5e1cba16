"""Reddit TL;DR, the PAL paper's semi-synthetic length variant, from OpenAI's summarize_from_feedback.

Input: a local copy of the *comparisons* JSON-lines files of openai/summarize_from_feedback (a file,
or a directory whose ``*.json`` / ``*.jsonl`` files are read in sorted order, not recursively). Each
line is one comparison::

    {"worker": "...", "info": {"post": "...", "title": "...", "subreddit": "..."},
     "summaries": [{"text": "...", "policy": "sup2"}, {"text": "...", "policy": "sup4"}],
     "choice": 0}

Recipe (documented in docs/datasets.md, "Reddit TL;DR (length variant)"):

1. keep comparisons whose two summaries both come from supervised policies
   (:func:`is_supervised_policy`: the name contains ``sup`` and not ``ppo``, case-insensitive);
   CNN/DM records (``info.article`` set and no ``info.post``) are skipped;
2. drop comparisons whose two summaries have the same length (characters of the stripped text):
   the length rule cannot label them;
3. rank workers by the number of comparisons left (ties: worker id ascending); the top ``n_seen``
   are the seen users, other workers with at least ``min_unseen_pairs`` are the unseen users;
4. seeded permutation of the seen users: the first ``n_seen_longer`` prefer the longer summary, the
   rest the shorter; unseen users likewise, with round(n_unseen * n_seen_longer / n_seen) "longer";
5. each kept comparison is relabelled by its worker's rule; prompt = "Human: " + post + " Assistant:".
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from palrm.data.schema import PairData
from palrm.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

PROMPT_TEMPLATE = "Human: {post} Assistant:"
_MAX_REPORTED = 5


def is_supervised_policy(policy: str) -> bool:
    """True for a supervised fine-tuned policy name (``sup1``, ``sup4_t0.7``), False for PPO/others."""
    name = policy.lower()
    return "sup" in name and "ppo" not in name


@dataclass
class TLDRDataset:
    """The TL;DR length-variant pairs.

    Attributes:
        pairs: seen users' pairs first, then unseen users'; ``group`` is 1 for a worker who
            prefers the longer summary, 0 for the shorter. ``embeddings`` is None (texts).
        seen_users: the ``n_seen`` workers with the most usable comparisons.
        unseen_users: other workers with at least ``min_unseen_pairs`` usable comparisons.
        user_prefers_longer: worker id -> True (prefers the longer summary) / False.
        agrees_with_human: (n_pairs,) bool aligned with ``pairs`` rows: whether the length label
            equals the worker's original choice.
        stats: counts of records read, skipped and kept (see ``build_tldr``).
    """

    pairs: PairData
    seen_users: list[str]
    unseen_users: list[str]
    user_prefers_longer: dict[str, bool]
    agrees_with_human: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class _Comparison:
    worker: str
    post: str
    texts: tuple[str, str]
    choice: int


def build_tldr(
    path: str | Path,
    *,
    n_seen: int = 10,
    n_seen_longer: int = 7,
    min_unseen_pairs: int = 100,
    seed: int = 0,
    policy_filter: Callable[[str], bool] = is_supervised_policy,
) -> TLDRDataset:
    """Build the TL;DR length variant (see the module docstring for the exact recipe).

    Args:
        path: a comparisons ``.json``/``.jsonl`` file, or a directory of them.
        n_seen: number of seen workers (the most active ones).
        n_seen_longer: how many seen workers prefer the longer summary (the rest: the shorter).
        min_unseen_pairs: minimum usable comparisons for a non-seen worker to be an unseen user.
        seed: seeds the longer/shorter assignment.
        policy_filter: which policy names count as supervised (both summaries must pass).

    Raises:
        DataFormatError: missing path, a directory without ``*.json``/``*.jsonl`` files, malformed
            JSON or missing fields (naming the file and line numbers), or too few workers.
        ConfigError: invalid counts.
    """
    if n_seen < 1 or not 0 <= n_seen_longer <= n_seen or min_unseen_pairs < 1:
        raise ConfigError(
            f"build_tldr: need n_seen >= 1, 0 <= n_seen_longer <= n_seen and min_unseen_pairs >= 1; "
            f"got n_seen={n_seen}, n_seen_longer={n_seen_longer}, min_unseen_pairs={min_unseen_pairs}"
        )
    files = _list_files(Path(path))
    stats: Counter[str] = Counter()
    kept: list[_Comparison] = []
    for file in files:
        for comparison in _read_file(file, stats):
            if not all(policy_filter(p) for p in comparison.pop("policies")):
                stats["skipped_policy"] += 1
                continue
            c = _Comparison(**comparison)
            if len(c.texts[0].strip()) == len(c.texts[1].strip()):
                stats["skipped_equal_length"] += 1
                continue
            kept.append(c)
    counts = Counter(c.worker for c in kept)
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    if len(ranked) < n_seen:
        raise DataFormatError(
            f"{path}: after filtering ({dict(stats)}) only {len(ranked)} workers have usable "
            f"comparisons, fewer than n_seen={n_seen}; pass the full comparisons directory or a "
            "smaller n_seen"
        )
    seen = ranked[:n_seen]
    unseen = [w for w in ranked[n_seen:] if counts[w] >= min_unseen_pairs]
    rng = np.random.default_rng(seed)
    prefers_longer: dict[str, bool] = {}
    n_unseen_longer = int(round(len(unseen) * n_seen_longer / n_seen))
    for workers, n_longer in ((seen, n_seen_longer), (unseen, n_unseen_longer)):
        order = rng.permutation(len(workers))
        for rank, i in enumerate(order):
            prefers_longer[workers[i]] = rank < n_longer

    pairs, agrees = _to_pairs(kept, seen + unseen, prefers_longer, source=str(path))
    stats.update(
        workers_total=len(counts), seen_users=len(seen), unseen_users=len(unseen),
        pairs_seen=int(sum(counts[w] for w in seen)), pairs_unseen=int(sum(counts[w] for w in unseen)),
        pairs_dropped_other_workers=len(kept) - len(pairs),
    )
    pairs.meta.update(dataset="tldr", params=dict(n_seen=n_seen, n_seen_longer=n_seen_longer,
                                                  min_unseen_pairs=min_unseen_pairs, seed=seed))
    logger.info("built TL;DR length variant from %d file(s): %s", len(files), dict(stats))
    return TLDRDataset(pairs=pairs, seen_users=seen, unseen_users=unseen,
                       user_prefers_longer=prefers_longer, agrees_with_human=agrees, stats=dict(stats))


def _to_pairs(kept: list[_Comparison], users: list[str], prefers_longer: dict[str, bool],
              source: str) -> tuple[PairData, np.ndarray]:
    user_row = {u: i for i, u in enumerate(users)}
    text_row: dict[str, int] = {}
    rows: list[tuple[int, int, int, int, bool]] = []
    for c in kept:
        if c.worker not in user_row:
            continue
        lengths = [len(t.strip()) for t in c.texts]
        longer = int(lengths[1] > lengths[0])
        winner = longer if prefers_longer[c.worker] else 1 - longer
        prompt = text_row.setdefault(PROMPT_TEMPLATE.format(post=c.post), len(text_row))
        a, b = (text_row.setdefault(t, len(text_row)) for t in c.texts)
        chosen, rejected = (a, b) if winner == 0 else (b, a)
        rows.append((user_row[c.worker], prompt, chosen, rejected, winner == c.choice))
    table = np.array([r[:4] for r in rows], dtype=np.int64).reshape(-1, 4)
    order = np.argsort(table[:, 0], kind="stable")  # seen users first, file order within a user
    table = table[order]
    agrees = np.array([r[4] for r in rows], dtype=bool)[order]
    group = np.array([int(prefers_longer[u]) for u in users], dtype=np.int64)
    pairs = PairData(texts=list(text_row), user_ids=list(users), user=table[:, 0], prompt=table[:, 1],
                     chosen=table[:, 2], rejected=table[:, 3], group=group[table[:, 0]], source=source)
    return pairs, agrees


def _list_files(path: Path) -> list[Path]:
    if not path.exists():
        raise DataFormatError(
            f"{path}: no such file or directory; pass the path of a local copy of the "
            "summarize_from_feedback comparisons (a .json/.jsonl file or the directory holding them)"
        )
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl"))
    if not files:
        raise DataFormatError(
            f"{path}: directory holds no *.json or *.jsonl files (found: "
            f"{sorted(p.name for p in path.iterdir())[:5]}); pass the comparisons directory of "
            "summarize_from_feedback (files like batch3.json)"
        )
    return files


def _read_file(file: Path, stats: Counter) -> list[dict]:
    """Parse one JSON-lines file; collect every bad line and raise once, naming the first few."""
    out: list[dict] = []
    bad: list[str] = []
    with file.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            stats["records"] += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(f"line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            try:
                parsed = _parse_record(record)
            except ValueError as exc:
                bad.append(f"line {lineno}: {exc}")
                continue
            if parsed is None:
                stats["skipped_not_reddit"] += 1
            else:
                out.append(parsed)
    if bad:
        shown = "\n  ".join(bad[:_MAX_REPORTED])
        more = f"\n  ... and {len(bad) - _MAX_REPORTED} more" if len(bad) > _MAX_REPORTED else ""
        raise DataFormatError(
            f"{file}: {len(bad)} malformed comparison line(s):\n  {shown}{more}\n"
            'expected one JSON object per line with "worker", "info": {"post": ...}, '
            '"summaries": [{"text", "policy"}, {"text", "policy"}] and "choice" (0 or 1), as in '
            "openai/summarize_from_feedback's comparisons files; fix or remove these lines"
        )
    return out


def _parse_record(record: object) -> dict | None:
    """The fields build_tldr needs, None for a CNN/DM record; ValueError names what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = [k for k in ("worker", "info", "summaries", "choice") if k not in record]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    info = record["info"]
    if not isinstance(info, dict):
        raise ValueError(f'"info" must be an object, got {type(info).__name__}')
    post = info.get("post")
    if post is None and info.get("article") is not None:
        return None  # a CNN/DailyMail comparison, not a Reddit post
    if not isinstance(post, str):
        raise ValueError('missing field "info.post" (the Reddit post text)')
    worker = record["worker"]
    if not isinstance(worker, str) or not worker:
        raise ValueError(f'"worker" must be a non-empty string, got {worker!r}')
    summaries = record["summaries"]
    if not (isinstance(summaries, list) and len(summaries) == 2 and all(
            isinstance(s, dict) and isinstance(s.get("text"), str) and isinstance(s.get("policy"), str)
            for s in summaries)):
        raise ValueError('"summaries" must be a list of two objects with string "text" and "policy"')
    choice = record["choice"]
    if choice not in (0, 1) or isinstance(choice, bool):
        raise ValueError(f'"choice" must be 0 or 1, got {choice!r}')
    return {"worker": worker, "post": post, "choice": int(choice),
            "texts": (summaries[0]["text"], summaries[1]["text"]),
            "policies": (summaries[0]["policy"], summaries[1]["policy"])}
