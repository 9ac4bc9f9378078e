"""`compare`: the settings that differ and the outcomes of several runs, sortable, as JSON too."""

from __future__ import annotations

import json

import pytest
from tinyrun import tiny_config

from hellolondon.cli import main
from hellolondon.train.loop import train


@pytest.fixture(scope="module")
def two_runs(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    for name, lr in (("slow", "1e-4"), ("fast", "3e-3")):
        cfg = tiny_config(tiny_data, out, f"tracking.run_name={name}", f"train.lr={lr}")
        train(cfg, log=lambda *_: None)
    return out / "slow", out / "fast"


def test_table_names_differing_settings_and_outcomes(two_runs, capsys):
    assert main(["compare", *map(str, two_runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines[0]
    assert "train.lr" in head and "train.min_lr" not in head and "run_name" not in head
    for column in ("best val loss", "final val loss", "steps to best", "tokens/s", "wall time"):
        assert column in head
    assert lines[1].startswith("fast")  # the lower val loss first


def test_sort_and_json(two_runs, capsys):
    assert main(["compare", *map(str, two_runs), "--sort", "train.lr", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"] == ["train.lr"]
    assert [r["run"] for r in data["runs"]] == ["slow", "fast"]
    fast = data["runs"][1]["outcomes"]
    assert fast["best_val_loss"] < data["runs"][0]["outcomes"]["best_val_loss"]
    assert fast["best_val_step"] == 12 and fast["tokens_to_best"] == 12 * 4 * 32


def test_unknown_sort_column(two_runs, capsys):
    assert main(["compare", *map(str, two_runs), "--sort", "tokns"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'tokens/s'" in err


def test_html_report_of_several_runs_has_the_table(two_runs, tmp_path):
    assert main(["report", *map(str, two_runs), "--out", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Comparison</h2>" in page and "train.lr" in page
    assert main(["report", str(two_runs[0]), "--out", str(tmp_path / "one")]) == 0
    assert "<h2>Comparison</h2>" not in (tmp_path / "one" / "report.html").read_text()


def test_a_run_without_rows_is_one_note_by_folder(two_runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    assert main(["compare", *map(str, two_runs), str(empty)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"note: {empty}: left out (no metric rows yet)"]
    assert len(captured.out.splitlines()) == 3


def test_a_run_given_twice_is_shown_once(two_runs, capsys):
    slow, fast = two_runs
    again = slow.parent / ".." / slow.parent.name / slow.name  # the same folder, another spelling
    assert main(["compare", str(slow), str(fast), str(again)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"note: {again}: given more than once, shown once"]
    assert len(captured.out.splitlines()) == 3  # the header and two runs
