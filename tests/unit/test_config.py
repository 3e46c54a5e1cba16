import pytest

from palrm.config import ModelConfig, PALConfig, field_help
from palrm.errors import ConfigError


def test_defaults_are_valid_and_roundtrip_yaml(tmp_path):
    cfg = PALConfig()
    assert cfg.problems() == []
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert PALConfig.from_yaml(path) == cfg


def test_every_problem_is_reported_at_once():
    raw = {"model": {"kind": "pal-c", "k": 0, "colour": "red"}, "train": {"epochs": "ten"}, "extra": {}}
    with pytest.raises(ConfigError) as err:
        PALConfig.from_dict(raw)
    msg = str(err.value)
    for needle in ("colour", "unknown section 'extra'", "train.epochs", "expected int"):
        assert needle in msg, needle


def test_semantic_problems_listed_together():
    with pytest.raises(ConfigError) as err:
        PALConfig.from_dict({"model": {"kind": "nope", "k": 0, "dropout": 1.5}})
    msg = str(err.value)
    assert "model.kind" in msg and "model.k" in msg and "model.dropout" in msg


def test_updated_with_dotted_overrides():
    cfg = PALConfig().updated({"model.k": 5, "train.lr": 1})
    assert cfg.model.k == 5 and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    with pytest.raises(ConfigError):
        PALConfig().updated({"nosection": 1})


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        PALConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PALConfig.from_yaml(bad)


def test_every_field_has_help():
    assert all(field_help(ModelConfig).values())


def test_shipped_presets_are_valid_and_name_their_command():
    from pathlib import Path

    presets = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert presets
    for path in presets:
        PALConfig.from_yaml(path)
        assert path.read_text().startswith("# palrm ")
