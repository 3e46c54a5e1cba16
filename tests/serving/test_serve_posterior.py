"""The service's uncertainty features: rewards with "std" / "risk", next-query, posteriors in the store."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from palrm.serve.app import create_app  # noqa: E402
from tests.serving.helpers import make_engine  # noqa: E402

PROMPT = "Which pet?"
POOL = [{"prompt": PROMPT, "response_a": f"I love cats, answer {i}", "response_b": f"Dogs are the best, reply {i}"} for i in range(5)] + \
       [{"prompt": PROMPT, "response_a": f"I love cats, answer {i}", "response_b": f"I love cats, answer {i + 1}"} for i in range(5)]


def _client(model_dir, tmp_path, **kw):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"prompt": p["prompt"], "chosen": p["response_a"], "rejected": p["response_b"]}) + "\n"
                            for p in POOL))
    engine = make_engine(model_dir, tmp_path, query_pools={"onboarding": str(pool)}, **kw)
    return TestClient(create_app(engine)), engine


def test_reward_items_may_ask_for_std_and_risk(model_dir, tmp_path):
    client, engine = _client(model_dir, tmp_path)
    with client:
        items = [{"user_id": "user0", "prompt": PROMPT, "response": "I love cats, answer 1", "std": True},
                 {"weights": "population", "prompt": PROMPT, "response": "I love cats, answer 1"}]
        r = client.post("/v1/reward", json={"items": items})
        assert r.status_code == 200, r.text
        body = r.json()
        mean, std = engine.model.reward("user0", PROMPT, ["I love cats, answer 1"], uncertainty=True)
        assert body["rewards"][0] == pytest.approx(mean[0], rel=1e-4, abs=1e-4)
        assert body["stds"][0] == pytest.approx(std[0], rel=1e-3, abs=1e-4) and body["stds"][1] == 0.0
        items[0]["risk"] = "quantile:0.1"
        q = client.post("/v1/reward", json={"items": items}).json()["rewards"][0]
        assert q <= body["rewards"][0] + 1e-6
        plain = client.post("/v1/reward", json={"items": [{"user_id": "user0", "prompt": PROMPT, "response": "x"}]}).json()
        assert "stds" not in plain or plain["stds"] is None
        bad = client.post("/v1/reward", json={"items": [{**items[0], "risk": "worst"}]})
        assert bad.status_code == 422 and "risk" in bad.json()["detail"]


def test_next_query_inline_pool_and_pool_id(model_dir, tmp_path):
    client, _ = _client(model_dir, tmp_path)
    with client:
        r = client.post("/v1/users/newbie/next-query", json={"pool": POOL, "n": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["known"] is False and len(body["queries"]) == 2
        assert body["queries"][0]["information_gain"] >= body["queries"][1]["information_gain"] > 0
        assert all("Dogs" in q["response_b"] for q in body["queries"])  # cats vs dogs splits the groups
        by_id = client.post("/v1/users/newbie/next-query", json={"pool_id": "onboarding", "n": 2}).json()
        assert [q["index"] for q in by_id["queries"]] == [q["index"] for q in body["queries"]]
        known = client.post("/v1/users/user0/next-query", json={"pool": POOL}).json()
        assert known["known"] is True and "uncertainty" in known
        missing = client.post("/v1/users/x/next-query", json={"pool_id": "nope"})
        assert missing.status_code == 404 and "pool 'nope' not found" in missing.json()["detail"]
        empty = client.post("/v1/users/x/next-query", json={"pool": []})
        assert empty.status_code == 422 and "the pool is empty" in empty.json()["detail"]
        both = client.post("/v1/users/x/next-query", json={"pool": POOL, "pool_id": "onboarding"})
        assert both.status_code == 422 and "exactly one" in both.json()["detail"]


def test_adapted_users_keep_their_posterior_across_restarts(model_dir, tmp_path):
    pairs = [{"prompt": PROMPT, "chosen": f"Dogs are the best, reply {i}", "rejected": f"I love cats, answer {i}"} for i in range(3)]
    client, _ = _client(model_dir, tmp_path)
    with client:
        out = client.post("/v1/users/carol/adapt", json={"pairs": pairs}).json()
        assert out["uncertainty"] > 0 and len(out["weights_std"]) == len(out["weights"])
        before = client.post("/v1/reward", json={"items": [{"user_id": "carol", "prompt": PROMPT, "response": "x", "std": True}]}).json()
    client, engine = _client(model_dir, tmp_path)  # a new server on the same store
    with client:
        after = client.post("/v1/reward", json={"items": [{"user_id": "carol", "prompt": PROMPT, "response": "x", "std": True}]}).json()
        user = client.get("/v1/users/carol").json()
    np.testing.assert_allclose(after["stds"], before["stds"], rtol=1e-6)
    assert user["uncertainty"] == pytest.approx(out["uncertainty"])
