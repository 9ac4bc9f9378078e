"""The online paths, with a stand-in for the `wandb` module (no server here): what `wandb.init`
is asked for, the start line, resume skipping what the server holds, the fallback after a
failed online start, artifacts, and a failure mid-run."""

from __future__ import annotations

import _thread
import json
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from wandb_testkit import FAKE_KEY

from hellolondon.config import build_config
from hellolondon.rundir import read_jsonl
from hellolondon.tracking import wandb_start as wt
from hellolondon.tracking.setup import open_tracker


class FakeRun:
    def __init__(self, kw: dict, run_dir: Path, starting_step: int) -> None:
        self.kw, self.id = kw, kw["id"]
        self.starting_step = starting_step
        self.url = f"https://wandb.example/{kw['project']}/runs/{self.id}"
        kind = "run" if kw["mode"] == "online" else "offline-run"
        self.settings = SimpleNamespace(
            sync_dir=str(run_dir / "wandb" / f"{kind}-20261126_101500-{self.id}")
        )
        self.logged: list[tuple[int, dict]] = []
        self.axes: dict[str, str | None] = {}
        self.alerts: list[dict] = []
        self.artifacts: list[tuple[object, list[str]]] = []
        self.summary: dict = {}
        self.finished = False
        self.fail_log = False

    def define_metric(self, name: str, step_metric: str | None = None, **options) -> None:
        self.axes[name] = step_metric

    def log(self, row: dict, step: int) -> None:
        if self.fail_log:
            raise ConnectionResetError(104, "Connection reset by peer")
        self.logged.append((step, row))

    def alert(self, **kw) -> None:
        self.alerts.append(kw)

    def log_artifact(self, artifact, aliases) -> None:
        self.artifacts.append((artifact, aliases))

    def finish(self, exit_code: int = 0) -> None:
        self.finished = True


class FakeArtifact:
    def __init__(self, name: str, type: str, metadata: dict) -> None:
        self.name, self.type, self.metadata, self.added = name, type, metadata, []

    def add_dir(self, path: str) -> None:
        self.added.append(path)

    add_file = add_dir


class FakeWandbModule:
    AlertLevel = SimpleNamespace(INFO="INFO", WARN="WARN", ERROR="ERROR")
    Artifact = FakeArtifact

    def __init__(
        self, run_dir: Path, online_error: Exception | None = None, starting_step: int = 0
    ) -> None:
        self.run_dir, self.online_error, self.starting_step = run_dir, online_error, starting_step
        self.inits: list[dict] = []
        self.runs: list[FakeRun] = []
        self.teardowns = 0

    @staticmethod
    def Settings(**kw) -> dict:  # noqa: N802 -- mirrors wandb.Settings
        return kw

    def init(self, **kw) -> FakeRun:
        self.inits.append(kw)
        if kw["mode"] == "online" and self.online_error is not None:
            raise self.online_error
        self.runs.append(FakeRun(kw, self.run_dir, self.starting_step))
        return self.runs[-1]

    def teardown(self) -> None:
        self.teardowns += 1

    def termsetup(self, *args) -> None:
        pass


@pytest.fixture
def online(tmp_path, monkeypatch):
    """An environment with a W&B key and a stand-in module; returns a starter."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for name, value in {
        "HOME": tmp_path,
        "NETRC": tmp_path / ".netrc",
        "WANDB_CONFIG_DIR": tmp_path / "cfg",
        "WANDB_API_KEY": FAKE_KEY,
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "WANDB_ENTITY": "team",
        "WANDB_ERROR_REPORTING": "false",
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(wt, "probe", lambda *a: None)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "london-slm-simple-20261126-101500"
    lines: list[str] = []

    def start(preset: str = "slm", resume: str | None = None, overrides=(), **fake):
        module = FakeWandbModule(run_dir, **fake)
        monkeypatch.setattr(wt, "_import_wandb", lambda: module)
        cfg = build_config(preset, overrides=list(overrides))
        cfg.tracking.run_name = run_dir.name
        tracker = open_tracker(
            cfg, run_dir, run_config=cfg.to_dict(), resume_run_id=resume, console=lines.append
        )
        return tracker, module, lines

    return start


def test_online_start_asks_wandb_for_the_guide_settings_and_prints_the_run_line(online):
    tracker, wandb, lines = online()
    (init,) = wandb.inits
    assert init["mode"] == "online" and init["resume"] == "allow" and init["id"] == tracker.run_id
    assert (
        init["project"] == "helloLondon"
        and init["entity"] == "team"
        and init["name"] == "london-slm-simple-20261126-101500"
    )
    assert init["tags"] == ["london", "historical", "llm", "gpt2", "1500-1850", "slm"]
    assert init["dir"].endswith("london-slm-simple-20261126-101500") and init["job_type"] == "train"
    assert init["settings"]["silent"] is True and init["settings"]["finish_timeout_raises"] is True
    assert 1.0 <= init["settings"]["init_timeout"] <= 15.0 - wt.FALLBACK_RESERVE_S
    assert 0 < init["settings"]["finish_timeout"] < 120.0  # inside the tracker's own bound
    assert lines == [
        f"wandb: Syncing run london-slm-simple-20261126-101500 (mode: online, project team/helloLondon) https://wandb.example/helloLondon/runs/{tracker.run_id}"
    ]
    run = wandb.runs[0]
    assert run.axes == {
        "train/iter": None,
        "train/*": "train/iter",
        "gpu/*": "train/iter",
        "eval/iter": None,
        "eval/*": "eval/iter",
        **dict.fromkeys(
            ("gpu/mem_allocated_gb", "gpu/mem_reserved_gb", "gpu/utilization"), "train/iter"
        ),
    }
    tracker.log({"train/loss": 4.0, "train/iter": 10, "gpu/utilization": None}, 10)
    tracker.finish()
    assert run.logged == [(10, {"train/loss": 4.0, "train/iter": 10})] and run.finished
    state = json.loads((Path(init["dir"]) / "tracking.json").read_text())
    assert state["mode"] == "online" and state["status"] == "finished" and state["url"] == run.url


def test_the_key_never_reaches_wandb_in_the_notes_group_or_tags(online):
    flags = [f"tracking.notes=key {FAKE_KEY}", f"tracking.group=g-{FAKE_KEY}", "tracking.tags=x"]
    _, wandb, _ = online(overrides=flags)
    (init,) = wandb.inits
    assert FAKE_KEY not in json.dumps([init["notes"], init["group"], init["tags"]])
    assert init["notes"] == "key ***" and init["tags"][-1] == "x"


def test_online_resume_sends_only_steps_the_server_does_not_hold(online):
    tracker, wandb, lines = online(resume="abc12345", starting_step=51)
    assert wandb.inits[0]["id"] == "abc12345" and tracker.run_id == "abc12345"
    assert lines[0].startswith("wandb: Resuming run") and "[W&B held steps up to 50]" in lines[0]
    for step in (30, 40, 50, 60, 70):
        tracker.log({"train/loss": 1.0, "train/iter": step}, step)
    assert [s for s, _ in wandb.runs[0].logged] == [60, 70]
    assert [r["step"] for r in read_jsonl(Path(wandb.inits[0]["dir"]) / "metrics.jsonl")] == [
        30,
        40,
        50,
        60,
        70,
    ]


def test_a_resumed_evaluation_of_a_step_wandb_has_passed_goes_at_its_next_step(online, tmp_path):
    """The run resumes from step 30 (a stop cut its evaluation short) while W&B holds up to 40:
    the evaluation of step 30, new to W&B, must not be dropped with the steps it already holds."""
    run_dir = tmp_path / "runs" / "london-slm-simple-20261126-101500"
    run_dir.mkdir(parents=True)
    rows = [{"step": s, "train/loss": 1.0, "train/iter": s} for s in (10, 20, 30)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tracker, wandb, _ = online(resume="abc12345", starting_step=41)
    tracker.log({"eval/val_loss": 2.0, "eval/iter": 30}, 30)
    for step in (35, 40, 41):
        tracker.log({"train/loss": 1.0, "train/iter": step}, step)
    assert wandb.runs[0].logged == [
        (41, {"eval/val_loss": 2.0, "eval/iter": 30}),
        (41, {"train/loss": 1.0, "train/iter": 41}),
    ]


def test_a_failed_online_start_falls_back_to_offline_with_the_same_run_id(online):
    tracker, wandb, lines = online(online_error=RuntimeError("permission denied on entity team"))
    assert [i["mode"] for i in wandb.inits] == ["online", "offline"] and wandb.teardowns == 1
    assert wandb.inits[0]["id"] == wandb.inits[1]["id"] == tracker.run_id
    assert "(mode: offline: could not go online: permission denied" in lines[0]
    assert lines[0].endswith(
        f"upload later with: wandb sync runs/london-slm-simple-20261126-101500/wandb/offline-run-*-{tracker.run_id}"
    )


def test_unsynced_offline_parts_keep_a_resumed_run_offline(online, tmp_path):
    part = (
        tmp_path
        / "runs"
        / "london-slm-simple-20261126-101500"
        / "wandb"
        / "offline-run-20261126_090000-abc12345"
    )
    part.mkdir(parents=True)
    (part / "run-abc12345.wandb").write_bytes(b"")
    tracker, wandb, lines = online(resume="abc12345")
    assert [i["mode"] for i in wandb.inits] == ["offline"]
    assert "earlier parts of this run are not synced yet" in lines[0]


def test_checkpoints_become_model_artifacts_only_when_asked(online, tmp_path):
    import torch

    from hellolondon.config import RunConfig
    from hellolondon.train import checkpoint
    from hellolondon.train.state import TrainState

    trainer = TrainState(step=100, samples_seen=1600, best_val_loss=3.5)
    state = {"trainer": trainer.state_dict(), "config": RunConfig().to_dict()}
    # written as the trainer writes it: the metadata must follow the real layout
    ckpt = checkpoint.save(tmp_path, 100, {"w": torch.zeros(2)}, {}, state, 0, False)
    tracker, wandb, _ = online()
    tracker.log_checkpoint(ckpt, ["latest"])
    assert wandb.runs[0].artifacts == []
    tracker, wandb, _ = online(overrides=["tracking.log_artifacts=true"])
    tracker.log_checkpoint(ckpt, ["latest", "best"])
    ((artifact, aliases),) = wandb.runs[0].artifacts
    assert aliases == ["latest", "best"] and artifact.type == "model"
    assert artifact.name == "london-slm-simple-20261126-101500-model" and artifact.added == [
        str(ckpt)
    ]
    assert artifact.metadata == {
        "path": str(ckpt), "step": 100, "samples_seen": 1600, "best_val_loss": 3.5
    }  # fmt: skip


def test_alerts_carry_level_wait_and_iteration(online):
    tracker, wandb, _ = online()
    tracker.alert("loss rising", "val loss up 12%", "ERROR", rule="rise", step=700)
    (alert,) = wandb.runs[0].alerts
    assert alert == {
        "title": "loss rising",
        "text": "val loss up 12% (iteration 700)",
        "level": "ERROR",
        "wait_duration": 300,
    }


def test_a_wandb_failure_mid_run_turns_wandb_off_after_one_line(online):
    tracker, wandb, lines = online()
    run = wandb.runs[0]
    tracker.log({"train/loss": 3.0}, 10)
    run.fail_log = True
    for step in (20, 30):
        tracker.log({"train/loss": 2.0}, step)
    tracker.summary({"best_val_loss": 2.0})
    tracker.finish()
    assert [s for s, _ in run.logged] == [10] and not run.finished and wandb.teardowns == 1
    assert len([line for line in lines if "W&B stopped working (ConnectionResetError" in line]) == 1
    run_dir = Path(wandb.inits[0]["dir"])
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [10, 20, 30]
    assert json.loads((run_dir / "summary.json").read_text())["best_val_loss"] == 2.0
    assert json.loads((run_dir / "tracking.json").read_text())["status"] == "failed"


def test_an_unfinished_online_upload_names_the_command_that_uploads_the_online_folder(online):
    tracker, wandb, lines = online()
    run = wandb.runs[0]

    def timed_out(exit_code: int = 0) -> None:
        raise TimeoutError("finish timed out")

    run.finish = timed_out
    tracker.finish()
    command = f"wandb sync --include-online runs/london-slm-simple-20261126-101500/wandb/run-*-{tracker.run_id}"
    assert lines[-1].startswith("wandb: upload did not finish") and lines[-1].endswith(command)
    state = json.loads((Path(wandb.inits[0]["dir"]) / "tracking.json").read_text())
    assert state["status"] == "upload_incomplete" and state["sync_command"] == command


@pytest.fixture
def short_finish(monkeypatch):
    from hellolondon.tracking import wandb_tracker

    monkeypatch.setattr(wandb_tracker, "FINISH_TIMEOUT_S", 0.3)
    monkeypatch.setattr(wandb_tracker, "FINISH_GRACE_S", 0.2, raising=False)
    monkeypatch.setattr(wandb_tracker, "FINISH_NOTICE_S", 0.1, raising=False)
    never = threading.Event()  # "never" set by the test: a stuck finish ends after 5 s at most
    # Ctrl-C as at a terminal, whatever handler an earlier training test left behind
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield never
    signal.signal(signal.SIGINT, previous)
    never.set()  # lets the abandoned finish threads end


def test_a_finish_that_never_returns_is_given_up_after_the_timeout(online, short_finish):
    """W&B's own finish_timeout does not start while its sender waits on a server that never
    answers; the tracker's bound holds anyway, and the rest is left for `wandb sync`."""
    tracker, wandb, lines = online()
    wandb.runs[0].finish = lambda exit_code=0: short_finish.wait(5)
    t0 = time.monotonic()
    tracker.finish()
    assert time.monotonic() - t0 < 3.0
    assert lines[1].startswith("wandb: still uploading; waiting up to 0 s (Ctrl-C leaves")
    assert lines[2].startswith("wandb: upload did not finish within 0 s; the rest is on disk")
    assert wandb.teardowns == 1  # W&B's service stopped, so its exit hook cannot wait either
    state = json.loads((Path(wandb.inits[0]["dir"]) / "tracking.json").read_text())
    assert state["status"] == "upload_incomplete" and "--include-online" in state["sync_command"]


def test_ctrl_c_while_the_upload_waits_leaves_the_rest_for_later(online, short_finish):
    tracker, wandb, lines = online()

    def interrupted(exit_code=0):
        _thread.interrupt_main()  # Ctrl-C reaches the main thread, which waits for finish
        short_finish.wait(5)

    wandb.runs[0].finish = interrupted
    tracker.finish()  # does not raise
    assert lines[-1].startswith("wandb: upload was stopped; the rest is on disk: wandb sync")
    assert json.loads((Path(wandb.inits[0]["dir"]) / "tracking.json").read_text())["status"] == (
        "upload_incomplete"
    )


def test_wandb_is_stopped_only_once_its_log_was_written_after_finish_began(online, short_finish):
    """W&B flushes its transaction log every several seconds: stopping its service before that
    would leave `wandb sync` an empty file."""
    tracker, wandb, lines = online()
    run = wandb.runs[0]
    log_file = Path(run.settings.sync_dir) / f"run-{tracker.run_id}.wandb"
    log_file.parent.mkdir(parents=True)
    log_file.write_bytes(b":W&B")  # the header, written at the start
    os.utime(log_file, (0, 0))
    seen: list[bytes] = []
    wandb.teardown = lambda: seen.append(log_file.read_bytes())

    def interrupted_then_flushed(exit_code=0):
        _thread.interrupt_main()
        time.sleep(0.3)  # W&B's own flush, a moment later
        log_file.write_bytes(b":W&B every record")
        short_finish.wait(5)

    run.finish = interrupted_then_flushed
    tracker.finish()
    assert seen == [b":W&B every record"]


def test_an_offline_resume_reads_each_earlier_part_once(tmp_path, monkeypatch):
    """Each resume leaves one more W&B folder, and W&B's reader costs a second or so per folder:
    reading them all made the hundredth resume of a run wait minutes before training."""
    from hellolondon.rundir import RunDir
    from hellolondon.tracking import wandb_tracker

    rundir = RunDir(tmp_path)
    held = {f"offline-run-20261126_1000{n:02d}-abc12345": n * 10 for n in range(50)}
    held["offline-run-20261126_100050-abc12345"] = None  # killed before its first row
    for name in [*held, "offline-run-20261126_100051-abc12345"]:
        (rundir.wandb_dir / name).mkdir(parents=True)
        (rundir.wandb_dir / name / "run-abc12345.wandb").touch()
    asked: list[str] = []
    killed_at: list[str] = ["offline-run-20261126_100049-abc12345"]

    def last_step(segment: Path) -> int | None:
        if segment.name in killed_at:  # a start killed (SIGKILL) while W&B's reader runs
            killed_at.clear()
            cache = json.loads((rundir.wandb_dir / wandb_tracker.LAST_STEPS).read_text())
            assert cache["offline-run-20261126_100050-abc12345"] == [0, None]  # kept at once
            raise KeyboardInterrupt
        asked.append(segment.name)
        return held[segment.name]

    monkeypatch.setattr(wandb_tracker, "last_step", last_step)
    this_start = rundir.wandb_dir / "offline-run-20261126_100051-abc12345"
    wb_run = SimpleNamespace(id="abc12345", settings=SimpleNamespace(sync_dir=str(this_start)))

    def resume() -> int:
        tracker = wandb_tracker.WandbTracker(
            None, wb_run, None, "offline", "", rundir, console=lambda _: None
        )
        return tracker._last_step_held()

    with pytest.raises(KeyboardInterrupt):
        resume()
    assert resume() == 490  # the part read before the kill is not read again
    assert asked == ["offline-run-20261126_100050-abc12345", "offline-run-20261126_100049-abc12345"]
    asked.clear()
    assert resume() == 490 and asked == []  # the next resume: nothing read again
