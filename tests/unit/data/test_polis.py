"""The Polis builder: latest vote per statement, agreed preferred over disagreed, groups kept."""

from __future__ import annotations

import pandas as pd
import pytest

from palrm.data.polis import build_polis
from palrm.errors import ConfigError


def _conversation(folder):
    folder.mkdir(parents=True)
    pd.DataFrame({"timestamp": [1, 2, 3, 4], "datetime": "x", "comment-id": [0, 1, 2, 3], "author-id": 0,
                  "agrees": 0, "disagrees": 0, "moderated": [1, 1, 0, -1],
                  "comment-body": ["Raise the wage", "Keep the wage", "Tax the rich", "spam"]}).to_csv(folder / "comments.csv", index=False)
    votes = [  # (timestamp, comment, voter, vote)
        (1, 0, 7, -1), (5, 0, 7, 1),  # voter 7 re-votes: agree counts
        (2, 1, 7, -1), (3, 2, 7, 0), (4, 3, 7, -1),  # pass and a moderated-out statement give nothing
        (1, 0, 8, -1), (2, 1, 8, 1), (3, 2, 8, 1),
        (1, 0, 9, 1),  # agrees only: no pair
    ]
    pd.DataFrame(votes, columns=["timestamp", "comment-id", "voter-id", "vote"]).assign(datetime="x").to_csv(folder / "votes.csv", index=False)
    pd.DataFrame({"participant": [7, 8, 9], "group-id": [0, 1, None], "n-comments": 0, "n-votes": 1}).to_csv(
        folder / "participants-votes.csv", index=False)
    pd.DataFrame([["topic", "Minimum wage"], ["voters", "3"]]).to_csv(folder / "summary.csv", index=False, header=False)


def test_polis_pairs(tmp_path):
    _conversation(tmp_path / "conv")
    ds = build_polis(["conv"], source=tmp_path, min_pairs=1, unseen_frac=0.0)
    frame = ds.pairs.to_frame()
    got = sorted(zip(frame.user_id, frame.chosen, frame.rejected, frame.group))
    assert got == [("conv:7", "Raise the wage", "Keep the wage", 0),
                   ("conv:8", "Keep the wage", "Raise the wage", 1), ("conv:8", "Tax the rich", "Raise the wage", 1)]
    assert set(frame.prompt) == {"Minimum wage"}
    assert ds.unseen_users == [] and sorted(ds.seen_users) == ["conv:7", "conv:8"]
    capped = build_polis(["conv"], source=tmp_path, min_pairs=2, unseen_frac=0.0)
    assert capped.pairs.users_present() == ["conv:8"]


def test_polis_errors_name_the_fix(tmp_path):
    _conversation(tmp_path / "conv")
    with pytest.raises(ConfigError, match="available: conv"):
        build_polis(["nope"], source=tmp_path)
    with pytest.raises(ConfigError, match="PALRM_POLIS_DIR"):
        build_polis(["conv"], source=tmp_path / "missing")
