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


def test_updated_reports_every_problem_of_overrides_and_values_at_once():
    cfg = PALConfig()
    with pytest.raises(ConfigError) as err:
        cfg.updated({"kk": 1, "model.k": 0, "train.epochs": "ten", "nosection.x": 1})
    msg = str(err.value)
    for needle in ("unknown option 'kk'", "model.k = 0", "train.epochs = 'ten'", "'nosection.x'"):
        assert needle in msg, needle
    assert cfg == PALConfig()  # the original is never modified


def test_plain_names_and_dotted_keys_are_one_override_path():
    from palrm.config import OVERRIDE_NAMES, dotted_key

    named = PALConfig().updated(k=4, epochs=10, encoder="hashing", adapt_lr=0.5, steps=7, grad_accum=2)
    dotted = PALConfig().updated({"model.k": 4, "train.epochs": 10, "encoder.spec": "hashing", "adapt.lr": 0.5,
                                  "adapt.steps": 7, "scale.grad_accum_steps": 2})
    assert named == dotted and named.model.k == 4 and named.adapt.lr == 0.5
    assert dotted_key("lr") == "train.lr" and dotted_key("batch_size") == "train.batch_size"  # the first section wins
    sections = PALConfig().to_dict()
    for name, key in OVERRIDE_NAMES.items():  # every name leads to a real field
        section, _, field_name = key.partition(".")
        assert field_name in sections[section], name


def test_every_cli_shortcut_flag_is_an_override_name():
    from palrm.cli.flags import SHORTCUTS
    from palrm.config import OVERRIDE_NAMES

    assert set(SHORTCUTS) <= set(OVERRIDE_NAMES)


def test_yaml_then_overrides_report_problems_of_both(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  kind: pal-a\n  k: 0\n")
    with pytest.raises(ConfigError) as err:
        PALConfig.from_yaml(path, {"model.d": -1, "train.epoch": 3})
    assert all(n in str(err.value) for n in ("model.k", "model.d", "train.epoch")), str(err.value)
    cfg = PALConfig.from_yaml(path, {"k": 2, "epochs": 3})
    assert (cfg.model.kind, cfg.model.k, cfg.train.epochs) == ("pal-a", 2, 3)
