"""Durable user store of the reward service: SQLite in WAL mode, one row per user.

An adapt is acknowledged only after its row is committed (`synchronous=FULL`), so a killed server
(even SIGKILL) never loses an acknowledged user. Each write replaces the user's whole row in one
transaction (last write wins, no torn rows) and bumps its `version`. The pairs a user was adapted
on are kept (table `user_pairs`, appended in the same transaction), so a later adapt of the same
user re-fits on all of them ("add data"). The store also records which
model it belongs to (a fingerprint of the model files) and refuses to be applied to another model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from palrm.errors import ModelFileError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: user_pairs (schema-1 stores are upgraded in place; their users have no stored pairs)

__all__ = ["StoredUser", "UserStore", "model_fingerprint", "default_store_path"]


@dataclass(frozen=True)
class StoredUser:
    user_id: str
    logits: list[float]
    weights: list[float]
    n_pairs: int
    version: int
    updated_at: float
    posterior: dict | None = None  # the user's weight posterior (UserPosterior.to_dict), when the model has one


def model_fingerprint(model_dir: Path) -> str:
    """SHA-256 over the model's config.json, model.safetensors and users.json (read-only)."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "users.json"):
        path = Path(model_dir) / name
        h.update(name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def default_store_path(model_dir: Path) -> Path:
    """`runs/x/model` -> `runs/x/model.users.sqlite`: beside the model directory, never inside it."""
    model_dir = Path(model_dir).resolve()
    return model_dir.with_name(model_dir.name + ".users.sqlite")


class UserStore:
    """SQLite (WAL) table of users added or updated while serving. Thread-safe (one connection + lock)."""

    shared = False  # one process per store: nothing to poll (the PostgreSQL store is shared)

    def __init__(self, path: str | Path, *, fingerprint: str, k: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, logits TEXT NOT NULL, weights TEXT NOT NULL, "
                "n_pairs INTEGER NOT NULL, version INTEGER NOT NULL, updated_at REAL NOT NULL)"
            )
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(users)").fetchall()}
            if "posterior" not in columns:  # stores written before issue 10: add the (nullable) column
                self._db.execute("ALTER TABLE users ADD COLUMN posterior TEXT")
            self._db.execute("CREATE TABLE IF NOT EXISTS user_pairs (user_id TEXT NOT NULL, pair TEXT NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS user_pairs_user ON user_pairs (user_id)")
        except sqlite3.Error as exc:
            raise ModelFileError(f"user store {self.path} cannot be opened ({exc}); pass another --store PATH") from None
        self._check_meta(fingerprint, k)

    def _check_meta(self, fingerprint: str, k: int) -> None:
        with self._lock:
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                     [("schema_version", str(SCHEMA_VERSION)), ("model_fingerprint", fingerprint), ("k", str(k))])
                self._db.execute("COMMIT")
                return
        if rows.get("model_fingerprint") != fingerprint or rows.get("k") != str(k):
            raise ModelFileError(f"user store {self.path} belongs to another model (its fingerprint differs from this "
                                 "model's files); pass --store NEW_PATH for this model, or serve the model it was made for")
        if int(rows.get("schema_version", "0")) > SCHEMA_VERSION:
            raise ModelFileError(f"user store {self.path} was written by a newer palrm; upgrade palrm")
        if int(rows.get("schema_version", "0")) < SCHEMA_VERSION:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def put(self, user_id: str, logits: list[float], weights: list[float], new_pairs: list[dict],
            posterior: dict | None = None) -> int:
        """Write the user's row (replacing it; with its weight posterior when given), append `new_pairs` to
        their pairs, and commit; returns the new version. `n_pairs` counts every pair the user was adapted on."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT version, n_pairs FROM users WHERE user_id = ?", (user_id,)).fetchone()
                version = (row[0] if row else 0) + 1
                total = (row[1] if row else 0) + len(new_pairs)
                self._db.execute("INSERT OR REPLACE INTO users (user_id, logits, weights, n_pairs, version, updated_at, "
                                 "posterior) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (user_id, json.dumps([float(x) for x in logits]), json.dumps([float(x) for x in weights]),
                                  total, version, time.time(), None if posterior is None else json.dumps(posterior)))
                self._db.executemany("INSERT INTO user_pairs VALUES (?, ?)",
                                     [(user_id, json.dumps(p, sort_keys=True)) for p in new_pairs])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return version

    @staticmethod
    def _row(row) -> StoredUser:
        posterior = json.loads(row[6]) if len(row) > 6 and row[6] else None
        return StoredUser(row[0], json.loads(row[1]), json.loads(row[2]), int(row[3]), int(row[4]), float(row[5]), posterior)

    def get(self, user_id: str) -> StoredUser | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM users WHERE user_id = ?", (user_id,)).fetchone()
        return self._row(row) if row else None

    def pairs(self, user_id: str) -> list[dict]:
        """The pairs `user_id` was adapted on, in the order they arrived (empty for unknown users)."""
        with self._lock:
            rows = self._db.execute("SELECT pair FROM user_pairs WHERE user_id = ? ORDER BY rowid", (user_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def all(self) -> list[StoredUser]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM users ORDER BY rowid").fetchall()
        return [self._row(r) for r in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
