import numpy as np
import pandas as pd
import pytest

from palrm.data import load_pairs
from palrm.data.schema import concat_pairs


def frame(users, chosen, rejected, prompt="p", **extra):
    return pd.DataFrame({"user_id": users, "prompt": prompt, "chosen": chosen, "rejected": rejected, **extra})


def test_concat_merges_texts_users_and_keeps_pair_contents():
    a = load_pairs(frame(["u1", "u2"], ["x", "y"], ["y", "z"], split=["train", "test"], group=["lib", "con"]))
    b = load_pairs(frame(["u3", "u1"], ["z", "w"], ["x", "x"], prompt=["", "p"], split=["test", "train"], group=["mod", "lib"]))
    c = concat_pairs([a, b])
    assert len(c) == 4 and c.user_ids == ["u1", "u2", "u3"] and sorted(c.texts) == ["p", "w", "x", "y", "z"]
    got = c.to_frame()
    want = pd.concat([a.to_frame().drop(columns="group"), b.to_frame().drop(columns="group")], ignore_index=True)
    assert got.drop(columns="group").equals(want)
    assert c.meta["group_labels"] == {"con": 0, "lib": 1, "mod": 2}
    assert c.group.tolist() == [1, 0, 2, 1]  # "lib" is the same group in both files


def test_concat_embeddings_and_split_dropped_when_a_part_lacks_it():
    vecs = np.arange(12, dtype=np.float32).reshape(4, 3)
    a = load_pairs(pd.DataFrame({"user_id": ["a"], "chosen": [0], "rejected": [1]}), embeddings=vecs)
    b = load_pairs(pd.DataFrame({"user_id": ["b"], "chosen": [2], "rejected": [0], "split": ["test"]}), embeddings=vecs)
    c = concat_pairs([a, b])
    assert c.split is None
    assert np.array_equal(c.embeddings[c.chosen], vecs[[0, 2]]) and np.array_equal(c.embeddings[c.rejected], vecs[[1, 0]])
    with pytest.raises(ValueError):
        concat_pairs([a, load_pairs(frame(["u"], ["x"], ["y"]))])
