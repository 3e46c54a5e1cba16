"""palrm.core: device-correct adapt (defect 1), encoder device (2), one embedding cache per model that
scoring never writes (3), format-version / encoder-identity checks on load (6), models built with an
encoder object (9), and the structure rules (no import cycle, nothing below the facade imports it)."""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import palrm
from palrm import PALRewardModel
from palrm.errors import ModelFileError
from tests.conftest import text_pairs_frame

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SRC = Path(palrm.__file__).resolve().parent


@pytest.fixture(scope="module")
def text_model():
    frame = text_pairs_frame(n_users=6, pairs_per_user=20, seed=0)
    return PALRewardModel(kind="pal-b", k=2, encoder="hashing:64", epochs=3, seed=0, progress=False).fit(frame)


# ---------------------------------------------------------------------------------------------- defect 1
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,link,n_users", [("pal-b", "euclidean", 1), ("pal-b", "euclidean", 3), ("pal-a", "cosine", 2)])
@pytest.mark.parametrize("prior", ["none", "gaussian", "mixture"])
def test_adapt_runs_on_the_model_device(synthetic_splits, device, kind, link, n_users, prior):
    """Single-user fast path (NumPy), batched affine path and autograd path, every prior, on each device."""
    splits, shots, test = synthetic_splits
    model = PALRewardModel(kind=kind, k=3, link=link, epochs=1, progress=False, device=device,
                           **{"adapt.prior": prior, "adapt.steps": 20}).fit(splits.train)
    users = shots.user_ids[:n_users]
    model.adapt(shots.for_users(users))
    for u in users:
        w = model.user_weights(u)
        assert w.shape == (3,) and np.isclose(w.sum(), 1.0, atol=1e-5)
    assert model.net_.user_logits.weight.device.type == device
    curve = model.few_shot_curve(shots, test, ns=(2,))
    assert curve["2"]["n_pairs"] == len(test)


@pytest.mark.parametrize("kind,link,n_users", [("pal-b", "euclidean", 1), ("pal-b", "euclidean", 3), ("pal-a", "cosine", 2)])
@pytest.mark.parametrize("prior", ["gaussian", "mixture"])
def test_adapt_creates_no_tensor_on_the_default_device(synthetic_splits, kind, link, n_users, prior):
    """With the default device set to "meta", every tensor adapt builds without following its inputs'
    device lands on meta and mixing it with the (CPU) inputs raises: the CPU stand-in for a GPU run."""
    from palrm.core import pair_index, pair_table
    from palrm.training import adapt_user_logits, fit_prior

    splits, shots, _ = synthetic_splits
    model = PALRewardModel(kind=kind, k=3, link=link, epochs=1, progress=False,
                           **{"adapt.prior": prior, "adapt.steps": 5}).fit(splits.train)
    state = model.fitted_
    sub = shots.for_users(shots.user_ids[:n_users]).compact_users()
    table = pair_table(state, sub)
    idx = pair_index(sub, sub.user, table)
    init = torch.zeros(n_users, 3)
    expected = adapt_user_logits(state.net, table, idx, n_users, state.config.adapt, init,
                                 fit_prior(prior, state.net.user_logits.weight.detach()[:1]))
    logits = state.net.user_logits.weight.detach()[:1]  # one known user: the prior's single-user branch
    with torch.device("meta"):
        got = adapt_user_logits(state.net, table, idx, n_users, state.config.adapt, init, fit_prior(prior, logits))
    assert got.device.type == "cpu"
    torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------------------------------------- defect 2
def test_encoders_are_built_on_the_model_device():
    from palrm.config import EncoderConfig
    from palrm.core import Embedder, build_encoder

    enc = build_encoder("st:/nonexistent-model-dir-for-the-test", "cuda:1")  # not loaded: only placed
    assert enc.device == "cuda:1"
    assert Embedder(EncoderConfig(spec="minilm"), device="cuda:3").encoder.device == "cuda:3"


def test_model_saved_on_an_absent_device_loads_on_the_cpu_with_a_warning(text_model, tmp_path):
    path = text_model.save(tmp_path / "m")
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["train"]["device"] = "cuda" if not torch.cuda.is_available() else "mps-not-here"
    (path / "config.json").write_text(json.dumps(meta))
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: a cuda model loads on cuda")
    with pytest.warns(UserWarning, match="not available here"):
        model = PALRewardModel.load(path)
    assert model.config_.train.device == "cpu"
    assert model.reward("user0", "Which pet?", ["I love cats, answer 1"]) == text_model.reward(
        "user0", "Which pet?", ["I love cats, answer 1"])
    with pytest.raises(Exception, match="not available on this machine"):
        PALRewardModel.load(path, device="cuda")


# ---------------------------------------------------------------------------------------------- defect 3
def test_scoring_keeps_one_cache_and_never_writes(text_model, tmp_path, monkeypatch):
    from palrm.encoders import EmbeddingCache

    monkeypatch.setenv("PALRM_CACHE_DIR", str(tmp_path / "cache"))
    state = text_model.fitted_
    state.config.encoder.cache_dir = str(tmp_path / "cache")
    created = []
    orig = EmbeddingCache.__init__

    def counting(self, *a, **k):
        created.append(1)
        orig(self, *a, **k)

    monkeypatch.setattr(EmbeddingCache, "__init__", counting)
    for i in range(5):
        text_model.reward("user0", "Which pet?", [f"fresh text {i}", f"another {i}"])
        text_model.reward_batch(["Which pet?"], [f"batch text {i}"], user_ids=["user1"])
    assert len(created) <= 1
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("shard-*"))


def test_scoring_reads_the_cache_and_matches_uncached_rewards(text_model, tmp_path):
    state = text_model.fitted_
    state.config.encoder.cache_dir = str(tmp_path / "cache2")
    texts = ["Which pet?", "I love cats, answer 3"]
    state.embedder.embed(texts, store=True)  # fitting-style call: written
    shards = sorted((tmp_path / "cache2").rglob("shard-*"))
    assert len(shards) == 1
    r = text_model.reward("user0", texts[0], [texts[1], "never seen before"])
    assert sorted((tmp_path / "cache2").rglob("shard-*")) == shards  # read, not written
    state.config.encoder.use_cache = False
    try:
        assert r == text_model.reward("user0", texts[0], [texts[1], "never seen before"])
    finally:
        state.config.encoder.use_cache = True


# ---------------------------------------------------------------------------------------------- defect 6
def test_load_refuses_a_newer_format_version(text_model, tmp_path):
    path = text_model.save(tmp_path / "m")
    meta = json.loads((path / "config.json").read_text())
    meta["format_version"] = 99
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="newer palrm"):
        PALRewardModel.load(path)


def test_load_refuses_an_encoder_with_another_identity(text_model, tmp_path):
    path = text_model.save(tmp_path / "m")
    meta = json.loads((path / "config.json").read_text())
    meta["encoder_identity"] = "hashing:v0:dim=64:seed=0"
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="identity"):
        PALRewardModel.load(path)


# ---------------------------------------------------------------------------------------------- defect 9
class _NoSpecEncoder:
    """An encoder object with no spec palrm can rebuild from."""

    identity = "test:nospec:v1"
    spec = ""
    dim = 16

    def encode(self, texts, *, batch_size=32, progress=False):
        from palrm.encoders import HashingEncoder

        return HashingEncoder(dim=16, seed=3).encode(list(texts))


def test_model_with_a_rebuildable_encoder_object_saves_its_spec_and_loads(tmp_path):
    from palrm.encoders import HashingEncoder

    frame = text_pairs_frame(n_users=4, pairs_per_user=10, seed=1)
    model = PALRewardModel(kind="pal-b", k=2, encoder=HashingEncoder(dim=32, seed=5), epochs=2, progress=False).fit(frame)
    path = model.save(tmp_path / "m")
    assert json.loads((path / "config.json").read_text())["config"]["encoder"]["spec"] == "hashing:32:5"
    again = PALRewardModel.load(path)
    assert again.reward("user0", "Which pet?", ["x y"]) == model.reward("user0", "Which pet?", ["x y"])


def test_model_with_an_encoder_object_without_spec_says_how_to_load(tmp_path):
    frame = text_pairs_frame(n_users=4, pairs_per_user=10, seed=1)
    enc = _NoSpecEncoder()
    model = PALRewardModel(kind="pal-b", k=2, encoder=enc, epochs=2, progress=False).fit(frame)
    path = model.save(tmp_path / "m")
    with pytest.raises(ModelFileError, match=r"PALRewardModel.load\(dir, encoder=obj\)"):
        PALRewardModel.load(path)
    again = PALRewardModel.load(path, encoder=enc)
    assert again.reward("user0", "Which pet?", ["x y"]) == model.reward("user0", "Which pet?", ["x y"])
    other = _NoSpecEncoder()
    other.identity = "test:nospec:v2"
    with pytest.raises(ModelFileError, match="identity"):
        PALRewardModel.load(path, encoder=other)


# ---------------------------------------------------------------------------------------------- structure
def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_nothing_below_the_facade_imports_it():
    below = [p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] in
             ("core", "training", "data", "encoders", "models", "finetune", "evaluation")]
    offenders = [str(p.relative_to(SRC)) for p in below
                 if any(m.startswith("palrm.reward_model") or m == "palrm.PALRewardModel" for m in _imports(p))]
    assert not offenders, offenders


def test_no_module_outside_the_facade_calls_its_privates():
    import re

    private = {n for n in vars(PALRewardModel) if n.startswith("_") and not n.startswith("__")}
    pattern = re.compile(r"\b(?:model|rm|pal|m|self\.model|engine\.model)\.(" + "|".join(map(re.escape, private)) + r")\b")
    hits = []
    for p in [*SRC.rglob("*.py"), *(SRC.parents[1] / "tests").rglob("*.py"), *(SRC.parents[1] / "benchmarks").rglob("*.py")]:
        if p.name == "reward_model.py":
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{p.name}:{i}: {line.strip()}")
    assert not hits, hits


def test_core_does_not_warn_on_import():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import palrm.core  # noqa: F401
