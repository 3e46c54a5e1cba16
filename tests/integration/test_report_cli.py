"""palrm report, and --on-invalid skip / string group labels through train, evaluate and adapt."""

import json
import re

import pytest

from palrm.cli import main
from tests.unit.evaluation.report_data import three_group_frame

FAST = ["--encoder", "hashing", "--epochs", "8", "--no-progress", "--k", "3", "--set", "model.hidden=[32]", "--d", "16"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """seen.jsonl (string group labels, two dirty rows) and unseen.jsonl, as `palrm data` lays them out."""
    root = tmp_path_factory.mktemp("report-cli")
    frame = three_group_frame(string_groups=True)
    seen, unseen = frame[frame.user_id.str.startswith("user")].copy(), frame[frame.user_id.str.startswith("new")]
    seen.loc[seen.index[3], "rejected"] = seen.loc[seen.index[3], "chosen"]  # identical responses
    seen.loc[seen.index[5], "user_id"] = ""  # no user
    seen.to_json(root / "seen.jsonl", orient="records", lines=True)
    unseen.to_json(root / "unseen.jsonl", orient="records", lines=True)
    return root


@pytest.fixture(scope="module")
def run(files):
    out = files / "run"
    assert main(["train", "--data", str(files / "seen.jsonl"), "-o", str(out), "--on-invalid", "skip", *FAST]) == 0
    return out


def test_train_refuses_dirty_data_by_default_listing_every_problem(files, tmp_path, capsys):
    assert main(["train", "--data", str(files / "seen.jsonl"), "-o", str(tmp_path / "r"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "2 of 720 rows are invalid (2 kinds of problem)" in err
    assert "identical_responses (1 row)" in err and "line 4" in err and "missing_user (1 row)" in err and "line 6" in err
    assert not (tmp_path / "r" / "model").exists()


def test_train_skips_invalid_rows_writes_them_and_saves_the_group_mapping(run):
    rejected = [json.loads(x) for x in (run / "rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reasons"]) for r in rejected] == [(4, ["identical_responses"]), (6, ["missing_user"])]
    assert rejected[0]["record"]["chosen"] == rejected[0]["record"]["rejected"]
    assert json.loads((run / "group_labels.json").read_text()) == {"conservative": 0, "liberal": 1, "moderate": 2}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["n_pairs"] + metrics["validation"]["n_pairs"] + metrics["test"]["n_pairs"] == 718


def test_evaluate_and_adapt_skip_into_the_run_directory(run, files, tmp_path, capsys):
    (run / "rejected.jsonl").unlink()
    assert main(["evaluate", "--model", str(run / "model"), "--data", str(files / "seen.jsonl"), "--on-invalid", "skip",
                 "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["n_pairs"] == 718
    assert len((run / "rejected.jsonl").read_text().splitlines()) == 2
    dirty = tmp_path / "new.jsonl"
    rows = [json.loads(x) for x in (files / "unseen.jsonl").read_text().splitlines()][:30]
    rows[0]["chosen"] = None
    dirty.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "adapted" / "model"
    assert main(["adapt", "--model", str(run / "model"), "--data", str(dirty), "--output", str(out), "--on-invalid", "skip",
                 "--no-progress"]) == 0
    assert "skipped 1 invalid row" in capsys.readouterr().err
    assert json.loads((tmp_path / "adapted" / "rejected.jsonl").read_text())["reasons"] == ["empty_response"]


def test_report_command_writes_the_page(run, files, tmp_path, capsys):
    page = tmp_path / "out" / "report.html"
    code = main(["report", str(run / "model"), "--data", str(files / "seen.jsonl"), str(files / "unseen.jsonl"),
                 "--on-invalid", "skip", "-o", str(page), "--n-boot", "200", "--shots", "0,1,5,20"])
    assert code == 0
    out = capsys.readouterr().out
    html = page.read_text()
    data = json.loads(re.search(r'id="palrm-report-data">(.*?)</script>', html, re.S).group(1))
    assert out.splitlines()[0] == data["verdict"] and f"report: {page}" in out
    assert data["verdict"].split(":")[0] in ("Personalization pays", "No evidence that personalization pays")
    assert data["seen"]["model - btl"]["low"] > 0  # planted groups: PAL wins on the known users
    assert list(data["new_users"]) == ["0", "1", "5", "20"] and data["data"]["new_users"] == 6
    assert data["groups"]["ari"]["n_users"] == 18
    assert (tmp_path / "out" / "rejected.jsonl").is_file()


def test_report_refuses_a_non_btl_baseline_and_bad_shots(run, files, tmp_path, capsys):
    args = ["report", str(run / "model"), "--data", str(files / "unseen.jsonl"), "-o", str(tmp_path / "r.html")]
    assert main([*args, "--btl", str(run / "model")]) == 2
    assert "not btl" in capsys.readouterr().err
    assert main([*args, "--shots", "1,x"]) == 2
    assert "--shots" in capsys.readouterr().err
