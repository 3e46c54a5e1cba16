"""The PostgreSQL user store against a real server (a private cluster started by the fixture)."""

from __future__ import annotations

import threading

import pytest

from palrm.errors import ModelFileError
from palrm.serve.postgres import PostgresUserStore, is_postgres_url, redact_url
from tests.serving.helpers import free_port


def test_url_detection_and_redaction():
    assert is_postgres_url("postgresql://u@h/db") and is_postgres_url(" postgres://h/db")
    assert not is_postgres_url("runs/model.users.sqlite") and not is_postgres_url(None)
    assert redact_url("postgresql://bob:s3cret@db.example:5433/x?sslmode=require") == \
        "postgresql://bob:***@db.example:5433/x?sslmode=require"
    assert redact_url("postgresql://bob@db/x") == "postgresql://bob@db/x"


def test_unreachable_url_fails_at_open_with_one_line():
    url = f"postgresql://palrm:hunter22@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(ModelFileError) as err:
        PostgresUserStore(url, fingerprint="f", k=2, connect_timeout=2)
    msg = str(err.value)
    assert "\n" not in msg and "cannot be reached" in msg and "127.0.0.1" in msg
    assert "hunter22" not in msg


def test_put_get_versions_and_pair_counts(pg_url):
    store = PostgresUserStore(pg_url, fingerprint="fp", k=2)
    assert store.get("alice") is None and len(store) == 0
    first = [{"prompt": "p", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(5)]
    second = [{"prompt": "", "chosen": "yes", "rejected": "no"}] * 3
    assert store.put("alice", [0.5, -0.5], [0.73, 0.27], first) == 1
    assert store.put("alice", [1.0, -1.0], [0.88, 0.12], second) == 2
    got = store.get("alice")
    assert got.logits == [1.0, -1.0] and got.weights == [0.88, 0.12] and got.n_pairs == 8 and got.version == 2
    assert store.pairs("alice") == first + second and store.pairs("nobody") == []
    store.put("bob", [0.0, 0.0], [0.5, 0.5], second[:1])
    assert [u.user_id for u in store.all()] == ["alice", "bob"] and len(store) == 2
    store.close()
    again = PostgresUserStore(pg_url, fingerprint="fp", k=2)  # durable across connections
    assert again.get("alice").version == 2
    again.close()


def test_fingerprint_guard(pg_url):
    PostgresUserStore(pg_url, fingerprint="model-a", k=2).close()
    with pytest.raises(ModelFileError, match="belongs to another model"):
        PostgresUserStore(pg_url, fingerprint="model-b", k=2)
    with pytest.raises(ModelFileError, match="belongs to another model"):
        PostgresUserStore(pg_url, fingerprint="model-a", k=3)


def test_changes_since_sees_other_writers_in_commit_order(pg_url):
    reader = PostgresUserStore(pg_url, fingerprint="fp", k=2)
    writers = [PostgresUserStore(pg_url, fingerprint="fp", k=2) for _ in range(3)]
    rows, seq = reader.changes_since(0)
    assert rows == [] and seq == 0
    seen: dict[str, int] = {}
    stop = threading.Event()

    def poll():
        nonlocal seq
        while not stop.is_set():
            rows, new = reader.changes_since(seq)
            assert new >= seq
            for r in rows:
                assert r.version > seen.get(r.user_id, 0)  # never an older write after a newer one
                seen[r.user_id] = r.version
            seq = new

    def write(store, w):
        for i in range(30):
            store.put(f"user{i % 5}", [float(w), float(i)], [0.5, 0.5], [{"prompt": "", "chosen": "a", "rejected": "b"}])

    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=write, args=(s, w)) for w, s in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    poller.join()
    rows, seq = reader.changes_since(seq)
    for r in rows:
        seen[r.user_id] = r.version
    final = {u.user_id: u.version for u in reader.all()}
    assert final == seen and sum(final.values()) == 90 and len(reader.pairs("user0")) == 18  # every write counted once, the poller missed none
    for s in (reader, *writers):
        s.close()
