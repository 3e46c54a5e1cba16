"""In-process checks of the service: micro-batching, the bounded queue, and schema-driven fuzzing (no 5xx)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from palrm.serve.app import create_app  # noqa: E402
from palrm.serve.engine import Item, QueueFull  # noqa: E402
from tests.serving.helpers import make_engine  # noqa: E402

PROMPT = "Which pet?"


def test_concurrent_requests_share_one_forward(model_dir, tmp_path):
    engine = make_engine(model_dir, tmp_path)
    requests = [[Item(f"user{i % 8}", None, PROMPT, f"answer {i} {j}") for j in range(1 + i % 3)] for i in range(20)]

    async def run():
        await engine.start()
        try:
            return await asyncio.gather(*(engine.score(r) for r in requests))
        finally:
            await engine.stop()

    results = asyncio.run(run())
    assert engine.batches == 1 and engine.batched_items == sum(map(len, requests))  # 20 requests, one model call
    for items, got in zip(requests, results):
        expected = engine.model.reward_batch([it.prompt for it in items], [it.response for it in items],
                                             user_ids=[it.user_id for it in items])
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_bounded_queue_answers_503(model_dir, tmp_path):
    engine = make_engine(model_dir, tmp_path, queue_items=4, max_items=16)
    items = [Item("user0", None, PROMPT, f"x{i}") for i in range(5)]

    async def direct():
        await engine.start()
        try:
            with pytest.raises(QueueFull):
                await engine.score(items)
            return await engine.score(items[:4])
        finally:
            await engine.stop()

    assert len(asyncio.run(direct())) == 4
    engine = make_engine(model_dir, tmp_path, queue_items=4, max_items=16)
    with TestClient(create_app(engine)) as client:
        body = {"items": [{"user_id": "user0", "prompt": PROMPT, "response": f"x{i}"} for i in range(5)]}
        r = client.post("/v1/reward", json=body)
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "queue is full" in r.json()["detail"]
        body["items"] = body["items"][:4]
        assert client.post("/v1/reward", json=body).status_code == 200


def test_unbatched_mode_gives_the_same_rewards(model_dir, tmp_path):
    body = {"items": [{"user_id": f"user{i}", "prompt": PROMPT, "response": f"I love cats, answer {i}"} for i in range(8)]}
    out = []
    for batching in (True, False):
        with TestClient(create_app(make_engine(model_dir, tmp_path / str(batching), batching=batching))) as client:
            out.append(client.post("/v1/reward", json=body).json()["rewards"])
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)


# ---------------------------------------------------------------------------------------------- fuzzing
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=12)


def from_schema(schema: dict, defs: dict, name: str = "") -> st.SearchStrategy:
    """Values that (mostly) conform to a JSON schema of the server's OpenAPI document."""
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, name)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs, name) for s in schema["anyOf"]])
    kind = schema.get("type")
    if name == "user_id":
        return st.sampled_from(["user0", "user3", "ghost"]) | st.text(max_size=12)
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries({k: from_schema(v, defs, k) for k, v in props.items() if k in required},
                                     optional={k: from_schema(v, defs, k) for k, v in props.items() if k not in required})
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), defs, name), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 5), 5))
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: len(s) <= 64) | st.text(max_size=10)
        return st.text(max_size=min(schema.get("maxLength", 40), 40))
    if kind == "number":
        return st.floats(-1e6, 1e6) | st.sampled_from([0.0, 1.0, -1.0, 1e308])
    if kind == "integer":
        return st.integers(-10, 10**6)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JSON


@pytest.fixture(scope="module")
def fuzz_client(model_dir, tmp_path_factory):
    engine = make_engine(model_dir, tmp_path_factory.mktemp("fuzz"), max_items=8, max_pairs=4, max_body_bytes=8192)
    engine.model.config_.adapt.steps = 20  # keep adapts quick; the contract, not the fit, is under test
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        yield client


def _operations(client):
    schema = client.get("/openapi.json").json()
    defs = schema.get("components", {}).get("schemas", {})
    ops = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            ops.append((path, method, from_schema(body, defs) if body else st.none()))
    return ops


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.filter_too_much])
@given(data=st.data())
def test_fuzz_openapi_no_5xx(fuzz_client, data):
    path, method, body_strategy = data.draw(st.sampled_from(_operations(fuzz_client)))
    path = path.replace("{user_id}", data.draw(st.sampled_from(["user0", "newcomer", "ghost"]) |
                                                st.from_regex(r"[A-Za-z0-9_.~%-]{1,20}", fullmatch=True)))
    how = data.draw(st.sampled_from(["schema", "schema", "schema", "json", "bytes"]))
    if how == "schema":
        content = json.dumps(data.draw(body_strategy)).encode()
    elif how == "json":
        content = json.dumps(data.draw(JSON)).encode()
    else:
        content = data.draw(st.binary(max_size=64))
    r = fuzz_client.request(method.upper(), path, content=content, headers={"content-type": "application/json"})
    assert r.status_code < 500, (method, path, content[:300], r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert isinstance(r.json()["detail"], str)


# ---------------------------------------------------------------------------------------------- defects 7 and 8
DOG_PAIRS = [{"prompt": PROMPT, "chosen": f"Dogs are the best, reply {i}", "rejected": f"I love cats, answer {i}"}
             for i in range(6)]


def test_population_weights_are_not_resolved_on_the_event_loop(model_dir, tmp_path, monkeypatch):
    engine = make_engine(model_dir, tmp_path)

    def touched(*a, **k):
        raise AssertionError("the user table was read on the event loop")

    monkeypatch.setattr(engine.model, "population_weights", touched)
    monkeypatch.setattr(engine.state, "population_weights", touched)
    assert engine.resolve(None, "population") == (None, "population")
    monkeypatch.undo()
    got = engine.score_sync([Item(None, "population", PROMPT, "Dogs are the best, reply 1")])
    assert np.isfinite(got).all()
    engine.store.close()


def test_failed_store_write_leaves_no_user_row_behind(model_dir, tmp_path, monkeypatch):
    engine = make_engine(model_dir, tmp_path)
    state = engine.state
    n_users, n_rows = len(state.users), state.net.num_users
    trained = state.user_logits("user0")

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(engine.store, "put", broken)
    with pytest.raises(OSError):
        engine.adapt_sync("newcomer", DOG_PAIRS)
    assert "newcomer" not in state.user_index and len(state.users) == n_users and state.net.num_users == n_rows
    with pytest.raises(OSError):
        engine.adapt_sync("user0", DOG_PAIRS)
    assert torch.equal(state.user_logits("user0"), trained)
    monkeypatch.undo()
    out = engine.adapt_sync("newcomer", DOG_PAIRS)  # the table still works after the rollback
    assert out["version"] == 1 and state.net.num_users == n_rows + 1
    engine.store.close()


def test_start_up_grows_the_user_table_once(model_dir, tmp_path, monkeypatch):
    from palrm.models.base import RewardNet

    engine = make_engine(model_dir, tmp_path)
    for i in range(6):
        engine.adapt_sync(f"stored{i}", DOG_PAIRS[: 2 + i % 3])
    engine.store.close()
    calls = []
    orig = RewardNet.grow_users

    def counting(self, n_new, init=None):
        calls.append(n_new)
        return orig(self, n_new, init)

    monkeypatch.setattr(RewardNet, "grow_users", counting)
    again = make_engine(model_dir, tmp_path)
    assert calls == [6]
    assert [u for u in again.state.users[-6:]] == [f"stored{i}" for i in range(6)]
    again.store.close()


@pytest.mark.parametrize("user", ["fresh-user", "user1"])
def test_adapting_a_known_user_refits_on_all_their_pairs(model_dir, tmp_path, user):
    """Two adapts (first 3 pairs, then 3 more) end where one adapt on all 6 does: the store keeps the pairs."""
    a = make_engine(model_dir, tmp_path / "a")
    a.adapt_sync(user, DOG_PAIRS[:3])
    out = a.adapt_sync(user, DOG_PAIRS[3:])
    assert out["n_pairs"] == 6 and a.store.get(user).n_pairs == 6 and len(a.store.pairs(user)) == 6
    b = make_engine(model_dir, tmp_path / "b")
    once = b.adapt_sync(user, DOG_PAIRS)
    np.testing.assert_allclose(out["weights"], once["weights"], rtol=1e-5, atol=1e-6)
    a.store.close()
    b.store.close()

def test_aggregate_items_and_get_reward_default_give_the_library_rewards(model_dir, tmp_path):
    """/v1/reward items with "aggregate" instead of a user, mixed with users in one request, and
    /get_reward through --default-aggregate: the same rewards as model.reward(None, ..., aggregate=...)."""
    engine = make_engine(model_dir, tmp_path, default_aggregate="alpha:1")
    responses = ["I love cats, answer 3", "Dogs are the best, reply 4", "cats and dogs"]
    with TestClient(create_app(engine)) as client:
        items = [{"aggregate": spec, "prompt": PROMPT, "response": r} for spec in ("maxmin", "quantile:0.1@users") for r in responses]
        items.append({"user_id": "user0", "prompt": PROMPT, "response": responses[0]})
        got = client.post("/v1/reward", json={"items": items})
        assert got.status_code == 200, got.text
        r = got.json()["rewards"]
        model = engine.model
        np.testing.assert_allclose(r[:3], model.reward(None, PROMPT, responses, aggregate="maxmin"), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(r[3:6], model.reward(None, PROMPT, responses, aggregate="quantile:0.1@users"), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(r[6], model.reward("user0", PROMPT, responses[:1])[0], rtol=1e-5, atol=1e-5)
        q = client.post("/get_reward", json={"query": [PROMPT + " " + x for x in responses], "prompts": [PROMPT] * 3})
        assert q.status_code == 200, q.text
        np.testing.assert_allclose(q.json()["rewards"], model.reward(None, PROMPT, [" " + x for x in responses], aggregate="alpha:1"),
                                   rtol=1e-5, atol=1e-5)
        for bad, what in (({"aggregate": "softmin:0", "response": "x"}, "valid forms"),
                          ({"aggregate": "maxmin", "user_id": "user0", "response": "x"}, "not more")):
            resp = client.post("/v1/reward", json={"items": [bad]})
            assert resp.status_code == 422 and what in resp.json()["detail"], resp.text


def test_a_polled_row_older_than_the_served_one_is_not_applied(model_dir, tmp_path):
    """Replica polls read rows off the model thread: a row read before this replica's own adapt committed is
    stale by the time it is applied, and must not replace the newer weights."""
    import dataclasses

    engine = make_engine(model_dir, tmp_path)
    engine.adapt_sync("fresh-user", DOG_PAIRS[:3])
    first = engine.store.get("fresh-user")  # version 1, as a poll would have read it
    engine.adapt_sync("fresh-user", DOG_PAIRS[3:])
    served = engine.state.user_logits("fresh-user").clone()
    assert engine.store.get("fresh-user").version == 2
    assert engine.apply_changes_sync([first]) == 0  # stale: version 1 < 2
    assert engine.apply_changes_sync([engine.store.get("fresh-user")]) == 0  # the row served here already
    torch.testing.assert_close(engine.state.user_logits("fresh-user"), served)
    newer = dataclasses.replace(first, version=3, logits=[float(x) + 1.0 for x in first.logits])
    assert engine.apply_changes_sync([newer]) == 1  # another replica's later adapt is applied
    torch.testing.assert_close(engine.state.user_logits("fresh-user"), torch.tensor(newer.logits))
    engine.store.close()
