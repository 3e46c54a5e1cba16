import pytest

from palrm.atomic import atomic_directory


def test_new_directory_appears_only_when_complete(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_keeps_the_earlier_directory(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target, fsync=True) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("crash while writing")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replaces_an_existing_directory(tmp_path):
    target = tmp_path / "out"
    for text in ("one", "two"):
        with atomic_directory(target, fsync=True) as tmp:
            (tmp / "a.txt").write_text(text)
    assert (target / "a.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
