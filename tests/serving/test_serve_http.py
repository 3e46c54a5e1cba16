"""The real `palrm serve` in a subprocess on a loopback port, spoken to over HTTP."""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from palrm import PALRewardModel
from palrm.cli import main
from tests.serving.helpers import Server, adapt_storm_then_kill

PROMPT = "Which pet?"
CATS, DOGS = "I love cats, answer 3", "Dogs are the best, reply 4"
DOG_FAN_PAIRS = [{"prompt": PROMPT, "chosen": f"Dogs are the best, reply {i}", "rejected": f"I love cats, answer {i}"}
                 for i in range(6)]


def _digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    srv = Server(model_dir, "--store", str(logs / "users.sqlite"), "--max-items", "16", "--max-pairs", "50",
                 "--max-body-bytes", "65536", "--max-text-chars", "2000", "--log-level", "error", log=logs / "server.log")
    yield srv
    srv.stop()


def test_reward_compare_and_get_reward(server, model_dir):
    model = PALRewardModel.load(model_dir)
    r = server.client.post("/v1/reward", json={"items": [
        {"user_id": "user0", "prompt": PROMPT, "response": CATS},
        {"user_id": "user0", "prompt": PROMPT, "response": DOGS},
        {"weights": "population", "prompt": PROMPT, "response": CATS},
        {"weights": [0.25, 0.75], "response": DOGS}]})
    assert r.status_code == 200, r.text
    rewards = r.json()["rewards"]
    assert rewards[:2] == pytest.approx(model.reward("user0", PROMPT, [CATS, DOGS]), rel=1e-5, abs=1e-5)
    assert rewards[2] == pytest.approx(model.reward(None, PROMPT, [CATS], weights="population")[0], rel=1e-5, abs=1e-5)
    assert rewards[3] == pytest.approx(model.reward(None, "", [DOGS], weights=[0.25, 0.75])[0], rel=1e-5, abs=1e-5)

    c = server.client.post("/v1/compare", json={"items": [
        {"user_id": "user0", "prompt": PROMPT, "response_a": CATS, "response_b": DOGS},
        {"user_id": "user1", "prompt": PROMPT, "response_a": CATS, "response_b": DOGS}]})
    assert c.status_code == 200, c.text
    p = c.json()["probabilities"]
    assert p[0] == pytest.approx(1 / (1 + math.exp(-(rewards[0] - rewards[1]))), rel=1e-5)
    assert (p[0] > 0.5) != (p[1] > 0.5)  # the two groups disagree

    # OpenRLHF: query = prompt + response, user id in labels
    g = server.client.post("/get_reward", json={"query": [PROMPT + " " + CATS, PROMPT + " " + DOGS],
                                                "prompts": [PROMPT, PROMPT], "labels": ["user0", "user0"]})
    assert g.status_code == 200, g.text
    body = g.json()
    assert body["rewards"] == body["scores"] and len(body["rewards"]) == 2
    assert body["rewards"] == pytest.approx(model.reward("user0", PROMPT, [" " + CATS, " " + DOGS]), rel=1e-5, abs=1e-5)


def test_adapt_onboards_a_user_usable_by_the_next_request(server, model_dir):
    before = _digest(model_dir)
    missing = server.client.post("/v1/reward", json={"items": [{"user_id": "newbie", "prompt": PROMPT, "response": CATS}]})
    assert missing.status_code == 404 and "/v1/users/newbie/adapt" in missing.json()["detail"]
    assert server.client.get("/v1/users/newbie").status_code == 404
    a = server.client.post("/v1/users/newbie/adapt", json={"pairs": DOG_FAN_PAIRS})
    assert a.status_code == 200, a.text
    out = a.json()
    assert out["user_id"] == "newbie" and len(out["weights"]) == 2 and sum(out["weights"]) == pytest.approx(1.0, abs=1e-5)
    assert out["version"] == 1 and out["n_pairs"] == len(DOG_FAN_PAIRS)
    c = server.client.post("/v1/compare", json={"items": [{"user_id": "newbie", "prompt": PROMPT, "response_a": DOGS, "response_b": CATS}]})
    assert c.status_code == 200 and c.json()["probabilities"][0] > 0.5  # learned: prefers dogs
    u = server.client.get("/v1/users/newbie").json()
    assert u["weights"] == out["weights"] and u["source"] == "store" and u["version"] == 1
    known = server.client.get("/v1/users/user0").json()
    assert known["source"] == "model" and known["version"] == 0
    g = server.client.post("/get_reward", json={"query": [DOGS], "labels": ["newbie"]})
    assert g.status_code == 200
    assert _digest(model_dir) == before and sorted(p.name for p in model_dir.iterdir()) == list(before)


def test_concurrent_adapts_of_one_user_are_serialised(server):
    def adapt(i):
        pairs = DOG_FAN_PAIRS[: 1 + i % 6] if i % 2 else [{"prompt": PROMPT, "chosen": CATS, "rejected": DOGS}]
        return server.client.post("/v1/users/contested/adapt", json={"pairs": pairs}).json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(adapt, range(12)))
    versions = sorted(r["version"] for r in results)
    assert versions == list(range(1, 13))  # every write got its own version: no two interleaved
    last = max(results, key=lambda r: r["version"])
    assert server.client.get("/v1/users/contested").json()["weights"] == last["weights"]  # last write wins


def test_health_and_openapi(server):
    h = server.client.get("/healthz").json()
    assert h["status"] == "ok" and h["k"] == 2 and h["auth"] is False and h["batching"] is True
    schema = server.client.get("/openapi.json").json()
    for path in ("/v1/reward", "/v1/compare", "/v1/users/{user_id}/adapt", "/v1/users/{user_id}", "/get_reward", "/healthz"):
        assert path in schema["paths"]
    assert server.client.get("/docs").status_code == 200


BAD_REQUESTS = [
    ("post", "/v1/reward", b"{not json", 422, "JSON"),
    ("post", "/v1/reward", b"[1, 2]", 422, "object"),
    ("post", "/v1/reward", {"items": []}, 422, "items"),
    ("post", "/v1/reward", {"items": [{"user_id": "user0"}]}, 422, "response"),
    ("post", "/v1/reward", {"items": [{"user_id": "user0", "response": 5}]}, 422, "response"),
    ("post", "/v1/reward", {"items": [{"user_id": "user0", "response": "x", "colour": "red"}]}, 422, "colour"),
    ("post", "/v1/reward", {"items": [{"user_id": "user0", "weights": [0.5, 0.5], "response": "x"}]}, 422, "not both"),
    ("post", "/v1/reward", {"items": [{"response": "x"}]}, 422, "whose reward"),
    ("post", "/v1/reward", {"items": [{"weights": [1, 2, 3], "response": "x"}]}, 422, "K=2"),
    ("post", "/v1/reward", {"items": [{"weights": [-1, 2], "response": "x"}]}, 422, "non-negative"),
    ("post", "/v1/reward", {"items": [{"weights": [0, 0], "response": "x"}]}, 422, "positive sum"),
    ("post", "/v1/reward", {"items": [{"weights": "group:7", "response": "x"}]}, 422, "group"),
    ("post", "/v1/reward", {"items": [{"weights": "everyone", "response": "x"}]}, 422, "weights"),
    ("post", "/v1/reward", b'{"items": [{"weights": [NaN, 1], "response": "x"}]}', 422, "finite"),
    ("post", "/v1/reward", {"items": [{"user_id": "", "response": "x"}]}, 422, "user_id"),
    ("post", "/v1/reward", {"items": [{"user_id": "ghost", "response": "x"}]}, 404, "adapt"),
    ("post", "/v1/reward", {"items": [{"user_id": "user0", "response": "x"}] * 17}, 413, "--max-items"),
    ("post", "/v1/reward", {"items": [{"user_id": "user0", "response": "x" * 2001}]}, 413, "--max-text-chars"),
    ("post", "/v1/reward", {"items": [{"user_id": "user0", "response": "x" * 70000}]}, 413, "--max-body-bytes"),
    ("post", "/v1/reward", b'{"items": [{"user_id": "user0", "response": "\\ud800"}]}', 422, "string"),
    ("post", "/v1/compare", {"items": [{"user_id": "user0", "response_a": "x"}]}, 422, "response_b"),
    ("post", "/v1/compare", {"items": [{"user_id": "ghost", "response_a": "x", "response_b": "y"}]}, 404, "adapt"),
    ("post", "/v1/users/u9/adapt", {"pairs": []}, 422, "pairs"),
    ("post", "/v1/users/u9/adapt", {"pairs": [{"chosen": "a", "rejected": "a"}]}, 422, "identical"),
    ("post", "/v1/users/u9/adapt", {"pairs": [{"chosen": "a"}]}, 422, "rejected"),
    ("post", "/v1/users/u9/adapt", {"pairs": [{"chosen": "a", "rejected": "b"}] * 51}, 413, "--max-pairs"),
    ("post", "/v1/users/u9/adapt", {"prompt": "x"}, 422, "pairs"),
    ("get", "/v1/users/ghost", None, 404, "adapt"),
    ("post", "/get_reward", {"query": ["a", "b"], "prompts": ["a"]}, 422, "prompts"),
    ("post", "/get_reward", {"query": ["a"], "labels": ["user0", "user1"]}, 422, "labels"),
    ("post", "/get_reward", {"query": ["a"]}, 422, "labels"),
    ("post", "/get_reward", {"query": ["a"], "labels": ["ghost"]}, 404, "adapt"),
    ("post", "/get_reward", {"queries": ["a"]}, 422, "query"),
    ("get", "/v1/reward", None, 405, ""),
    ("get", "/no/such/path", None, 404, ""),
]


@pytest.mark.parametrize("method,path,body,status,needle", BAD_REQUESTS, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_a_4xx_with_a_message(server, method, path, body, status, needle):
    if isinstance(body, bytes):
        r = server.client.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        r = server.client.request(method, path, json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and needle in detail and "Traceback" not in detail


def test_auth_on(model_dir, tmp_path):
    token = "s3cret-token-0123456789abcdef"
    (tmp_path / "token.txt").write_text(token + "\n")
    (tmp_path / "token.txt").chmod(0o600)
    srv = Server(model_dir, "--token-file", str(tmp_path / "token.txt"), "--store", str(tmp_path / "u.sqlite"),
                 token=token, log=tmp_path / "log")
    try:
        item = {"items": [{"user_id": "user0", "prompt": PROMPT, "response": CATS}]}
        anon = httpx.Client(base_url=srv.url, timeout=30)
        for method, path, body in (("post", "/v1/reward", item), ("post", "/get_reward", {"query": ["x"], "labels": ["user0"]}),
                                   ("get", "/v1/users/user0", None), ("post", "/v1/users/x/adapt", {"pairs": DOG_FAN_PAIRS})):
            r = anon.request(method, path, json=body)
            assert r.status_code == 401 and "Bearer" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
            wrong = anon.request(method, path, json=body, headers={"Authorization": "Bearer " + token[:-1] + "X"})
            assert wrong.status_code == 401
        assert anon.get("/healthz").status_code == 200 and anon.get("/healthz").json()["auth"] is True
        assert srv.client.post("/v1/reward", json=item).status_code == 200
        assert srv.client.get("/v1/users/user0").status_code == 200
        anon.close()
    finally:
        srv.stop()


def test_refuses_exposed_bind_without_token(model_dir, tmp_path, capsys):
    assert main(["serve", str(model_dir), "--host", "0.0.0.0"]) == 2
    assert "--token-file" in capsys.readouterr().err
    assert main(["serve", str(model_dir), "--host", "192.168.1.1"]) == 2
    (tmp_path / "short.txt").write_text("abc")
    assert main(["serve", str(model_dir), "--token-file", str(tmp_path / "short.txt")]) == 2
    assert "at least 16" in capsys.readouterr().err
    assert main(["serve", str(model_dir), "--store", str(model_dir / "users.sqlite")]) == 2  # never inside the model dir
    assert not (model_dir / "users.sqlite").exists()


@pytest.mark.slow
def test_acknowledged_adapts_survive_sigkill(model_dir, tmp_path):
    before = _digest(model_dir)
    store = tmp_path / "users.sqlite"
    srv = Server(model_dir, "--store", str(store), log=tmp_path / "log1")
    acked, shared = adapt_storm_then_kill(srv, DOG_FAN_PAIRS, workers=8, min_acked=40, shared_user="shared")
    assert len(acked) >= 40 and shared

    srv = Server(model_dir, "--store", str(store), log=tmp_path / "log2")
    try:
        for user, out in acked.items():
            got = srv.client.get(f"/v1/users/{user}")
            assert got.status_code == 200, f"acknowledged user {user} was lost"
            assert got.json()["weights"] == pytest.approx(out["weights"], abs=1e-7)
            assert got.json()["version"] == out["version"]
        # the shared user: its row is the last committed write, never older than the last acknowledgement
        last = max(shared, key=lambda r: r["version"])
        got = srv.client.get("/v1/users/shared").json()
        assert got["version"] >= last["version"]
        if got["version"] == last["version"]:
            assert got["weights"] == pytest.approx(last["weights"], abs=1e-7)
    finally:
        srv.stop()
    assert _digest(model_dir) == before
