"""Issue 11 in the engine: encode less (distinct texts once, prompt LRU), token-capped batches,
normalised rewards, the ONNX backend, and fuzzing of the new request field."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from palrm import PALRewardModel  # noqa: E402
from palrm.errors import ConfigError  # noqa: E402
from palrm.serve.app import create_app  # noqa: E402
from palrm.serve.engine import Item  # noqa: E402
from tests.conftest import text_pairs_frame  # noqa: E402
from tests.serving.helpers import make_engine  # noqa: E402

PROMPT = "Which pet?"


def _run(engine, *rounds):
    """Score each round's requests concurrently, round after round, in one start / stop of the engine."""
    async def go():
        await engine.start()
        try:
            return [await asyncio.gather(*(engine.score(r) for r in requests)) for requests in rounds]
        finally:
            await engine.stop()

    out = asyncio.run(go())
    return out[0] if len(rounds) == 1 else out


def _count_encoder_calls(engine) -> list[list[str]]:
    calls: list[list[str]] = []
    encode = engine.embedder.encode

    def counting(texts):
        calls.append(list(texts))
        return encode(texts)

    engine.embedder.encode = counting
    return calls


def test_grpo_groups_encode_each_distinct_text_once_and_prompts_come_from_the_cache(model_dir, tmp_path):
    engine = make_engine(model_dir, tmp_path, prompt_cache_size=16)
    calls = _count_encoder_calls(engine)
    groups = [[Item(f"user{i}", None, f"Prompt {i % 2}", f"completion {i}-{g % 6}") for g in range(8)] for i in range(4)]
    again = [[Item("user0", None, "Prompt 0", "a new completion")], [Item("user1", None, "Prompt 1", "another")]]
    results, _ = _run(engine, groups, again)
    texts = {t for items in groups for it in items for t in (it.prompt, it.response)}
    assert engine.batches == 2 and sorted(calls[0]) == sorted(texts)  # one batch per round; duplicates encoded once
    model = PALRewardModel.load(model_dir)
    for items, got in zip(groups, results):
        expected = model.reward_batch([it.prompt for it in items], [it.response for it in items],
                                      user_ids=[it.user_id for it in items])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert sorted(calls[1]) == ["a new completion", "another"]  # prompts from the LRU, completions encoded
    cache = engine.health()["prompt_cache"]
    assert cache["size"] == 2 and cache["hits"] == 2 and cache["capacity"] == 16 and not cache["cache_completions"]


def test_batches_are_capped_by_tokens(model_dir, tmp_path):
    engine = make_engine(model_dir, tmp_path, max_batch_tokens=40)
    text = "x" * 37  # 2 + ceil(37 / 4) = 12 estimated tokens: three requests per 40-token batch
    requests = [[Item("user0", None, "", f"{text}{i}")] for i in range(9)] + [[Item("user0", None, "", "y" * 400)]]
    results = _run(engine, requests)
    assert engine.batches == 4 and all(len(r) == 1 for r in results)  # 3 x 3, and the oversized one alone


def _without_stats(model_dir, tmp_path):
    copy = tmp_path / "nostats"
    shutil.copytree(model_dir, copy)
    meta = json.loads((copy / "config.json").read_text())
    meta["reward_normalization"] = None
    (copy / "config.json").write_text(json.dumps(meta))
    return copy


def test_normalised_rewards_per_server_and_per_request(model_dir, tmp_path):
    model = PALRewardModel.load(model_dir)
    stats = model.reward_stats_
    assert stats.reference == "training responses" and stats.n == 2 * 8 * 20 and stats.std > 0  # 160 training pairs
    responses = ["I love cats, answer 3", "Dogs are the best, reply 4"]
    raw = model.reward("user0", PROMPT, responses)
    norm = model.reward("user0", PROMPT, responses, normalize=True)
    np.testing.assert_allclose(norm, (np.array(raw) - stats.mean) / stats.std, rtol=1e-5, atol=1e-5)
    body = {"items": [{"user_id": "user0", "prompt": PROMPT, "response": r} for r in responses]}
    with TestClient(create_app(make_engine(model_dir, tmp_path, normalize=True))) as client:
        np.testing.assert_allclose(client.post("/v1/reward", json=body).json()["rewards"], norm, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(client.post("/v1/reward", json={**body, "normalize": False}).json()["rewards"], raw,
                                   rtol=1e-5, atol=1e-5)
        g = client.post("/get_reward", json={"query": [PROMPT + r for r in responses], "prompts": [PROMPT] * 2,
                                             "labels": ["user0"] * 2}).json()
        np.testing.assert_allclose(g["rewards"], norm, rtol=1e-5, atol=1e-5)
        c = client.post("/v1/compare", json={"items": [{"user_id": "user0", "prompt": PROMPT, "response_a": responses[0],
                                                        "response_b": responses[1]}]}).json()["probabilities"][0]
        assert c == pytest.approx(1 / (1 + np.exp(-(raw[0] - raw[1]))), rel=1e-5)  # compare: raw rewards always
        assert client.get("/healthz").json()["normalize"] is True


def test_normalize_without_statistics_is_a_clear_error(model_dir, tmp_path):
    bare = _without_stats(model_dir, tmp_path)
    with pytest.raises(ConfigError, match="measure_reward_stats"):
        make_engine(bare, tmp_path, normalize=True)
    with pytest.raises(ConfigError, match="measure_reward_stats"):
        PALRewardModel.load(bare).reward("user0", PROMPT, ["a"], normalize=True)
    with TestClient(create_app(make_engine(bare, tmp_path / "raw"))) as client:
        r = client.post("/v1/reward", json={"items": [{"user_id": "user0", "response": "a"}], "normalize": True})
        assert r.status_code == 422 and "measure_reward_stats" in r.json()["detail"]
    model = PALRewardModel.load(bare)
    frame = text_pairs_frame(n_users=8, pairs_per_user=20)
    model.measure_reward_stats(frame.head(50), reference="first 50 pairs")
    assert model.reward_stats_.n == 100 and model.reward_stats_.reference == "first 50 pairs"
    model.save(tmp_path / "measured")
    assert PALRewardModel.load(tmp_path / "measured").reward_stats_ == model.reward_stats_


def test_encoder_backend_onnx_needs_a_sentence_transformers_model(model_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ConfigError, match="sentence-transformers"):
        make_engine(model_dir, tmp_path, encoder_backend="onnx")  # the tiny model uses the hashing encoder
    with pytest.raises(ConfigError, match="--encoder-backend"):
        make_engine(model_dir, tmp_path, encoder_backend="tensorrt")


@pytest.mark.slow
def test_onnx_backend_serves_the_torch_rewards(tmp_path):
    pytest.importorskip("onnxruntime")
    model = PALRewardModel(kind="pal-b", k=2, encoder="minilm", epochs=2, seed=0, progress=False)
    model.fit(text_pairs_frame(n_users=4, pairs_per_user=6)).save(tmp_path / "model")
    items = [Item("user0", None, PROMPT, f"I love cats, answer {i}") for i in range(3)] + [Item("user1", None, "", "Dogs!")]
    torch_r = _run(make_engine(tmp_path / "model", tmp_path / "t"), [items])[0]
    onnx_engine = make_engine(tmp_path / "model", tmp_path / "o", encoder_backend="onnx")
    np.testing.assert_allclose(_run(onnx_engine, [items])[0], torch_r, rtol=1e-4, atol=1e-4)
    int8 = _run(make_engine(tmp_path / "model", tmp_path / "q", encoder_backend="onnx-int8"), [items])[0]
    assert np.isfinite(int8).all() and np.abs(np.array(int8) - torch_r).max() < 0.05 * np.abs(torch_r).max()
    assert onnx_engine.health()["encoder_backend"] == "onnx"


@pytest.fixture(scope="module")
def fuzz_client(model_dir, tmp_path_factory):
    engine = make_engine(model_dir, tmp_path_factory.mktemp("fuzz"), max_items=8, max_batch_tokens=64)
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        yield client


JSONISH = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8) | st.lists(st.booleans(), max_size=2)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(normalize=JSONISH, n=st.integers(1, 10), user=st.sampled_from(["user0", "ghost"]))
def test_fuzz_normalize_field_never_5xx(fuzz_client, normalize, n, user):
    body = {"items": [{"user_id": user, "prompt": PROMPT, "response": f"answer {i}"} for i in range(n)], "normalize": normalize}
    r = fuzz_client.post("/v1/reward", json=body)
    assert r.status_code < 500, r.text
    if isinstance(normalize, bool) or normalize is None:
        ok = n <= 8 and user == "user0"
        assert (r.status_code == 200) == ok, r.text
    if r.status_code >= 400:
        assert isinstance(r.json()["detail"], str)
