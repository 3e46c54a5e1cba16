"""`PairData`: the one in-memory form of preference data in palrm.

A pair table (user u prefers `chosen` over `rejected` for `prompt`) is held as integer index arrays
over a table of unique texts, so every distinct text is embedded exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

SPLITS = ("train", "validation", "test")
NO_PROMPT = -1  # prompt index of a pair without a prompt (prompt-free data, as PAL-A assumes)


@dataclass
class PairData:
    """Preference pairs as index arrays over unique texts and users.

    Attributes:
        texts: unique texts (prompts and responses). For precomputed embeddings these are the
            row-id keys of `embeddings` (as strings).
        user_ids: distinct user ids; `user` indexes this list.
        user: (n,) int64 index into `user_ids`.
        prompt: (n,) int64 index into `texts`, or NO_PROMPT (-1) where the pair has no prompt.
        chosen: (n,) int64 index into `texts` of the preferred response.
        rejected: (n,) int64 index into `texts` of the other response.
        split: (n,) array of "train" / "validation" / "test" taken from the data, or None.
        group: (n,) int64 true group of the pair's user where known (benchmarks), or None.
        embeddings: (len(texts), D) float32 precomputed vectors aligned with `texts`, or None
            (then an encoder embeds `texts`).
        source: where the data came from (a path, or "<memory>"), used in messages.
    """

    texts: list[str]
    user_ids: list[str]
    user: np.ndarray
    prompt: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    split: np.ndarray | None = None
    group: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    source: str = "<memory>"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user = np.asarray(self.user, dtype=np.int64)
        self.prompt = np.asarray(self.prompt, dtype=np.int64)
        self.chosen = np.asarray(self.chosen, dtype=np.int64)
        self.rejected = np.asarray(self.rejected, dtype=np.int64)
        n = len(self.user)
        for name in ("prompt", "chosen", "rejected"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"PairData.{name} has {len(getattr(self, name))} rows, user has {n}")
        if self.split is not None:
            self.split = np.asarray(self.split, dtype=object)
        if self.group is not None:
            self.group = np.asarray(self.group, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_pairs(self) -> int:
        return len(self.user)

    @property
    def pair_user_ids(self) -> np.ndarray:
        """(n,) object array: the user id string of every pair."""
        return np.asarray(self.user_ids, dtype=object)[self.user] if len(self) else np.empty(0, dtype=object)

    @property
    def has_prompts(self) -> bool:
        return bool(np.any(self.prompt != NO_PROMPT))

    def select(self, index: np.ndarray) -> "PairData":
        """A new PairData with the pairs at `index` (int positions or a boolean mask).

        The text table, embeddings and user list are shared, not copied; unused users stay listed
        (call `compact_users()` to drop them).
        """
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return replace(
            self,
            user=self.user[index],
            prompt=self.prompt[index],
            chosen=self.chosen[index],
            rejected=self.rejected[index],
            split=None if self.split is None else self.split[index],
            group=None if self.group is None else self.group[index],
            meta=dict(self.meta),
        )

    def users_present(self) -> list[str]:
        """User ids that have at least one pair, in `user_ids` order."""
        present = np.unique(self.user)
        return [self.user_ids[i] for i in present]

    def compact_users(self) -> "PairData":
        """Drop users without pairs and renumber `user` accordingly."""
        present, inverse = np.unique(self.user, return_inverse=True)
        return replace(self, user_ids=[self.user_ids[i] for i in present], user=inverse.astype(np.int64))

    def for_users(self, user_ids) -> "PairData":
        """The pairs of the given users (ids not present are ignored)."""
        wanted = {u for u in user_ids}
        mask = np.array([u in wanted for u in self.user_ids], dtype=bool)
        return self.select(mask[self.user]) if len(self) else self

    def text_of(self, index: np.ndarray) -> list[str]:
        """Texts for an index array; NO_PROMPT becomes the empty string."""
        return ["" if i == NO_PROMPT else self.texts[i] for i in np.asarray(index)]

    def to_frame(self):
        """A pandas DataFrame in palrm's file format (user_id, prompt, chosen, rejected[, split, group])."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "user_id": self.pair_user_ids,
                "prompt": self.text_of(self.prompt),
                "chosen": self.text_of(self.chosen),
                "rejected": self.text_of(self.rejected),
            }
        )
        if self.split is not None:
            frame["split"] = self.split
        if self.group is not None:
            frame["group"] = self.group
        return frame


def concat_pairs(parts: list[PairData]) -> PairData:
    """One PairData with the pairs of every part, in order (e.g. a file of known users and one of new users).

    Texts (or embedding row keys) and user ids are merged by value, so parts loaded from different
    files may share them. `split` and `group` are kept when every part has them; group labels
    mapped from strings (``meta["group_labels"]``) are re-mapped over the union of the labels.

    Raises:
        ValueError: no parts, or some parts have precomputed embeddings and others texts.
    """
    if not parts:
        raise ValueError("concat_pairs needs at least one PairData")
    if len(parts) == 1:
        return parts[0]
    if len({p.embeddings is None for p in parts}) > 1:
        raise ValueError("cannot concatenate pairs with precomputed embeddings and pairs with texts")
    texts: dict[str, int] = {}
    users: dict[str, int] = {}
    rows: list[np.ndarray] = []
    arrays: dict[str, list[np.ndarray]] = {"user": [], "prompt": [], "chosen": [], "rejected": []}
    for p in parts:
        text_map = np.array([texts.setdefault(t, len(texts)) for t in p.texts] + [NO_PROMPT], dtype=np.int64)
        user_map = np.array([users.setdefault(u, len(users)) for u in p.user_ids], dtype=np.int64)
        arrays["user"].append(user_map[p.user] if len(p) else p.user)
        for name in ("prompt", "chosen", "rejected"):
            arrays[name].append(text_map[getattr(p, name)])  # NO_PROMPT (-1) indexes the appended -1
        if p.embeddings is not None:
            rows.append(p.embeddings)
    embeddings = None
    if rows:
        first_row = {}
        for p, matrix in zip(parts, rows):
            for t, vec in zip(p.texts, matrix):
                first_row.setdefault(t, vec)
        embeddings = np.stack([first_row[t] for t in texts]).astype(np.float32)
    split = np.concatenate([p.split for p in parts]) if all(p.split is not None for p in parts) else None
    group = None
    if all(p.group is not None for p in parts):
        label_maps = [p.meta.get("group_labels") for p in parts]
        if any(label_maps):
            names = [{v: k for k, v in (m or {}).items()} for m in label_maps]
            labels = [np.array([n.get(int(g), str(int(g))) for g in p.group], dtype=object) for n, p in zip(names, parts)]
            union = {label: i for i, label in enumerate(sorted(set(np.concatenate(labels))))}
            group = np.array([union[x] for x in np.concatenate(labels)], dtype=np.int64)
            meta_labels = union
        else:
            group = np.concatenate([p.group for p in parts])
    meta = {"parts": [p.source for p in parts]}
    if group is not None and any(p.meta.get("group_labels") for p in parts):
        meta["group_labels"] = meta_labels
    return PairData(texts=list(texts), user_ids=list(users), user=np.concatenate(arrays["user"]),
                    prompt=np.concatenate(arrays["prompt"]), chosen=np.concatenate(arrays["chosen"]),
                    rejected=np.concatenate(arrays["rejected"]), split=split, group=group, embeddings=embeddings,
                    source=" + ".join(p.source for p in parts), meta=meta)
