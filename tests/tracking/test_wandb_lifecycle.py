"""Disabled mode and ranks other than 0 never touch W&B; a resumed run keeps its W&B run with no
step twice and none missing, even after a hard kill; W&B failing to import or dying mid-run
stops nothing; the network dropping mid-run loses no row, whether it comes back or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from wandb_testkit import (
    FAKE_KEY,
    Driven,
    WorkingWandb,
    drive,
    history,
    offline_dirs,
    sealed_env,
)

from hellolondon.rundir import keep_through, read_jsonl

STEPS = list(range(0, 51, 10))


@pytest.mark.parametrize("how", ["flag", "env"])
def test_disabled_imports_nothing_of_wandb_and_writes_no_wandb_folder(how, tmp_path):
    env = sealed_env(tmp_path, **({"WANDB_MODE": "disabled"} if how == "env" else {}))
    run_dir = tmp_path / "runs" / "d"
    run_dir.parent.mkdir()
    overrides = ["tracking.wandb_mode=disabled"] if how == "flag" else []
    out = drive(run_dir, env, 60, overrides=overrides)
    assert out.returncode == 0, out.stderr
    assert out.result["wandb_imported"] is False  # so no wandb-core process either
    assert not (run_dir / "wandb").exists() and not (tmp_path / "wandb-default").exists()
    source = "tracking.wandb_mode" if how == "flag" else "WANDB_MODE"
    assert out.lines() == [
        f"wandb: disabled ({source}=disabled); metrics go to runs/d/metrics.jsonl only"
    ]
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r] == STEPS
    assert out.result["run_id"] is None


def test_a_folder_where_wandb_offline_was_run_adds_no_wandb_console_line(tmp_path):
    """W&B says "Loading settings from wandb/settings" as it reads them, unless silent."""
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "settings").write_text("[default]\nmode = offline\n")
    env = sealed_env(tmp_path)
    run_dir = tmp_path / "runs" / "s"
    run_dir.parent.mkdir()
    out = drive(run_dir, env, 60)
    assert out.returncode == 0, out.stderr
    assert "Loading settings" not in out.stdout + out.stderr
    start, end = out.lines()
    assert start.startswith("wandb: Syncing run s (mode: offline: `wandb offline` saved it")
    assert end.startswith("wandb: run s saved offline")


def test_a_later_start_without_wandb_keeps_the_unsynced_parts_listed(tmp_path):
    """`train --resume RUN --wandb-mode disabled`: the earlier offline parts still wait for
    `wandb sync`, and `hellolondon runs` still says so."""
    from hellolondon.rundir import RunDir
    from hellolondon.tracking.run_list import run_info

    env = sealed_env(tmp_path)
    run_dir = tmp_path / "runs" / "k"
    run_dir.parent.mkdir()
    first = drive(run_dir, env, 60, stop=50)
    assert first.returncode == 0, first.stderr
    run_id = first.result["run_id"]
    again = drive(run_dir, env, 60, start=60, stop=80, overrides=["tracking.wandb_mode=disabled"])
    assert again.returncode == 0, again.stderr
    state = json.loads((run_dir / "tracking.json").read_text())
    assert state["mode"] == "disabled" and state["run_id"] == run_id
    listed = run_info(RunDir(run_dir))
    assert listed.needs_sync and listed.sync_command.endswith(f"offline-run-*-{run_id}")


def test_a_wandb_that_fails_to_import_prints_one_line_and_loses_no_row(tmp_path):
    broken = tmp_path / "broken" / "wandb"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('wandb is half installed')\n")
    path = os.pathsep.join(p for p in (str(broken.parent), os.environ.get("PYTHONPATH")) if p)
    env = sealed_env(tmp_path, PYTHONPATH=path)
    run_dir = tmp_path / "runs" / "i"
    run_dir.parent.mkdir()
    out = drive(run_dir, env, 60)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert out.lines() == [
        "wandb: could not import W&B (ImportError: wandb is half installed); "
        "metrics go to runs/i/metrics.jsonl only"
    ]
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r] == STEPS
    assert json.loads((run_dir / "tracking.json").read_text())["mode"] == "failed"


def test_other_ranks_get_the_no_op_twin_and_never_touch_wandb_or_the_run_folder(tmp_path):
    env = sealed_env(tmp_path, WANDB_MODE="offline")
    run_dir = tmp_path / "runs" / "r"
    run_dir.parent.mkdir()
    out = drive(run_dir, env, 60, rank=1)
    assert out.returncode == 0, out.stderr
    assert out.result["tracker"] == "NullTracker" and out.result["wandb_imported"] is False
    assert out.stdout.splitlines() == [
        line for line in out.stdout.splitlines() if line.startswith("RESULT")
    ]
    assert not run_dir.exists()


@pytest.fixture(scope="module")
def resumed(made_once):
    """Part 1 logs steps 0..50 and stops; the loop restarts from its checkpoint at step 20
    (metrics.jsonl cut back there) and logs 30..80 in part 2 with the same W&B run id."""

    def make(root: Path):
        env = sealed_env(root)
        run_dir = root / "runs" / "r"
        run_dir.parent.mkdir()
        first = drive(run_dir, env, 60, stop=50)
        keep_through(run_dir / "metrics.jsonl", 20)
        second = drive(run_dir, env, 60, start=30, stop=80, resume=first.result["run_id"])
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        return run_dir, env, first, second

    return made_once("wandb-resumed", make)


def test_resume_keeps_the_run_id_and_says_what_wandb_already_holds(resumed):
    run_dir, _, first, second = resumed
    assert second.result["run_id"] == first.result["run_id"]
    assert [d.name.rsplit("-", 1)[1] for d in offline_dirs(run_dir)] == [first.result["run_id"]] * 2
    line = [line for line in second.lines() if "run r" in line][0]
    assert (
        line.startswith("wandb: Resuming run r (mode: offline")
        and line.endswith("[W&B held steps up to 50]")  # nothing to re-send: it has them all
    )
    assert json.loads((run_dir / "tracking.json").read_text())["run_id"] == first.result["run_id"]


def test_resume_leaves_no_step_twice_and_none_missing_in_wandb_or_jsonl(resumed):
    run_dir, env, _, _ = resumed
    parts = [[r["_step"] for r in history(d, env)] for d in offline_dirs(run_dir)]
    assert parts == [STEPS, [60, 70, 80]]  # 30..50 are already in part 1: not sent again
    rows = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]
    assert rows == list(range(0, 81, 10))


def test_a_resume_where_wandb_kept_no_row_says_so_and_re_sends_them_all(tmp_path):
    """W&B's own process killed before it wrote a record: its part of the run is empty."""
    env = sealed_env(tmp_path)
    run_dir = tmp_path / "runs" / "e"
    run_dir.parent.mkdir()
    first = drive(run_dir, env, 60, stop=50)
    assert first.returncode == 0, first.stderr
    (part,) = offline_dirs(run_dir)
    (records,) = part.glob("*.wandb")
    records.write_bytes(records.read_bytes()[:7])  # the header alone, as a killed wandb-core
    second = drive(run_dir, env, 60, start=60, stop=80, resume=first.result["run_id"])
    assert second.returncode == 0, second.stderr
    line = [line for line in second.lines() if "run e" in line][0]
    assert line.endswith(
        "[W&B held none of this run's steps; steps 0-50 re-sent from the local log]"
    )
    assert [r["_step"] for r in history(offline_dirs(run_dir)[1], env)] == list(range(0, 81, 10))


@pytest.mark.slow
def test_resume_after_a_hard_kill_refills_what_wandb_lost(tmp_path):
    """SIGKILL loses the tail W&B had not written yet, here even rows before the checkpoint the
    loop restarts from: the resumed part re-sends those from metrics.jsonl, then goes on."""
    env = sealed_env(tmp_path)
    run_dir = tmp_path / "runs" / "k"
    run_dir.parent.mkdir()
    killed = drive(
        run_dir, env, 120, stop=600, every=1, eval_every=10**9, sigkill_at=600, sigkill_wait=0.2
    )
    assert killed.returncode == -9
    run_id = [line for line in killed.stdout.splitlines() if "wandb sync" in line][0].rsplit(
        "-", 1
    )[1]
    kept = [r["_step"] for r in history(offline_dirs(run_dir)[0], env)]
    assert kept == list(range(len(kept))) and 0 < len(kept) < 600  # a prefix survived, the tail not
    checkpoint = (len(kept) + 600) // 2  # rows past W&B's prefix up to here: only in metrics.jsonl
    keep_through(run_dir / "metrics.jsonl", checkpoint)
    again = drive(
        run_dir, env, 120, start=checkpoint + 1, stop=600, every=1, eval_every=10**9, resume=run_id
    )
    assert again.returncode == 0, again.stderr
    held = f"[W&B held steps up to {len(kept) - 1}; steps {len(kept)}-{checkpoint} re-sent from"
    assert held in again.stdout
    resent = [r["_step"] for r in history(offline_dirs(run_dir)[1], env)]
    assert resent == list(range(len(kept), 601))  # together: every step exactly once
    jsonl = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]
    assert jsonl == list(range(601))


def test_wandb_dying_mid_run_prints_one_line_and_loses_no_row(tmp_path):
    env = sealed_env(tmp_path)
    run_dir = tmp_path / "runs" / "m"
    run_dir.parent.mkdir()
    out = drive(run_dir, env, 60, kill_core_at=30)
    assert out.returncode == 0 and out.result["killed"], out.stderr
    stopped = [line for line in out.lines() if "W&B stopped working" in line]
    assert len(stopped) == 1 and "every row is in runs/m/metrics.jsonl" in stopped[0]
    # what W&B lacks is re-sent by a resume (tested above), then uploaded
    assert stopped[0].endswith(
        "once this run has ended, hellolondon train --resume runs/m sends it those from that "
        f"log, then: wandb sync runs/m/wandb/offline-run-*-{out.result['run_id']}"
    )
    from hellolondon.rundir import RunDir
    from hellolondon.tracking.run_list import run_info

    listed = run_info(RunDir(run_dir))
    assert listed.needs_sync and listed.wandb_status == "failed"
    assert listed.sync_command.startswith("hellolondon train --resume ")
    assert listed.sync_command.endswith(
        f" && wandb sync {run_dir}/wandb/offline-run-*-{out.result['run_id']}"
    )
    assert "Traceback" not in out.stderr
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r] == STEPS
    assert read_jsonl(run_dir / "events.jsonl")[0]["title"] == "loss plateau"
    assert json.loads((run_dir / "tracking.json").read_text())["status"] == "failed"


# ---------------------------------------------------------------------------- network drops

DROP_STEPS = list(range(0, 41, 2))  # two a second; W&B's file stream set to send every 1 s


def drop_mid_run(tmp_path: Path, down_s: float | None, **opts) -> tuple[Driven, WorkingWandb, list]:
    """An online run against a working server whose network drops once the server holds the
    first rows: for `down_s` seconds, or for good. Returns the run, the server and the steps the
    server held when the network dropped."""
    server = WorkingWandb()
    # W&B's file stream sends every 15 s by default: every second, the drop lands mid-run
    # within a run of 10 s
    env = sealed_env(
        tmp_path, WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=server.url,
        WANDB__FILE_STREAM_TRANSMIT_INTERVAL="1",
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "n"
    run_dir.parent.mkdir()
    done: dict[str, Driven] = {}
    loop = threading.Thread(
        target=lambda: done.update(
            out=drive(run_dir, env, 85, stop=40, every=2, pause_s=0.5, **opts)
        )
    )
    loop.start()
    while not server.steps() and loop.is_alive():
        time.sleep(0.05)
    held = server.steps()
    server.cut(down_s)
    loop.join()
    server.close()
    out = done["out"]
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    # the drop came mid-run, and W&B met it
    assert held and held != DROP_STEPS and server.resets > 0, (held, server.resets)
    # training never waited on W&B
    assert out.result["slowest_call_s"] < 1.0, out.result
    return out, server, held


@pytest.mark.slow
def test_a_network_drop_that_ends_loses_no_row_and_the_run_ends_normally(tmp_path):
    out, server, _ = drop_mid_run(tmp_path, 10.0)
    assert server.steps() == DROP_STEPS and server.exitcode == 0  # W&B retried every row
    assert server.alerts == ["loss plateau"]
    assert out.result["finish_s"] < 30.0, out.result  # what is left of the drop, and the upload
    start, *waiting = out.lines()  # the notice that it waits, when it took more than 5 s
    assert start.startswith("wandb: Syncing run n (mode: online")
    assert all(line.startswith("wandb: still uploading; waiting up to") for line in waiting)
    assert json.loads((tmp_path / "runs" / "n" / "tracking.json").read_text())["status"] == (
        "finished"
    )


@pytest.mark.slow
def test_a_network_that_never_comes_back_keeps_every_row_for_the_printed_sync(tmp_path):
    from hellolondon.rundir import RunDir
    from hellolondon.tracking.run_list import run_info

    out, server, held = drop_mid_run(tmp_path, None, finish_timeout_s=15)
    run_dir, run_id = tmp_path / "runs" / "n", out.result["run_id"]
    assert server.steps() == held and server.exitcode is None  # nothing got through
    # the bound the line promises holds, though W&B's own does not start: its sender is stuck
    # retrying the alert
    assert 15.0 <= out.result["finish_s"] < 18.0, out.result
    command = f"wandb sync --include-online runs/n/wandb/run-*-{run_id}"
    assert (
        out.lines()[-1]
        == f"wandb: upload did not finish within 15 s; the rest is on disk: {command}"
    )
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r] == (
        DROP_STEPS
    )
    (segment,) = (run_dir / "wandb").glob(f"run-*-{run_id}")
    assert [r["_step"] for r in history(segment, sealed_env(tmp_path))] == DROP_STEPS
    listed = run_info(RunDir(run_dir))
    assert listed.needs_sync and listed.sync_command.endswith(f"wandb/run-*-{run_id}")
    # the printed command, once a server answers, uploads every row and ends the run
    back = WorkingWandb()
    env = sealed_env(tmp_path, WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=back.url)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    synced = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    back.close()
    assert synced.returncode == 0, synced.stderr
    assert back.steps() == DROP_STEPS and back.exitcode == 0 and back.alerts == ["loss plateau"]
