"""The terminal view: sparklines, incremental reading of a growing log, one frame for pipes,
clean exit on Ctrl-C and when the run finishes, clear errors on bad paths."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from hellolondon.cli import main
from hellolondon.watch import ASCII, BLOCKS, RunView, Tail, render_frame, sparkline, watch


def write_rows(run: Path, rows: list[dict], name: str = "metrics.jsonl") -> None:
    run.mkdir(parents=True, exist_ok=True)
    with open(run / name, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def live_run(root: Path, name: str = "live", gpu: bool = False, n: int = 20) -> Path:
    run = root / name
    run.mkdir(parents=True)
    cfg = {"train": {"max_iters": 100}, "tracking": {"run_name": name}}
    (run / "config.json").write_text(json.dumps(cfg))
    rows = []
    for i in range(1, n + 1):
        row = {
            "step": i * 2,
            "time": 1000.0 + i,
            "train/loss": 10.0 - 0.3 * i,
            "train/lr": 1e-3,
            "train/dt_ms": 250.0,
            "train/tokens_per_sec": 16000.0,
        }
        if gpu:
            row |= {"train/mfu": 38.5, "gpu/mem_allocated_gb": 3.25}
        rows.append(row)
    rows.append({"step": 40, "time": 1021.0, "eval/val_loss": 4.5, "eval/train_loss": 4.2})
    write_rows(run, rows)
    write_rows(
        run,
        [{"level": "WARN", "title": "loss spike", "text": "loss 9.1", "step": 12}],
        "events.jsonl",
    )
    return run


def test_sparkline_scales_into_the_block_characters():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == BLOCKS
    assert sparkline([8, 7, 6, 5, 4, 3, 2, 1], 4) == "█▆▃▁"  # each column is the mean of two
    assert sparkline([2.0] * 50, 10) == "▅" * 10
    assert sparkline([1.0, 3.0], 20) == "▁█"  # fewer values than columns: one column each
    assert sparkline([0, 1], 2, ASCII) == " #"
    assert sparkline([], 10) == ""


def test_tail_reads_only_complete_new_lines_and_restarts_on_rewrite(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')
    tail = Tail(path)
    assert tail.read() == ([{"a": 1}], False)
    with open(path, "a") as f:
        f.write('}\n{"a": 3}\n')
    assert tail.read() == ([{"a": 2}, {"a": 3}], False)
    assert tail.read() == ([], False)
    path.write_text('{"a": 9}\n')  # a resume rewrote the file shorter
    assert tail.read() == ([{"a": 9}], True)
    assert Tail(tmp_path / "missing.jsonl").read() == ([], False)


def test_a_frame_shows_progress_values_sparklines_and_findings(tmp_path):
    view = RunView(live_run(tmp_path, gpu=True))
    view.refresh()
    frame = render_frame(view, width=100, now=1025.0)
    lines = frame.splitlines()
    assert lines[0] == "helloLondon watch: live"
    assert (
        "iter 40/100 (40%)" in lines[1]
        and "eta 0m15s" in lines[1]
        and "last row 0m04s ago" in lines[1]
    )
    loss = next(line for line in lines if line.startswith("train/loss"))
    assert "4.0000" in loss and "█" in loss and "▁" in loss
    assert any(line.startswith("train/mfu") and "38.5%" in line for line in lines)
    assert any(line.startswith("GPU memory") and "3.25 GB" in line for line in lines)
    assert "  [WARN] loss spike at iter 12: loss 9.1" in lines
    assert all(len(line) <= 100 for line in lines)
    write_rows(view.path, [{"step": 42, "time": 1300.0, "train/loss": 3.9}])
    view.refresh()
    frame = render_frame(view, width=100, now=1500.0)
    assert "3.9000" in frame and "(stopped?)" in frame


def test_a_run_that_died_shows_why_and_no_time_left(tmp_path):
    from hellolondon.rundir import RunDir

    run = RunDir(live_run(tmp_path))
    run.mark_training()
    run.mark_failed("RuntimeError at step 40")
    view = RunView(run.path)
    view.refresh()
    status = render_frame(view, width=100, now=1025.0).splitlines()[1]
    assert "failed: RuntimeError at step 40" in status and "eta" not in status


def test_cpu_run_and_a_run_that_has_not_logged_yet(tmp_path):
    view = RunView(live_run(tmp_path))
    view.refresh()
    assert "train/mfu      not measured" in render_frame(view, now=1025.0)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.json").write_text("{}")
    out = io.StringIO()
    assert watch(fresh, once=True, out=out, width=80) == 0
    assert "waiting for the first metrics row" in out.getvalue()


@pytest.mark.parametrize(
    ("metrics", "said"),
    [
        ('{"step": 10, "train/lo\n', "the run has ended and metrics.jsonl has no readable line"),
        ("", "the run ended before it logged one"),
    ],
)
def test_a_finished_run_without_a_readable_row_says_so_and_not_waiting(tmp_path, metrics, said):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"max_iters": 100}}))
    (run / "metrics.jsonl").write_text(metrics)
    (run / "summary.json").write_text(json.dumps({"iterations": 100}))
    out = io.StringIO()
    assert watch(run, once=True, out=out, width=80) == 0
    frame = out.getvalue()
    assert "iter 100/100 (100%)  |  finished" in frame
    assert f"no metrics row to show: {said}" in frame and "waiting" not in frame


def test_ctrl_c_exits_cleanly_and_a_finished_run_ends_the_watch(tmp_path, monkeypatch):
    run = live_run(tmp_path)
    sleeps = []

    def interrupted(seconds):
        sleeps.append(seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr("hellolondon.watch.time.sleep", interrupted)
    out = io.StringIO()
    assert watch(run, interval=3, out=out, width=80) == 0
    assert sleeps == [3] and "train/loss" in out.getvalue()
    (run / "summary.json").write_text(json.dumps({"iterations": 100}))
    out = io.StringIO()
    assert watch(run, interval=3, out=out, width=80) == 0  # no sleep: it ends by itself
    assert sleeps == [3] and "finished" in out.getvalue()


def test_cli_watch_once_picks_the_newest_run_and_rejects_bad_paths(tmp_path, capsys):
    live_run(tmp_path / "runs", "older")
    newer = live_run(tmp_path / "runs", "newer")
    (newer / "metrics.jsonl").touch()
    assert main(["watch", str(tmp_path / "runs"), "--once", "--width", "90"]) == 0
    out = capsys.readouterr().out
    assert "watching the newest run" in out and "helloLondon watch: newer" in out
    assert main(["watch", str(tmp_path / "nowhere"), "--once"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["watch", str(tmp_path / "plain"), "--once"]) == 2
    assert "is empty: no run has started there yet" in capsys.readouterr().err
    (tmp_path / "plain" / "notes.txt").write_text("")
    assert main(["watch", str(tmp_path / "plain"), "--once"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["watch", str(newer), "--interval", "0"]) == 2
    capsys.readouterr()
    assert main(["watch", str(newer), "--once", "--width", "5"]) == 2  # columns cut to nothing
    assert "--width 5 is too narrow" in capsys.readouterr().err


@pytest.mark.parametrize("log", ["metrics.jsonl", "events.jsonl"])
def test_a_log_that_is_a_folder_is_said_in_one_line(tmp_path, capsys, log):
    run = live_run(tmp_path)
    (run / log).unlink()
    (run / log).mkdir()
    assert main(["watch", str(run), "--once"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {run / log} is a folder, not a file of rows; move it away (training writes this log as a file)\n"
    )


@pytest.mark.parametrize("encoding", ["ascii", "utf-8"])
def test_sparklines_fall_back_to_ascii_where_unicode_cannot_print(tmp_path, encoding):
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    assert watch(live_run(tmp_path), once=True, out=out, width=80) == 0
    out.seek(0)
    text = out.read()
    assert ("█" in text) == (encoding == "utf-8") and "train/loss" in text


def test_a_kill_ends_watch_as_terminated_and_ctrl_c_quietly(tmp_path, monkeypatch, capsys):
    import signal

    import hellolondon.watch as watch_module

    run = live_run(tmp_path)

    def signal_instead_of_sleep(seconds: float, signum: signal.Signals) -> None:
        signal.raise_signal(signum)  # its handler raises here, before the next line
        raise AssertionError(f"{signum.name} is ignored in this process")  # not a loop forever

    for send, code in ((signal.SIGTERM, 143), (signal.SIGINT, 0)):
        monkeypatch.setattr(
            watch_module.time, "sleep", lambda s, n=send: signal_instead_of_sleep(s, n)
        )
        assert main(["watch", str(run), "--interval", "1"]) == code
        assert capsys.readouterr().err == ("terminated\n" if code else "")


def test_a_run_whose_loss_turned_nan_shows_nan_and_its_real_progress(tmp_path):
    view = RunView(live_run(tmp_path))
    write_rows(
        view.path,
        [{"step": s, "time": 1030.0 + s, "train/loss": "nan", "train/iter": s} for s in (44, 46)],
    )
    view.refresh()
    frame = render_frame(view, width=100, now=1080.0)
    assert "iter 46/100 (46%)" in frame.splitlines()[1]
    loss = next(line for line in frame.splitlines() if line.startswith("train/loss"))
    assert "nan" in loss and "4.0000" in loss  # the last value, and the finite range beside it


def test_a_diverged_loss_is_written_short_and_keeps_the_columns(tmp_path):
    view = RunView(live_run(tmp_path))
    write_rows(
        view.path,
        [
            {"step": 42, "time": 1031.0, "train/loss": 3.3e21, "train/grad_norm": 2.7e20},
            {"step": 44, "time": 1032.0, "train/loss": 1.32e23, "train/grad_norm": 1.5},
        ],
    )
    view.refresh()
    lines = render_frame(view, width=100, now=1040.0).splitlines()
    loss = next(line for line in lines if line.startswith("train/loss"))
    assert loss[15:27] == "     1.32e23"  # the value in its 12 columns, as `report` writes it
    assert loss.endswith("  4.0000 .. 1.32e23")  # the whole range, within the width
    norm = next(line for line in lines if line.startswith("grad norm"))
    assert norm[15:27] == "       1.500" and norm.endswith("1.500 .. 2.70e20")


# A training process as far as the run folder can tell: it records itself, then trains (sleeps);
# with "fail" it records an error and exits, as a run that dies of one does.
TRAINER = """
import sys, time
from hellolondon.rundir import RunDir
run = RunDir(sys.argv[1])
run.mark_training()
if sys.argv[2] == "fail":
    run.mark_failed("RuntimeError at step 40")
    sys.exit(1)
print("training", flush=True)
time.sleep(120)
"""


def _trainer(run: Path, tmp_path: Path, how: str):
    import os
    import subprocess
    import sys

    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run), how],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    if how == "fail":
        proc.wait(timeout=60)
    else:
        assert proc.stdout.readline() == "training\n"
    return proc


def test_watch_ends_when_the_runs_process_is_killed(tmp_path, monkeypatch, capsys):
    import signal

    import hellolondon.watch as watch_module

    run = live_run(tmp_path)
    (run / "checkpoints" / "step-000040").mkdir(parents=True)
    proc = _trainer(run, tmp_path, "train")
    sleeps = []

    def kill_it(seconds: float) -> None:  # the first refresh saw it running; then SIGKILL
        sleeps.append(seconds)
        assert len(sleeps) == 1, "watch kept watching a run whose process is gone"
        proc.send_signal(signal.SIGKILL)
        proc.wait()  # a blocking wait: with a timeout it would poll through this very sleep

    monkeypatch.setattr(watch_module.time, "sleep", kill_it)
    try:
        assert main(["watch", str(run), "--interval", "1"]) == 1
    finally:
        proc.kill()
        proc.wait()
    out, err = capsys.readouterr()
    assert sleeps == [1] and f"killed: process {proc.pid} is gone" in out  # the last frame
    assert err == (
        f"the run's training process {proc.pid} is gone (killed, or it ended without a word); "
        f"go on with: hellolondon train --resume {run}\n"
    )


def test_a_run_killed_while_starting_is_a_run_to_start_again(tmp_path, capsys):
    import socket

    run = tmp_path / "runs" / "started"
    run.mkdir(parents=True)  # killed before it wrote config.json: only its record is there
    record = {"pid": 2**22 + 12345, "host": socket.gethostname()}
    (run / "process.json").write_text(json.dumps(record))
    assert main(["watch", str(run), "--once"]) == 1
    out, err = capsys.readouterr()
    assert f"killed: process {record['pid']} is gone" in out
    assert err == (
        f"the run's training process {record['pid']} is gone (killed, or it ended without a "
        "word); it was killed while starting, before it wrote anything; start it again (the "
        "same `hellolondon train` command; with --run-name started it reuses this folder)\n"
    )
    (run / "process.json").write_text(json.dumps(record | {"pid": os.getpid()}))  # starting now
    assert main(["watch", str(tmp_path / "runs"), "--once"]) == 0
    assert "waiting for the first metrics row" in capsys.readouterr().out


def test_watch_ends_when_a_failed_runs_process_is_gone(tmp_path, monkeypatch, capsys):
    import hellolondon.watch as watch_module

    def kept_watching(seconds: float) -> None:
        raise AssertionError("watch kept watching a run whose process is gone")

    run = live_run(tmp_path)
    proc = _trainer(run, tmp_path, "fail")
    monkeypatch.setattr(watch_module.time, "sleep", kept_watching)
    said = (
        f"the run's training process {proc.pid} is gone (RuntimeError at step 40); it saved no "
        "checkpoint to go on from; train it again under another --run-name\n"
    )
    assert main(["watch", str(run)]) == 1
    assert capsys.readouterr().err == said
    assert main(["watch", str(run), "--once"]) == 1  # a script's one look tells it too
    assert capsys.readouterr().err == said


def test_a_gone_trial_of_a_sweep_is_continued_by_its_sweep(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep x"
    (sweep / "trials").mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("name: x\n")
    run = live_run(sweep / "trials", "x-001")
    (run / "checkpoints" / "step-000040").mkdir(parents=True)
    proc = _trainer(run, tmp_path, "fail")
    monkeypatch.chdir(tmp_path)
    assert main(["watch", str(run), "--once"]) == 1
    assert capsys.readouterr().err == (
        f"the run's training process {proc.pid} is gone (RuntimeError at step 40); its sweep "
        "goes on with it: run the same `hellolondon sweep` command again (sweep folder 'sweep x')\n"
    )


def test_watch_keeps_watching_a_run_of_another_machine(tmp_path, monkeypatch, capsys):
    import hellolondon.watch as watch_module

    run = live_run(tmp_path)
    proc = _trainer(run, tmp_path, "train")
    proc.kill()
    proc.wait()
    monkeypatch.setattr("hellolondon.rundir.socket.gethostname", lambda: "another-machine")
    sleeps = []

    def then_ctrl_c(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(watch_module.time, "sleep", then_ctrl_c)
    assert main(["watch", str(run), "--interval", "1"]) == 0  # its process cannot be looked up
    assert sleeps == [1, 1, 1] and capsys.readouterr().err == ""


def test_a_refresh_reads_the_process_record_once(tmp_path, monkeypatch):
    import hellolondon.rundir as rundir

    run = live_run(tmp_path)
    rundir.RunDir(run).mark_training()  # this process, running
    real, reads = rundir.read_json, []
    monkeypatch.setattr(rundir, "read_json", lambda p: reads.append(Path(p).name) or real(p))
    view = RunView(run)
    view.refresh()
    assert reads.count("process.json") == 1
    assert view.process == ("running", f"process {os.getpid()}") and view.gone is None
    (run / "process.json").write_text(json.dumps({"pid": 2**22 + 1, "host": "x", "failed": "E"}))
    view.refresh()
    assert reads.count("process.json") == 2
    assert view.process == ("failed", "E") and view.gone is None  # another machine's record


def test_a_run_aborted_by_a_second_ctrl_c_is_said_as_such_not_killed(tmp_path, capsys):
    import socket

    run = live_run(tmp_path / "runs")
    (run / "checkpoints" / "step-000040").mkdir(parents=True)
    record = {"pid": 2**22 + 12345, "host": socket.gethostname()}  # gone
    record |= {"aborted": "by a second Ctrl-C at step 42", "aborted_at_step": 42}
    (run / "process.json").write_text(json.dumps(record))
    assert main(["watch", str(run), "--once"]) == 1
    out, err = capsys.readouterr()
    assert "aborted by a second Ctrl-C at step 42" in out and "killed" not in out
    assert err == (
        f"the run's training process {record['pid']} is gone (aborted by a second Ctrl-C at "
        f"step 42); go on with: hellolondon train --resume {run}\n"
    )
