"""The real suite's item-disjoint split (bench/real.py): one item draw for seen and new users, and
validation on items held out of training."""

from __future__ import annotations

import numpy as np

from palrm.bench.real import _splits
from palrm.data.splits import split_users


def test_item_split_holds_the_same_items_out_for_seen_and_new_users(synthetic):
    seen, new = split_users(synthetic.pairs, unseen_frac=0.3, seed=0)
    train, val, seen_test, shots, new_test = _splits(seen, new, "items", seed=0)

    def items(d):
        return set(np.concatenate([d.chosen, d.rejected]).tolist())

    test_items = items(seen_test) | items(new_test)
    assert len(seen_test) and len(new_test) and len(val) and len(train)
    # no pair the model or a new user learns from touches a test item, for seen and new users alike
    for d in (train, val, shots):
        assert not items(d) & test_items
    # validation pairs hold an item that no training pair contains
    val_only = items(val) - items(train)
    assert val_only
    assert all(c in val_only or r in val_only for c, r in zip(val.chosen, val.rejected))
    # seen users are users with training pairs (the others would be scored as unknown)
    trained = set(train.users_present())
    assert set(val.users_present()) <= trained and set(seen_test.users_present()) <= trained
    # test pairs are between held-out items only
    for d in (seen_test, new_test):
        assert items(d) <= test_items


def test_only_names_unknown_sets(tmp_path):
    import pytest

    from palrm.bench.real import run_real
    from palrm.errors import ConfigError

    with pytest.raises(ConfigError, match="--only Polis: unknown data set; expected some of persona, polis"):
        run_real(tmp_path, profile="smoke", only=["Polis"])
