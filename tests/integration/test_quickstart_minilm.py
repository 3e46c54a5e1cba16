"""The main job on the real MiniLM encoder (the README's `make quickstart`), at a reduced size."""

import json

import pytest

from palrm import PALRewardModel
from palrm.quickstart import run_quickstart


@pytest.mark.slow
def test_quickstart_with_minilm_beats_btl_and_saves_a_loadable_model(tmp_path):
    results = run_quickstart(tmp_path / "qs", encoder="minilm", small=True, progress=False)
    on_disk = json.loads((tmp_path / "qs" / "results.json").read_text())
    assert on_disk["seen"]["pal"]["accuracy"] == results["seen"]["pal"]["accuracy"]
    assert set(on_disk) >= {"seen", "unseen", "seconds"}
    assert results["seen"]["pal"]["accuracy"] >= 0.9
    assert results["seen"]["pal"]["accuracy"] >= results["seen"]["btl"]["accuracy"] + 0.1
    assert results["unseen"]["pal"]["50"] > results["unseen"]["pal"]["1"]
    model = PALRewardModel.load(tmp_path / "qs" / "model")
    user = model.users_[0]
    rewards = model.reward(user, "Is the following statement something you would say?", ["I like dogs", "Taxes are theft"])
    assert len(rewards) == 2
