"""Pair data larger than memory: index arrays and an embedding table as memory-mapped .npy files.

Layout of a memmap pair directory (written in chunks by `MemmapPairWriter`, read with
`open_memmap_pairs`):

    pairs.json        {"format", "n_pairs", "n_users", "n_texts", "dim"}; written last, atomically
    users.json        optional: the user ids, row i of the user table = users[i] (else "0".."n_users-1")
    user.npy          (n,) int32/int64 row of the pair's user (0..n_users-1)
    prompt.npy        (n,) row into embeddings.npy, or -1 for no prompt
    chosen.npy        (n,) row of the preferred response
    rejected.npy      (n,) row of the other response
    embeddings.npy    (n_texts, dim) float32 or float16

Training (`palrm.training.train_memmap`) streams over them with `ArraySource`: each batch reads its own rows, so
resident memory is bounded by the batch (plus the epoch's permutation, 8 bytes per pair, and the
model with its optimizer state), not by the data. No pickle: numpy's .npy format with
allow_pickle=False.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from palrm.atomic import atomic_write_bytes
from palrm.errors import DataFormatError

FORMAT = "palrm-memmap-pairs-v1"
_COLUMNS = ("user", "prompt", "chosen", "rejected")


class MemmapPairWriter:
    """Create the .npy files at their final size, fill them chunk by chunk, then `close()` writes pairs.json."""

    def __init__(self, directory: str | os.PathLike, *, n_pairs: int, n_users: int, n_texts: int, dim: int,
                 index_dtype=np.int32, embedding_dtype=np.float32) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "pairs.json").unlink(missing_ok=True)  # incomplete until close()
        self.meta = {"format": FORMAT, "n_pairs": int(n_pairs), "n_users": int(n_users), "n_texts": int(n_texts), "dim": int(dim)}
        self.arrays = {c: np.lib.format.open_memmap(self.directory / f"{c}.npy", mode="w+", dtype=index_dtype, shape=(n_pairs,))
                       for c in _COLUMNS}
        self.embeddings = np.lib.format.open_memmap(self.directory / "embeddings.npy", mode="w+", dtype=embedding_dtype,
                                                    shape=(n_texts, dim))

    def write_pairs(self, start: int, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.arrays[name][start:start + len(values)] = values

    def write_embeddings(self, start: int, vectors: np.ndarray) -> None:
        self.embeddings[start:start + len(vectors)] = vectors

    def write_user_ids(self, user_ids) -> None:
        """Name the users (row i = user_ids[i]); without it they are "0", "1", ..."""
        ids = [str(u) for u in user_ids]
        if len(ids) != self.meta["n_users"] or len(set(ids)) != len(ids):
            raise DataFormatError(f"{self.directory}: expected {self.meta['n_users']} distinct user ids, got {len(ids)} "
                                  f"({len(set(ids))} distinct)")
        atomic_write_bytes(self.directory / "users.json", json.dumps(ids).encode())

    def close(self) -> Path:
        for arr in (*self.arrays.values(), self.embeddings):
            arr.flush()
        atomic_write_bytes(self.directory / "pairs.json", json.dumps(self.meta, indent=2).encode())
        return self.directory


@dataclass
class MemmapPairs:
    """Read-only memory maps of a pair directory."""

    directory: Path
    user: np.ndarray
    prompt: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    embeddings: np.ndarray
    n_users: int
    user_ids: list[str]

    def __len__(self) -> int:
        return len(self.user)


def open_memmap_pairs(directory: str | os.PathLike) -> MemmapPairs:
    """Memory-map a directory written by `MemmapPairWriter` (nothing is read into memory yet)."""
    directory = Path(directory)
    manifest = directory / "pairs.json"
    if not manifest.is_file():
        raise DataFormatError(f"{directory}: no pairs.json; not a complete memmap pair directory (written by "
                              "palrm.data.memmap.MemmapPairWriter, which writes pairs.json last)")
    meta = json.loads(manifest.read_text())
    if meta.get("format") != FORMAT:
        raise DataFormatError(f"{manifest}: format {meta.get('format')!r}, expected {FORMAT!r}")
    arrays = {}
    for name in (*_COLUMNS, "embeddings"):
        try:
            arrays[name] = np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataFormatError(f"{directory / (name + '.npy')}: cannot be memory-mapped ({exc})") from None
    n = meta["n_pairs"]
    bad = [c for c in _COLUMNS if arrays[c].shape != (n,)]
    if bad or arrays["embeddings"].shape != (meta["n_texts"], meta["dim"]):
        raise DataFormatError(f"{directory}: array shapes do not match pairs.json ({', '.join(bad) or 'embeddings'})")
    users_file = directory / "users.json"
    user_ids = json.loads(users_file.read_text()) if users_file.is_file() else [str(i) for i in range(meta["n_users"])]
    if len(user_ids) != meta["n_users"]:
        raise DataFormatError(f"{users_file}: {len(user_ids)} ids for {meta['n_users']} users")
    return MemmapPairs(directory, arrays["user"], arrays["prompt"], arrays["chosen"], arrays["rejected"],
                       arrays["embeddings"], int(meta["n_users"]), [str(u) for u in user_ids])
