"""`compare`: the settings that differ and the outcomes of several runs, sortable, as JSON too."""

from __future__ import annotations

import json
import os

import pytest
from tinyrun import tiny_config

from hellolondon.cli import main
from hellolondon.train.loop import train


@pytest.fixture(scope="module")
def two_runs(tiny_data, made_once):
    def make(out):
        for name, lr in (("slow", "1e-4"), ("fast", "3e-3")):
            cfg = tiny_config(tiny_data, out, f"tracking.run_name={name}", f"train.lr={lr}")
            train(cfg, log=lambda *_: None)
        return out / "slow", out / "fast"

    return made_once("compare-two-runs", make)


def test_table_names_differing_settings_and_outcomes(two_runs, capsys):
    assert main(["compare", *map(str, two_runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines[0]
    assert "train.lr" in head and "train.min_lr" not in head and "run_name" not in head
    for column in ("best val loss", "final val loss", "steps to best", "tokens/s", "wall time"):
        assert column in head
    assert lines[1].startswith("fast")  # the lower val loss first


def test_how_the_wandb_mode_was_chosen_is_not_a_differing_setting():
    from types import SimpleNamespace

    from hellolondon.comparison import differing

    def run(mode, reason, lr):
        return SimpleNamespace(
            config={
                "train": {"lr": lr},
                "tracking": {"wandb_mode": mode, "mode_reason": reason},
            }
        )

    runs = [
        run("disabled", "tracking.wandb_mode", 1e-3),
        run("offline", "API key not found: set WANDB_API_KEY or run `wandb login`", 3e-3),
    ]
    assert differing(runs) == ["train.lr"]


def test_one_data_folder_named_two_ways_is_not_a_difference(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from hellolondon.comparison import differing

    (tmp_path / "work" / "data").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)

    def run(given, lr=1e-3):
        where = str((tmp_path / given).resolve())
        return SimpleNamespace(
            config={
                "train": {"lr": lr},
                "data": {"data_dir": given},
                "reproduce": {"data": {"data_dir": where}},
            }
        )

    # `train --data work/data`, and `train --config` of that run from another folder
    assert differing([run("work/data"), run(str(tmp_path / "work" / "data"), 3e-3)]) == ["train.lr"]
    assert differing([run("work/data"), run("other")]) == ["data.data_dir"]


def test_settings_are_shown_exactly_as_set():
    from hellolondon.comparison import _cell

    assert _cell("train.lr", 6e-4) != _cell("train.lr", 6.0001e-4)
    assert [_cell("train.lr", v) for v in (6e-4, 6.0001e-4, 0.1)] == ["0.0006", "0.00060001", "0.1"]
    assert _cell("best val loss", 4.123456) == "4.1235"


def test_sort_and_json(two_runs, capsys):
    assert main(["compare", *map(str, two_runs), "--sort", "train.lr", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"] == ["train.lr"]
    assert [r["run"] for r in data["runs"]] == ["slow", "fast"]
    fast = data["runs"][1]["outcomes"]
    assert fast["best_val_loss"] < data["runs"][0]["outcomes"]["best_val_loss"]
    assert fast["best_val_step"] == 12 and fast["tokens_to_best"] == 12 * 4 * 32


def test_tokens_to_best_follow_the_tokens_seen_across_a_batch_change(tmp_path):
    """Steps 1-10 at 8 x 32 tokens, then resumed at 4 x 32: 20 steps are 3,840 tokens, not
    20 x 128 = 2,560 at the latest batch."""
    from hellolondon.comparison import outcomes
    from hellolondon.report.rundata import RunData

    rows = [{"step": s, "train/tokens_seen": 256 * min(s, 10) + 128 * max(0, s - 10)}
            for s in range(5, 21, 5)]  # fmt: skip
    rows += [{"step": s, "eval/val_loss": v} for s, v in ((0, 7.0), (10, 5.0), (20, 4.0))]
    config = {"hardware": {"tokens_per_step": 128}}
    run = RunData(tmp_path, "r", rows, [], {}, config)
    got = outcomes(run)
    assert got["best_val_step"] == 20 and got["tokens_to_best"] == 3840
    rows[-1]["eval/val_loss"] = 6.0  # best at 10: the row of step 10
    assert outcomes(RunData(tmp_path, "r", rows, [], {}, config))["tokens_to_best"] == 2560
    rows[-2]["step"] = 12  # an eval between train rows: counted on from the last one
    assert outcomes(RunData(tmp_path, "r", rows, [], {}, config))["tokens_to_best"] == 2560 + 256


@pytest.mark.parametrize("text", ['{"a":', '{"train": 3, "model": "x", "tracking": []}'])
def test_a_run_without_a_readable_config_is_named_and_left_out_of_the_settings(
    two_runs, tmp_path, capsys, text
):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(two_runs[1], broken)
    (broken / "config.json").write_text(text)
    assert main(["compare", str(broken), *map(str, two_runs), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["settings"] == ["train.lr"]  # not every setting "differing"
    assert (
        f"note: broken: {broken / 'config.json'} cannot be read: its settings are left out" in err
    )


def test_a_run_whose_summary_cannot_be_read_is_named(two_runs, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(two_runs[1], broken)
    (broken / "summary.json").write_text('{"best_val')
    assert main(["compare", str(broken)]) == 0
    err = capsys.readouterr().err
    assert f"note: fast: {broken / 'summary.json'} cannot be read: its values come from" in err


def test_report_and_watch_read_a_run_whose_config_sections_are_not_objects(
    two_runs, tmp_path, capsys
):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(two_runs[1], broken)
    (broken / "config.json").write_text('{"train": 3, "model": "x", "tracking": []}')
    assert main(["report", str(broken), "--out", str(tmp_path / "report")]) == 0
    assert "config.json cannot be read: its settings are left out" in capsys.readouterr().err
    assert main(["watch", str(broken), "--once", "--width", "100"]) == 0
    assert "helloLondon watch: broken" in capsys.readouterr().out


def test_unknown_sort_column(two_runs, capsys):
    assert main(["compare", *map(str, two_runs), "--sort", "tokns"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'tokens/s'" in err


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_sort_column_is_refused_naming_the_columns(two_runs, capsys, blank):
    assert main(["compare", *map(str, two_runs), "--sort", blank]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --sort is blank; give one of the columns: ")
    assert "best val loss" in err and "tokens/s" in err and err.count("\n") == 1


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


def test_a_killed_run_is_told_from_a_running_one_by_its_process(tiny_data, tmp_path, capsys):
    """The run folder records its training process: `compare` and `watch` say "killed" as soon
    as it is gone, not "running" until its log has gone quiet for a while."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from hellolondon.rundir import RunDir, read_jsonl

    run = tmp_path / "k"
    argv = [sys.executable, "-m", "hellolondon", "train", "--data", str(tiny_data),
            "--out-dir", str(tmp_path), "--run-name", "k", "--wandb-mode", "disabled",
            "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.block_size=32",
            "train.batch_size=2", "train.max_iters=100000", "train.log_interval=1"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not read_jsonl(run / "metrics.jsonl") and time.monotonic() < deadline:
            assert proc.poll() is None, "training ended before it could be watched"
            time.sleep(0.05)
        assert RunDir(run).training_process() == ("running", f"process {proc.pid}")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert main(["compare", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["outcomes"]["status"] == "killed"
    assert main(["watch", str(run), "--once"]) == 1  # gone: the code says so, as the line
    assert f"killed: process {proc.pid} is gone" in capsys.readouterr().out


def test_a_process_record_of_another_machine_leaves_the_status_to_the_log(tmp_path):
    from hellolondon.rundir import RunDir

    run = RunDir(tmp_path)
    run.mark_training()
    assert run.training_process() == ("running", f"process {os.getpid()}")
    run.process_file.write_text(json.dumps({"pid": os.getpid(), "host": "another-machine"}))
    assert run.training_process() is None
    run.mark_failed("RuntimeError at step 7")
    assert run.training_process() == ("failed", "RuntimeError at step 7")
    run.mark_ended()
    assert run.training_process() is None and not run.process_file.exists()


def test_a_sort_column_that_starts_several(two_runs, capsys):
    assert main(["compare", *map(str, two_runs), "--sort", "tok"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "error: --sort 'tok' could be any of: tokens to best, tokens/s; give more of the name"
    )
    assert main(["compare", *map(str, two_runs), "--sort", "tokens/"]) == 0


def test_a_sweep_metric_that_is_the_best_val_loss_gets_no_second_column(two_runs):
    from hellolondon.comparison import compare
    from hellolondon.report.rundata import load_runs

    runs, _ = load_runs(two_runs)
    for metric in ("eval/val_loss", "best_val_loss"):
        assert compare(runs, metric=metric).columns.count("best val loss") == 1
        assert not any("(min)" in c for c in compare(runs, metric=metric).columns)
    assert "train/loss (min)" in compare(runs, metric="train/loss").columns
