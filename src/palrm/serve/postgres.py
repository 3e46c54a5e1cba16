"""PostgreSQL user store of the reward service: many `palrm serve` replicas, one store.

Same semantics as the SQLite `UserStore`, from the same `SQLUserStore` (one row per user, replaced in one
transaction, `version` counting the user's adapts, the user's pairs appended in the same transaction so a
later adapt re-fits on all of them, a fingerprint guard); this module gives the PostgreSQL dialect and
connection, plus what many replicas need:

* **Durable acknowledged adapts.** `put` returns only after `COMMIT` with `synchronous_commit=on`,
  so an adapt acknowledged by any replica survives a SIGKILL of that replica (and of the server).
* **Cross-replica visibility by polling a change sequence.** Every write takes the next value of a
  global sequence (`seq` column). Writers hold one transaction-scoped advisory lock from `nextval`
  to `COMMIT`, so sequence numbers become visible in increasing order and a reader that has applied
  everything up to `seq = s` can never later miss a row with a smaller `seq`. A replica polls
  `SELECT ... WHERE seq > s ORDER BY seq` every `poll_interval` seconds (default 0.2 s) and applies
  the rows: a user adapted through one replica is visible to every replica within one poll (well
  under one second). Polling was chosen over LISTEN/NOTIFY because it needs no dedicated
  connection, survives reconnects without missed notifications, and costs one indexed query.
* **Fail at start-up.** An unreachable or refused URL raises `ModelFileError` with one line naming
  the URL (password hidden) when the store is opened, never at the first request.

The tables (`palrm_meta`, `palrm_users`) live in the URL's database and default schema; serve two
models from one database by giving each its own schema (`?options=-csearch_path%3Dmodel_a`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from palrm.errors import ModelFileError
from palrm.serve.store import COLUMNS, SQLUserStore, StoredUser

logger = logging.getLogger(__name__)

__all__ = ["PostgresUserStore", "is_postgres_url", "redact_url"]

URL_SCHEMES = ("postgresql://", "postgres://")
_LOCK_KEY = 0x7061_6C72  # "palr": the advisory lock that orders writers (held until COMMIT)


def is_postgres_url(spec: object) -> bool:
    """True for `postgresql://...` / `postgres://...` store specs (anything else is a SQLite path)."""
    return isinstance(spec, str) and spec.strip().lower().startswith(URL_SCHEMES)


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresUserStore(SQLUserStore):
    """The user table in PostgreSQL (psycopg 3). Thread-safe: one connection behind a lock.

    Args:
        url: `postgresql://user:password@host:port/dbname[?options]`.
        fingerprint: the served model's fingerprint (`model_fingerprint`); a store made for
            another model is refused.
        k: the model's number of prototypes.
        connect_timeout: seconds to wait for the server at start-up.
        poll_interval: seconds between two polls of `changes_since` by the engine.
    """

    shared = True  # other processes write here too: the engine polls `changes_since`
    PARAM = "%s"
    USERS, PAIRS, META = "palrm_users", "palrm_user_pairs", "palrm_meta"
    PAIR_ORDER = "id"
    WRITE_ORDER = "seq"
    UPSERT_USER = (
        f"INSERT INTO palrm_users ({COLUMNS}, seq) VALUES (%s, %s, %s, %s, %s, %s, %s, nextval('palrm_users_seq')) "
        "ON CONFLICT (user_id) DO UPDATE SET logits = EXCLUDED.logits, weights = EXCLUDED.weights, "
        "n_pairs = EXCLUDED.n_pairs, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, "
        "posterior = EXCLUDED.posterior, seq = EXCLUDED.seq")
    ANOTHER_MODEL_FIX = "use another database or schema for this model, or serve the model it was made for"

    def __init__(self, url: str, *, fingerprint: str, k: int, connect_timeout: float = 5.0,
                 poll_interval: float = 0.2) -> None:
        try:
            import psycopg
        except ImportError:
            raise ModelFileError("--store postgresql://... needs psycopg 3: pip install 'palrm[postgres]'") from None
        self.url = url
        self.path = redact_url(url)  # what messages show (the SQLite store shows its file path)
        self.poll_interval = float(poll_interval)
        try:
            super().__init__(psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(round(connect_timeout)))))
            self._db.execute("SET synchronous_commit = on")
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))  # one replica creates the tables
                self._db.execute("CREATE TABLE IF NOT EXISTS palrm_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._db.execute("CREATE SEQUENCE IF NOT EXISTS palrm_users_seq")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS palrm_users (user_id TEXT PRIMARY KEY, logits TEXT NOT NULL, "
                    "weights TEXT NOT NULL, n_pairs INTEGER NOT NULL, version INTEGER NOT NULL, "
                    "updated_at DOUBLE PRECISION NOT NULL, seq BIGINT NOT NULL)")
                self._db.execute("ALTER TABLE palrm_users ADD COLUMN IF NOT EXISTS posterior TEXT")  # issue 10
                self._db.execute("CREATE INDEX IF NOT EXISTS palrm_users_seq_idx ON palrm_users (seq)")
                self._db.execute("CREATE TABLE IF NOT EXISTS palrm_user_pairs (id BIGSERIAL PRIMARY KEY, "
                                 "user_id TEXT NOT NULL, pair TEXT NOT NULL)")
                self._db.execute("CREATE INDEX IF NOT EXISTS palrm_user_pairs_user_idx ON palrm_user_pairs (user_id, id)")
                self._check_meta(fingerprint, k)  # inside the lock: two replicas never both write a new store's meta
        except psycopg.Error as exc:
            raise ModelFileError(f"user store {self.path} cannot be reached or opened "
                                 f"({_first_line(exc)}); check the URL and that the server is up") from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))  # seq order = commit order
            yield

    def changes_since(self, seq: int) -> tuple[list[StoredUser], int]:
        """Rows written after change number `seq` (in write order) and the last change number seen."""
        with self._lock:
            rows = self._db.execute(f"SELECT {COLUMNS}, seq FROM palrm_users WHERE seq > %s ORDER BY seq", (seq,)).fetchall()
        return [self._row(r) for r in rows], (int(rows[-1][7]) if rows else seq)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()
