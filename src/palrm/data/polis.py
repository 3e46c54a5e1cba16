"""Polis conversations (compdemocracy/openData, CC BY 4.0) as preference pairs.

Polis participants vote agree (1) / disagree (-1) / pass (0) on short statements written by other
participants. A voter who agreed with statement a and disagreed with statement b prefers a to b:
one pair (prompt = the conversation's topic, chosen = a, rejected = b). Rules:

- the latest vote per (voter, statement) counts (votes.csv holds re-votes); passes give no pair;
- statements moderated out (`moderated == -1` in comments.csv) are dropped;
- a voter with A agreed and D disagreed statements implies A x D pairs; at most
  `max_pairs_per_user` of them are kept (a seeded sample), voters with fewer than `min_pairs`
  pairs are dropped;
- `group` is the upstream opinion group of the voter (participants-votes.csv `group-id`; -1 where
  Polis assigned none), to compare learned groups with;
- users are `"<conversation>:<voter-id>"`; `unseen_frac` of them (seeded) are held out.

The data are read at run time from `source` (default: $PALRM_POLIS_DIR or ../shared/data/polis);
nothing is copied into palrm. Attribution (required by the licence): "Data was gathered using the
Polis software (compdemocracy.org/polis) and is sub-licensed under CC BY 4.0 with Attribution to
The Computational Democracy Project."
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from palrm.data.schema import PairData
from palrm.errors import ConfigError, DataFormatError

SOURCE_ENV = "PALRM_POLIS_DIR"
DEFAULT_CONVERSATIONS = ("15-per-hour-seattle", "brexit-consensus", "scoop-hivemind.ubi")


@dataclass
class PolisDataset:
    pairs: PairData
    seen_users: list[str]
    unseen_users: list[str]
    stats: dict = field(default_factory=dict)


def default_source() -> Path | None:
    """$PALRM_POLIS_DIR, else ../shared/data/polis from the working directory or the checkout."""
    candidates = [Path(os.environ[SOURCE_ENV])] if os.environ.get(SOURCE_ENV) else []
    relative = Path("..") / "shared" / "data" / "polis"
    candidates += [Path.cwd() / relative, Path(__file__).resolve().parents[3] / relative]
    return next((c for c in candidates if c.is_dir()), None)


def _read(folder: Path, name: str, **kw) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        raise DataFormatError(f"{folder}: missing {name} (a Polis export folder holds comments.csv, votes.csv, "
                              "participants-votes.csv and summary.csv)")
    return pd.read_csv(path, **kw)


def conversation_pairs(folder: Path, *, max_pairs_per_user: int, min_pairs: int, rng: np.random.Generator) -> pd.DataFrame:
    """One conversation's pairs as a frame (user_id, prompt, chosen, rejected, group)."""
    name = folder.name
    comments = _read(folder, "comments.csv")
    votes = _read(folder, "votes.csv")
    groups = _read(folder, "participants-votes.csv")
    summary = _read(folder, "summary.csv", header=None)  # key,value lines
    info = dict(zip(summary.iloc[:, 0].astype(str), summary.iloc[:, 1].astype(str)))
    topic = info.get("topic", name)
    keep = comments[comments["moderated"] != -1]
    body = dict(zip(keep["comment-id"], keep["comment-body"].astype(str).str.strip()))
    votes = votes.sort_values("timestamp", kind="stable").drop_duplicates(["voter-id", "comment-id"], keep="last")
    votes = votes[votes["comment-id"].isin(body) & (votes["vote"] != 0)]
    group_of = dict(zip(groups["participant"], groups["group-id"].fillna(-1).astype(int)))
    rows = []
    for voter, v in votes.groupby("voter-id", sort=True):
        agreed = v.loc[v["vote"] > 0, "comment-id"].to_numpy()
        disagreed = v.loc[v["vote"] < 0, "comment-id"].to_numpy()
        n = len(agreed) * len(disagreed)
        if n < min_pairs:
            continue
        pick = rng.choice(n, size=min(n, max_pairs_per_user), replace=False) if n > max_pairs_per_user else np.arange(n)
        uid, g = f"{name}:{voter}", int(group_of.get(voter, -1))
        for i in np.sort(pick):
            a, d = agreed[i // len(disagreed)], disagreed[i % len(disagreed)]
            if body[a] != body[d]:
                rows.append((uid, topic, body[a], body[d], g))
    return pd.DataFrame(rows, columns=["user_id", "prompt", "chosen", "rejected", "group"])


def build_polis(
    conversations: tuple[str, ...] | list[str] | str = DEFAULT_CONVERSATIONS,
    *,
    source: str | Path | None = None,
    max_pairs_per_user: int = 60,
    min_pairs: int = 10,
    unseen_frac: float = 0.2,
    seed: int = 0,
) -> PolisDataset:
    """Pairs of the named Polis conversations (folder names under `source`; "all" = every folder)."""
    from palrm.data.io import load_pairs

    root = Path(source) if source is not None else default_source()
    if root is None or not root.is_dir():
        raise ConfigError(f"Polis data not found (source={source!r}); pass source=DIR or set ${SOURCE_ENV} to the folder "
                          "holding one sub-folder per conversation (compdemocracy/openData)")
    if conversations == "all":
        conversations = sorted(p.name for p in root.iterdir() if (p / "votes.csv").is_file())
    elif isinstance(conversations, str):
        conversations = [c for c in conversations.split(",") if c]
    missing = [c for c in conversations if not (root / c).is_dir()]
    if missing:
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise ConfigError(f"Polis conversation(s) {', '.join(missing)} not in {root}; available: {', '.join(have)}")
    rng = np.random.default_rng(seed)
    frame = pd.concat([conversation_pairs(root / c, max_pairs_per_user=max_pairs_per_user, min_pairs=min_pairs, rng=rng)
                       for c in conversations], ignore_index=True)
    if frame.empty:
        raise DataFormatError(f"{root}: no voter of {', '.join(conversations)} has {min_pairs} or more pairs")
    pairs = load_pairs(frame)
    pairs.source = f"polis:{','.join(conversations)}"
    users = sorted(pairs.users_present())
    n_unseen = int(round(unseen_frac * len(users)))
    unseen = sorted(np.random.default_rng(seed).choice(users, size=n_unseen, replace=False).tolist()) if n_unseen else []
    seen = [u for u in users if u not in set(unseen)]
    stats = {"conversations": list(conversations), "n_pairs": len(pairs), "n_users": len(users),
             "n_statements": len(set(frame["chosen"]) | set(frame["rejected"])), "max_pairs_per_user": max_pairs_per_user,
             "min_pairs": min_pairs}
    return PolisDataset(pairs=pairs, seen_users=seen, unseen_users=unseen, stats=stats)
