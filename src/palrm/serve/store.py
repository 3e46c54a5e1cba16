"""Durable user store of the reward service: SQLite in WAL mode, one row per user.

An adapt is acknowledged only after its row is committed (`synchronous=FULL`), so a killed server
(even SIGKILL) never loses an acknowledged user. Each write replaces the user's whole row in one
transaction (last write wins, no torn rows) and bumps its `version`. The pairs a user was adapted
on are kept (table `user_pairs`, appended in the same transaction), so a later adapt of the same
user re-fits on all of them ("add data"). The store also records which
model it belongs to (a fingerprint of the model files) and refuses to be applied to another model.

`SQLUserStore` holds all of that once, in SQL both databases speak; a store gives its dialect
(placeholders, table names, the user upsert, its write transaction and its connection).
`UserStore` is the SQLite store; `palrm.serve.postgres.PostgresUserStore` the PostgreSQL one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from palrm.errors import ModelFileError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: user_pairs (schema-1 stores are upgraded in place; their users have no stored pairs)

__all__ = ["SQLUserStore", "StoredUser", "UserStore", "model_fingerprint", "default_store_path"]

COLUMNS = "user_id, logits, weights, n_pairs, version, updated_at, posterior"  # of a users row, in StoredUser order


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


class SQLUserStore:
    """A user store in a SQL database: one connection behind a lock (thread-safe).

    A subclass opens the connection (and creates the tables) and gives its dialect: `PARAM`
    (the placeholder), the table names `USERS` / `PAIRS` / `META`, `PAIR_ORDER` (the column that
    orders a user's pairs by arrival), `WRITE_ORDER` (the column that orders users by last write),
    `UPSERT_USER` (insert or replace a users row from the values of `COLUMNS`), `ANOTHER_MODEL_FIX`
    (how to fix a fingerprint mismatch) and `transaction()` (one write transaction, lock held).
    """

    shared: bool
    PARAM: str
    USERS: str
    PAIRS: str
    META: str
    PAIR_ORDER: str
    WRITE_ORDER: str
    UPSERT_USER: str
    ANOTHER_MODEL_FIX: str
    path: object  # what messages show: the file, or the URL without its password

    def __init__(self, db) -> None:
        self._db = db
        self._lock = threading.Lock()

    def _sql(self, text: str) -> str:
        """`text` in this dialect: {p} -> the placeholder, {users} / {pairs} / {meta} -> the table names."""
        return text.format(p=self.PARAM, users=self.USERS, pairs=self.PAIRS, meta=self.META)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, the store's lock held: committed when the block ends, rolled back on error."""
        raise NotImplementedError

    def _check_meta(self, fingerprint: str, k: int) -> None:
        with self._lock:
            rows = dict(self._db.execute(self._sql("SELECT key, value FROM {meta}")).fetchall())
        if not rows:
            self._set_meta([("schema_version", str(SCHEMA_VERSION)), ("model_fingerprint", fingerprint), ("k", str(k))])
            return
        if rows.get("model_fingerprint") != fingerprint or rows.get("k") != str(k):
            raise ModelFileError(f"user store {self.path} belongs to another model (its fingerprint differs from this "
                                 f"model's files); {self.ANOTHER_MODEL_FIX}")
        if int(rows.get("schema_version", "0")) > SCHEMA_VERSION:
            raise ModelFileError(f"user store {self.path} was written by a newer palrm; upgrade palrm")
        if int(rows.get("schema_version", "0")) < SCHEMA_VERSION:
            self._set_meta([("schema_version", str(SCHEMA_VERSION))])

    def _set_meta(self, items: list[tuple[str, str]]) -> None:
        with self.transaction():
            self._db.cursor().executemany(
                self._sql("INSERT INTO {meta} (key, value) VALUES ({p}, {p}) ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
                items)

    def put(self, user_id: str, logits: list[float], weights: list[float], new_pairs: list[dict],
            posterior: dict | None = None) -> int:
        """Write the user's row (replacing it; with its weight posterior when given), append `new_pairs` to
        their pairs, and commit; returns the new version. `n_pairs` counts every pair the user was adapted on."""
        with self.transaction():
            row = self._db.execute(self._sql("SELECT version, n_pairs FROM {users} WHERE user_id = {p}"), (user_id,)).fetchone()
            version = (row[0] if row else 0) + 1
            total = (row[1] if row else 0) + len(new_pairs)
            self._db.execute(self.UPSERT_USER,
                             (user_id, json.dumps([float(x) for x in logits]), json.dumps([float(x) for x in weights]),
                              total, version, time.time(), None if posterior is None else json.dumps(posterior)))
            if new_pairs:
                self._db.cursor().executemany(self._sql("INSERT INTO {pairs} (user_id, pair) VALUES ({p}, {p})"),
                                              [(user_id, json.dumps(p, sort_keys=True)) for p in new_pairs])
        return version

    @staticmethod
    def _row(row) -> StoredUser:
        """A StoredUser from a row of `COLUMNS`."""
        return StoredUser(row[0], json.loads(row[1]), json.loads(row[2]), int(row[3]), int(row[4]), float(row[5]),
                          json.loads(row[6]) if row[6] else None)

    def get(self, user_id: str) -> StoredUser | None:
        with self._lock:
            row = self._db.execute(self._sql(f"SELECT {COLUMNS} FROM {{users}} WHERE user_id = {{p}}"), (user_id,)).fetchone()
        return self._row(row) if row else None

    def pairs(self, user_id: str) -> list[dict]:
        """The pairs `user_id` was adapted on, in the order they were committed (empty for unknown users)."""
        with self._lock:
            rows = self._db.execute(self._sql(f"SELECT pair FROM {{pairs}} WHERE user_id = {{p}} ORDER BY {self.PAIR_ORDER}"),
                                    (user_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def all(self) -> list[StoredUser]:
        """Every user, in the order of their last write."""
        with self._lock:
            rows = self._db.execute(self._sql(f"SELECT {COLUMNS} FROM {{users}} ORDER BY {self.WRITE_ORDER}")).fetchall()
        return [self._row(r) for r in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute(self._sql("SELECT COUNT(*) FROM {users}")).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class UserStore(SQLUserStore):
    """SQLite (WAL) table of users added or updated while serving. Thread-safe (one connection + lock)."""

    shared = False  # one process per store: nothing to poll (the PostgreSQL store is shared)
    PARAM = "?"
    USERS, PAIRS, META = "users", "user_pairs", "meta"
    PAIR_ORDER = "rowid"
    WRITE_ORDER = "rowid"  # INSERT OR REPLACE gives the replaced row a new rowid
    UPSERT_USER = f"INSERT OR REPLACE INTO users ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    ANOTHER_MODEL_FIX = "pass --store NEW_PATH for this model, or serve the model it was made for"

    def __init__(self, path: str | Path, *, fingerprint: str, k: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            super().__init__(sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30))
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

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
