"""`hellolondon runs`: name, preset, iterations, best val loss, W&B mode and whether the W&B copy
still waits for `wandb sync`, from the run folders alone."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from hellolondon.cli import main


def make_run(
    root: Path,
    name: str,
    preset: str,
    mode: str,
    *,
    status: str = "finished",
    summary: dict | None = None,
    rows: list[dict] = (),
    synced: bool | None = None,
) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"preset": preset}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    (run / "tracking.json").write_text(
        json.dumps({"run_id": f"id{name[-1]}", "mode": mode, "status": status})
    )
    if synced is not None:
        part = run / "wandb" / f"offline-run-20261126_101500-id{name[-1]}"
        part.mkdir(parents=True)
        (part / f"run-id{name[-1]}.wandb").write_bytes(b":W&B")
        if synced:
            (part / f"run-id{name[-1]}.wandb.synced").write_text("")
    return run


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    make_run(
        root,
        "london-tiny-demo-a",
        "tiny",
        "offline",
        summary={"iterations": 300, "best_val_loss": 4.25},
        synced=False,
    )
    make_run(
        root,
        "london-slm-simple-b",
        "slm",
        "offline",
        summary={"iterations": 60000, "best_val_loss": 3.1},
        synced=True,
    )
    make_run(
        root,
        "london-tiny-demo-c",
        "tiny",
        "disabled",
        summary={"iterations": 12, "best_val_loss": None},
    )
    make_run(
        root,
        "london-historical-llm-d",
        "regular",
        "online",
        status="upload_incomplete",
        rows=[
            {"step": 0, "eval/val_loss": 9.5},
            {"step": 10, "train/loss": 8.0},
            {"step": 20, "eval/val_loss": 7.25},
        ],
    )
    (root / "not-a-run").mkdir()
    return root


def test_the_table_shows_each_run_and_the_commands_that_upload_what_waits(runs, capsys):
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "PRESET", "STATUS", "ITERS", "BEST", "VAL", "W&B", "SYNC"]
    table = {line.split()[0]: line.split() for line in lines[1:5]}
    for row in table.values():
        row.pop(2)  # the status: the test below
    assert table["london-tiny-demo-a"] == [
        "london-tiny-demo-a",
        "tiny",
        "300",
        "4.2500",
        "offline",
        "needed",
    ]
    assert table["london-slm-simple-b"] == [
        "london-slm-simple-b",
        "slm",
        "60,000",
        "3.1000",
        "offline",
        "done",
    ]
    assert table["london-tiny-demo-c"] == ["london-tiny-demo-c", "tiny", "12", "-", "disabled", "-"]
    assert table["london-historical-llm-d"][1:4] == [
        "regular",
        "20",
        "7.2500",
    ]  # from metrics.jsonl
    assert table["london-historical-llm-d"][4:] == ["online", "(upload_incomplete)", "needed"]
    assert "  wandb sync runs/london-tiny-demo-a/wandb/offline-run-*-ida" in lines
    assert "  wandb sync --include-online runs/london-historical-llm-d/wandb/run-*-idd" in lines
    assert "not-a-run" not in out


def test_the_status_column_says_how_training_stands(runs, capsys):
    from hellolondon.rundir import RunDir

    (runs / "london-slm-simple-b" / "summary.json").write_text(
        json.dumps({"iterations": 500, "stopped_early": True, "stop_reason": "stopped by a signal"})
    )
    failed = RunDir(runs / "london-tiny-demo-c")
    failed.mark_training()
    failed.mark_failed("RuntimeError at step 12")
    killed = RunDir(runs / "london-historical-llm-d")
    killed.process_file.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    assert main(["runs", "--json"]) == 0
    status = {r["name"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert status == {"london-tiny-demo-a": "finished", "london-slm-simple-b": "stopped",
                      "london-tiny-demo-c": "failed", "london-historical-llm-d": "killed"}  # fmt: skip


def test_an_online_run_uploaded_later_with_wandb_sync_needs_no_more_syncing(runs, capsys):
    part = runs / "london-historical-llm-d" / "wandb" / "run-20261126_101500-idd"
    part.mkdir(parents=True)
    (part / "run-idd.wandb").write_bytes(b":W&B")
    assert main(["runs"]) == 0
    assert "wandb sync --include-online runs/london-historical-llm-d/wandb/run-*-idd" in (
        capsys.readouterr().out
    )
    (part / "run-idd.wandb.synced").write_text("")  # what `wandb sync` leaves
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("london-historical-llm-d"))
    assert row.split()[-1] == "done" and "include-online" not in out


def test_json_output_for_scripts(runs, capsys):
    assert main(["runs", "--json"]) == 0
    data = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert (
        data["london-tiny-demo-a"]["needs_sync"] is True
        and data["london-slm-simple-b"]["needs_sync"] is False
    )
    assert (
        data["london-tiny-demo-a"]["best_val_loss"] == 4.25
        and data["london-tiny-demo-c"]["wandb_mode"] == "disabled"
    )


def test_an_empty_or_missing_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["runs", "--out-dir", str(tmp_path / "empty")]) == 0
    assert "no runs in" in capsys.readouterr().out
    assert main(["runs", "--out-dir", str(tmp_path / "missing")]) == 2
    assert "no run folder" in capsys.readouterr().err
    (tmp_path / "README.md").write_text("notes")
    assert main(["runs", str(tmp_path / "README.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("README.md is a file, not a folder of runs; give the folder of your runs")


def test_a_run_folder_given_as_the_folder_of_runs(runs, capsys):
    one = next(p for p in runs.iterdir() if p.is_dir())
    assert main(["runs", "--out-dir", str(one)]) == 2
    said = f"is a run folder, not a folder of runs; use `hellolondon runs {runs}`"
    assert said in capsys.readouterr().err


def test_the_folder_of_runs_is_given_as_an_argument_too(runs, capsys):
    assert main(["runs", str(runs), "--json"]) == 0
    by_argument = json.loads(capsys.readouterr().out)
    assert main(["runs", "--out-dir", str(runs), "--json"]) == 0
    assert by_argument == json.loads(capsys.readouterr().out) and by_argument
    assert main(["runs", str(runs), "--out-dir", "elsewhere"]) == 2
    assert "give the folder once" in capsys.readouterr().err


def test_an_unknown_flag_is_named_with_the_commands_own_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["runs", "--bogus"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: hellolondon runs ")
    assert err[-1] == "hellolondon runs: error: unrecognized arguments: --bogus (see --help)"


def test_the_trials_of_sweep_folders_are_listed_too(runs, capsys):
    sweep = runs / "sweep-lr"
    sweep.mkdir()
    (sweep / "sweep.yaml").write_text("name: lr\n")
    make_run(sweep / "trials", "lr-001", "tiny", "offline", summary={"iterations": 5}, synced=False)
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[5].split()[:4] == ["sweep-lr/trials/lr-001", "tiny", "finished", "5"]
    assert "  wandb sync runs/sweep-lr/trials/lr-001/wandb/offline-run-*-id1" in lines
    assert main(["runs", "--out-dir", "runs/sweep-lr"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("trials/lr-001 ")


def test_an_online_run_killed_while_tracking_is_interrupted_and_needs_a_sync(tmp_path, capsys):
    import socket
    import subprocess
    import sys

    root = tmp_path / "runs"
    run = make_run(root, "london-slm-killed-e", "slm", "online", status="running")
    live = make_run(root, "london-slm-live-f", "slm", "online", status="running")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    host = socket.gethostname()
    (run / "process.json").write_text(json.dumps({"pid": int(dead.stdout), "host": host}))
    (live / "process.json").write_text(json.dumps({"pid": os.getpid(), "host": host}))
    assert main(["runs", "--out-dir", str(root)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:3]}
    assert rows["london-slm-killed-e"][-3:] == ["online", "(interrupted)", "needed"]
    assert rows["london-slm-live-f"][-2:] == ["online", "done"]  # still training: not judged
    assert f"wandb sync --include-online {root}/london-slm-killed-e/wandb/run-*-ide" in out


def test_a_killed_run_with_a_checkpoint_is_resumed_before_its_sync(tmp_path, capsys):
    """Killed with its training, W&B lacks its unwritten rows and its part may end in an
    unfinished record that stops `wandb sync`: a resume re-sends the rows and cuts the record.
    A killed run with no checkpoint cannot be resumed: its sync uploads what W&B wrote."""
    import socket
    import subprocess
    import sys

    root = tmp_path / "runs"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    record = json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()})
    for name in ("london-tiny-saved-g", "london-tiny-early-h"):
        run = make_run(root, name, "tiny", "offline", status="running", synced=False)
        (run / "process.json").write_text(record)
    (root / "london-tiny-saved-g" / "checkpoints" / "step-000500").mkdir(parents=True)
    assert main(["runs", "--out-dir", str(root)]) == 0
    out = capsys.readouterr().out
    saved, early = root / "london-tiny-saved-g", root / "london-tiny-early-h"
    assert (
        f"  hellolondon train --resume {saved} && wandb sync {saved}/wandb/offline-run-*-idg\n"
        in out
    )
    assert f"  wandb sync {early}/wandb/offline-run-*-idh" in out
    assert f"--resume {early}" not in out


def test_a_run_killed_while_starting_is_listed_as_such(runs, capsys):
    started = runs / "london-tiny-demo-e"
    started.mkdir()  # its process died before it wrote config.json: only its record is there
    (started / "process.json").write_text(
        json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()})
    )
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("london-tiny-demo-e"))
    assert row.split()[1:5] == ["-", "killed", "at", "start"]
    assert "killed at start: killed before it wrote anything; start it again" in lines


def test_a_run_of_train_gpus_goes_on_with_the_same_gpus(tmp_path, capsys):
    """The line under the table says how a run aborted by a second Ctrl-C goes on: for a run
    that `train --gpus 2` started, with --gpus 2 (as the launcher says), not in one process;
    a run last resumed in one process goes on in one."""
    root = tmp_path / "runs"
    command = "hellolondon train --gpus 2 --preset tiny --data 'work/my data' device=cpu"
    resumed = {"resumes": [{"command": "hellolondon train --resume runs/x"}]}
    for name, reproduce in (("two", {}), ("one", resumed)):
        run = make_run(root, name, "tiny", "disabled", status="finished")
        config = {"preset": "tiny", "reproduce": {"command": command, **reproduce}}
        (run / "config.json").write_text(json.dumps(config))
        aborted = {"aborted": "by a second Ctrl-C at step 12", "aborted_at_step": 12}
        (run / "process.json").write_text(json.dumps({"pid": 1, "host": "h", **aborted}))
        (run / "checkpoints" / "step-000010").mkdir(parents=True)
    assert main(["runs", "--out-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"with: hellolondon train --gpus 2 --resume {root / 'two'}\n" in out
    assert f"with: hellolondon train --resume {root / 'one'}\n" in out
