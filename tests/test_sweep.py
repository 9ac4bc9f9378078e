"""Sweeps in W&B's format: checked before anything starts, run offline on W&B's own engine
(each trial a training run, resumable), and the agent's command line for the online path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tinyrun import TINY_MODEL

from hellolondon.cli import build_parser, main
from hellolondon.cli.train_command import config_from_args
from hellolondon.config import RunConfig
from hellolondon.errors import UserError
from hellolondon.rundir import RunDir

pytest.importorskip("sweeps", reason="the sweep extra is not installed")

from hellolondon.search import driver, space  # noqa: E402
from hellolondon.search.folder import SweepFolder, Trial  # noqa: E402

SHIPPED = sorted((Path(__file__).parent.parent / "sweeps").glob("*.yaml"))
TRIAL = [
    *TINY_MODEL,
    "train.batch_size=4",
    "train.max_iters=10",
    "train.warmup_iters=2",
    "train.eval_interval=5",
    "train.eval_iters=2",
    "train.log_interval=1",
    "train.ckpt_interval=5",
    "tracking.wandb_mode=disabled",
    "monitor.enabled=false",
]


def sweep_file(tmp_path: Path, data: Path, name: str = "s", fixed=(), **spec) -> Path:
    command = ["${env}", "${interpreter}", "-m", "hellolondon", "train", "--data", str(data)]
    body = {
        "name": name,
        "method": "random",
        "metric": {"name": "eval/val_loss", "goal": "minimize"},
        "parameters": {
            "train.lr": {"distribution": "log_uniform_values", "min": 3e-4, "max": 1e-2}
        },
        "command": [*command, *TRIAL, *fixed, "${args_no_hyphens}"],
    } | spec
    body = {k: v for k, v in body.items() if v is not None}  # None: leave the key out
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------ the files and the online path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_sweep_files_pass_the_engine_schema_and_our_checks(path):
    data = yaml.safe_load(path.read_text())
    names = {k.split(".", 1)[1] for k in data["parameters"]}
    if "optimizer" in names and not hasattr(RunConfig().train, "optimizer"):
        pytest.skip("train.optimizer is not a setting in this version")
    spec = space.load_spec(path)
    assert spec.metric == "eval/val_loss"
    assert "${args_no_hyphens}" in data["command"]


def test_agent_command_line_parses_into_our_settings():
    """What `wandb agent` runs for a trial, from `command:` and ${args_no_hyphens}."""
    path = next(p for p in SHIPPED if p.name == "slm_lr_warmup.yaml")
    command = yaml.safe_load(path.read_text())["command"]
    line = space.agent_command(command, {"train.lr": 0.000345, "train.warmup_iters": 500})
    assert line[:4] == ["/usr/bin/env", "python", "-m", "hellolondon"]
    assert "train.lr=0.000345" in line and "train.warmup_iters=500" in line
    args = build_parser().parse_args(line[3 + 1 :])  # what `python -m hellolondon` parses
    cfg = config_from_args(args)
    assert cfg.train.lr == 0.000345 and cfg.train.warmup_iters == 500
    assert cfg.preset == "slm" and cfg.train.max_iters == 6000 and cfg.data.data_dir == "work/data"


def test_trainer_joins_the_agents_run(monkeypatch, tmp_path):
    """Under `wandb agent`, W&B names the trial's run in WANDB_RUN_ID; the trainer uses it."""
    from hellolondon.tracking import wandb_start

    seen = {}

    def fake_init(wandb, opts, mode, run_id, run_dir, timeout):
        seen["id"] = run_id
        raise RuntimeError("no W&B in tests")

    monkeypatch.setenv("WANDB_RUN_ID", "agentrun1")
    monkeypatch.setattr(wandb_start, "_init", fake_init)
    monkeypatch.setattr(wandb_start, "_import_wandb", lambda: None)
    monkeypatch.setattr(wandb_start, "_quiet_terminal", lambda *a: None)
    monkeypatch.setattr(wandb_start, "quiet_teardown", lambda *a: None)
    cfg = RunConfig()
    cfg.tracking.wandb_mode = "offline"
    wandb_start.start_wandb(cfg, RunDir(tmp_path), console=lambda *_: None)
    assert seen["id"] == "agentrun1"


def test_agent_trials_started_in_one_second_get_folders_of_their_own(monkeypatch):
    from hellolondon.train.resolve import default_run_name

    monkeypatch.setenv("WANDB_SWEEP_ID", "s")
    names = set()
    for run_id in ("aaaa1111", "bbbb2222"):  # two agents' trials in one second
        monkeypatch.setenv("WANDB_RUN_ID", run_id)
        names.add(default_run_name("tiny"))
    assert len(names) == 2 and all(n.startswith("london-tiny-") for n in names)
    monkeypatch.delenv("WANDB_SWEEP_ID")  # outside a sweep the guide's name is kept
    assert default_run_name("tiny").count("-") == 4  # london-tiny-demo-YYYYMMDD-HHMMSS


# ------------------------------------------------------------------ bad input: one line, nothing started


@pytest.mark.parametrize(
    "parameters, method, expected",
    [
        (
            {"train.lrr": {"values": [0.1]}},
            "random",
            "'train.lrr' is not a config key; did you mean train.lr?",
        ),
        ({"trian.lr": {"values": [0.1]}}, "random", "did you mean train.lr?"),
        ({"preset": {"values": ["tiny", "slm"]}}, "grid", "parameter 'preset' is not a setting"),
        (
            {"train.lr": {"values": ["fast", "slow"]}},
            "random",
            "float setting, but categorical value 'fast' is a str",
        ),
        (
            {"train.warmup_iters": {"min": 1.5, "max": 9.5}},
            "random",
            "int setting, but uniform gives floats",
        ),
        (
            {"train.warmup_iters": {"distribution": "q_uniform", "min": 1, "max": 9, "q": 2}},
            "random",
            "int setting",
        ),
        ({"train.lr": {"values": []}}, "grid", "has no values (an empty grid)"),
        (
            {"train.lr": {"min": 0.001, "max": 0.01}},
            "grid",
            "engine rejects it: Parameter train.lr is a disallowed type with grid search",
        ),
        ({"train.lr": {"values": [0.1]}}, "sideways", "W&B's sweep schema rejects it"),
        (
            {"train.lr": {"min": 0.01, "max": 0.001}},
            "random",
            "min 0.01 is not less than max 0.001",
        ),
        ({"train.lr": {"values": [0.00001]}}, "random", "train.min_lr must be in [0, train.lr]"),
        ({"train.dtype": {"values": ["float32", "float8"]}}, "random", "train.dtype must be"),
        ({"train.dtype": {"values": [True]}}, "random", "train.dtype must be"),  # not a choice
        (  # both ends divide the width (32), the middle does not
            {"model.n_head": {"distribution": "int_uniform", "min": 1, "max": 4}},
            "random",
            "parameter 'model.n_head' value 3: model.n_embd (32) must be divisible",
        ),
        (  # unbounded: most of its values are negative learning rates
            {"train.lr": {"distribution": "normal", "mu": 0.001, "sigma": 0.01}},
            "random",
            "normal proposes values such as -0.029 (mu ± 3 sigma): train.lr must be a positive",
        ),
    ],
)
def test_bad_sweep_files_are_refused_before_anything_starts(
    capsys, tmp_path, tiny_data, parameters, method, expected
):
    path = sweep_file(tmp_path, tiny_data, parameters=parameters, method=method)
    out = tmp_path / "sweep"
    err = _one_line_error(capsys, ["sweep", str(path), "--trials", "2", "--out-dir", str(out)])
    assert expected in err, err
    assert err.count(expected) == 1, err  # said once
    assert not out.exists()


def test_yaml_booleans_are_taken_where_the_command_line_takes_them(tmp_path, tiny_data):
    from hellolondon.config import build_config

    compile_ = {"train.compile": {"values": [True, False]}}  # auto|true|false
    spec = space.load_spec(sweep_file(tmp_path, tiny_data, method="grid", parameters=compile_))
    assert spec.params == {"train.compile": ("train", "compile")}
    for value, setting in ((True, "true"), (False, "false")):
        (arg,) = space.settings_args({"train.compile": value})  # as the trial is given it
        assert build_config("tiny", overrides=[arg]).train.compile == setting


def test_a_folder_given_as_the_sweep_file(capsys, tmp_path):
    err = _one_line_error(capsys, ["sweep", str(tmp_path), "--trials", "2"])
    assert "is a folder, not a sweep file" in err


def test_a_file_that_is_not_yaml_is_named_with_the_place(capsys, tmp_path):
    (tmp_path / "flow.yaml").write_text("name: s\nparameters: [\n")
    err = _one_line_error(capsys, ["sweep", str(tmp_path / "flow.yaml"), "--check"])
    assert "is not valid YAML: expected the node content" in err and "(line 3, column 1)" in err
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    err = _one_line_error(capsys, ["sweep", str(tmp_path / "latin1.yaml"), "--check"])
    assert "latin1.yaml is not a sweep: not UTF-8 text" in err
    # W&B's own examples write command: as lines; in a flow list a bare ${env} is no string
    flow = "name: s\nmethod: grid\ncommand: [${env}, ${interpreter}, -m, hellolondon, train]\n"
    (tmp_path / "macros.yaml").write_text(flow)
    err = _one_line_error(capsys, ["sweep", str(tmp_path / "macros.yaml"), "--check"])
    assert '(line 3, column 12); in a [...] list quote each macro ("${env}")' in err, err


def test_a_metric_training_never_logs(capsys, tmp_path, tiny_data):
    path = sweep_file(tmp_path, tiny_data, metric={"name": "val_loss", "goal": "minimize"})
    err = _one_line_error(capsys, ["sweep", str(path), "--trials", "2"])
    assert "training never logs metric 'val_loss'; did you mean eval/val_loss?" in err
    path = sweep_file(tmp_path, tiny_data, fixed=["train.eval_interval=0"])
    err = _one_line_error(capsys, ["sweep", str(path), "--trials", "2"])
    assert "train.eval_interval=0" in err


def test_command_must_run_our_trainer_with_its_settings(capsys, tmp_path, tiny_data):
    path = sweep_file(
        tmp_path, tiny_data, command=["${env}", "${interpreter}", "train.py", "${args}"]
    )
    err = _one_line_error(capsys, ["sweep", str(path), "--trials", "2"])
    assert "${args_no_hyphens}" in err
    path = sweep_file(tmp_path, tiny_data, fixed=["--run-name", "x"])
    assert "leave --run-name out" in _one_line_error(capsys, ["sweep", str(path), "--trials", "2"])
    path = sweep_file(tmp_path, tiny_data, fixed=["--presett", "slm"])
    assert "not a valid `hellolondon train` line" in _one_line_error(
        capsys, ["sweep", str(path), "--trials", "2"]
    )
    path = sweep_file(tmp_path, tiny_data, fixed=["model.n_layr=2"])  # a setting's own check
    err = _one_line_error(capsys, ["sweep", str(path), "--trials", "2"])
    assert err.startswith(f"error: {path}: command: ") and "model.n_layer" in err


def test_early_terminate_needs_a_metric_logged_during_training(capsys, tmp_path, tiny_data):
    hyperband = {"type": "hyperband", "min_iter": 2, "eta": 2}
    path = sweep_file(tmp_path, tiny_data, metric=None, early_terminate=hyperband)
    err = _one_line_error(capsys, ["sweep", str(path), "--check"])
    assert "early_terminate needs metric" in err and "method random" not in err
    metric = {"name": "best_val_loss", "goal": "minimize"}
    path = sweep_file(tmp_path, tiny_data, metric=metric, early_terminate=hyperband)
    err = _one_line_error(capsys, ["sweep", str(path), "--check"])
    assert "'best_val_loss' is written only once, at the end; use eval/val_loss" in err


def test_a_metric_of_the_summary_reaches_the_engine(tmp_path, tiny_data):
    """best_val_loss is written to the run's summary, not logged row by row: the engine (bayes
    above all) must see it, as it does online in W&B's summary."""
    rows = [{"step": 1, "train/iter": 1, "train/loss": 7.0}]
    seen, lines = _ended_trial(tmp_path, tiny_data, {"name": "best_val_loss", "goal": "minimize"},
                               rows, {"best_val_loss": 6.5, "iterations": 1})  # fmt: skip
    assert seen.summary_metrics == {"best_val_loss": 6.5}
    assert seen.metric_extremum("best_val_loss", "minimum") == 6.5
    assert lines == ["  s-001 finished: best_val_loss 6.5000"]


def _ended_trial(tmp_path, data, metric, rows, summary):
    """A finished trial's run folder with these rows and summary: (what the engine is given
    of it, what the sweep prints of it)."""
    spec = space.load_spec(sweep_file(tmp_path, data, method="bayes", metric=metric))
    folder = SweepFolder(tmp_path / "sweep")
    trial = Trial("s-001", {"train.lr": 1e-3}, "finished")
    run = folder.trial_dir(trial)
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.json").write_text(json.dumps({"train": {"max_iters": summary["iterations"]}}))
    lines: list[str] = []
    driver._report(trial, spec, folder, lines.append)
    return driver.engine_run(folder, trial, spec), lines


@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_a_trial_counts_with_its_last_value_as_in_wandbs_summary(tmp_path, tiny_data, goal):
    """Online, W&B ranks and searches by the run summary's value: the last one logged. The
    offline engine must see the same, not the best along the way (nor the untrained model's
    evaluation at iteration 0, which a `maximize` would pick)."""
    rows = [
        {"step": s, "eval/iter": s, "eval/val_loss": v} for s, v in ((0, 7.6), (5, 5.0), (10, 5.2))
    ]
    seen, lines = _ended_trial(tmp_path, tiny_data, {"name": "eval/val_loss", "goal": goal},
                               rows, {"best_val_loss": 5.0, "iterations": 10})  # fmt: skip
    assert seen.summary_metrics == {"eval/val_loss": 5.2}
    assert [h["eval/val_loss"] for h in seen.history] == [7.6, 5.0, 5.2]  # hyperband's view
    assert lines == ["  s-001 finished: eval/val_loss 5.2000"]


def test_a_sweep_name_that_cannot_name_the_trials_folders(capsys, tmp_path, tiny_data):
    path = sweep_file(tmp_path, tiny_data, name="s")
    path.write_text(path.read_text().replace("name: s\n", "name: lr/warmup\n", 1))
    out = tmp_path / "sweep"
    err = _one_line_error(capsys, ["sweep", str(path), "--trials", "1", "--out-dir", str(out)])
    assert "name 'lr/warmup' names the sweep's folder" in err
    assert not out.exists()


def test_command_is_read_as_the_trainer_reads_it(tmp_path, tiny_data):
    """Settings after a flag that follows settings: the trainer takes them, so must the check."""
    path = sweep_file(tmp_path, tiny_data, fixed=["--wandb-mode", "disabled", "train.seed=3"])
    spec = space.load_spec(path)
    assert spec.base.train.seed == 3 and spec.base.tracking.wandb_mode == "disabled"


def test_a_sweep_folder_that_is_a_file_or_holds_other_things_is_refused(tmp_path):
    (tmp_path / "file").write_text("kept")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("kept")
    for taken in (tmp_path / "file", tmp_path / "full"):
        with pytest.raises(UserError, match="is not a sweep folder; choose another --out-dir"):
            SweepFolder(taken).check_or_create("name: s\n")
    assert (tmp_path / "file").read_text() == "kept"


@pytest.mark.parametrize(
    "text",
    [
        '{"trials": [',
        "[]",
        "null",
        '{"trials": 3}',
        '{"trials": [{"name": "s-001"}]}',
        '{"trials": [{"name": "s-001", "values": {}, "bogus": 1}]}',
        '{"trials": [{"name": "s-001", "values": {}, "state": "weird"}]}',
        '{"trials": [{"name": 1, "values": {}}]}',
    ],
)
def test_a_trials_list_of_another_shape_is_refused_and_kept(tmp_path, text):
    folder = SweepFolder(tmp_path)
    (tmp_path / "trials.json").write_text(text)
    with pytest.raises(UserError, match="trials.json cannot be read; the sweep cannot resume"):
        folder.load()
    assert (tmp_path / "trials.json").read_text() == text


@pytest.mark.parametrize("listed", [None, ["s-001"]], ids=["no-trials-json", "older-copy"])
def test_trial_folders_that_trials_json_does_not_list_are_not_taken_over(
    capsys, tmp_path, tiny_data, monkeypatch, listed
):
    """trials.json deleted, or an older copy put back: a new trial s-002 would 'resume' the
    folder of the s-002 that trials.json no longer lists, under other values."""
    path = sweep_file(tmp_path, tiny_data)
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.yaml").write_text(path.read_text())
    for name in ("s-001", "s-002"):
        (out / "trials" / name).mkdir(parents=True)
        (out / "trials" / name / "config.json").write_text("{}")
    if listed:
        SweepFolder(out).save([Trial(n, {"train.lr": 1e-3}, state="finished") for n in listed])
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    monkeypatch.setattr(driver, "run_trial", lambda *a: pytest.fail("a trial started"))
    err = _one_line_error(capsys, ["sweep", str(path), "--trials", "3", "--out-dir", str(out)])
    listing = "s-001, s-002" if listed is None else "s-002"
    what = "is missing" if listed is None else "does not list them"
    assert err == (
        f"error: {out / 'trials'} holds trials ({listing}) and {out / 'trials.json'} {what}; "
        "the sweep cannot resume: restore trials.json, or move the sweep folder away to start "
        "the sweep again"
    )
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_a_blank_out_dir_is_refused_not_read_as_the_current_folder(
    capsys, tmp_path, tiny_data, monkeypatch
):
    path = sweep_file(tmp_path, tiny_data)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    err = _one_line_error(capsys, ["sweep", str(path), "--trials", "1", "--out-dir", " "])
    assert err == "error: --out-dir is blank; give a path, or leave --out-dir out for the default"
    assert not any(here.iterdir())


def test_a_sweep_file_changed_only_in_comments_and_layout_resumes(tmp_path):
    folder = SweepFolder(tmp_path / "sweep")
    assert folder.check_or_create("name: s\nmethod: grid\n") is False
    assert folder.check_or_create("# tried on Monday\nname: s\nmethod:   grid\n") is True
    with pytest.raises(UserError, match="holds another sweep"):
        folder.check_or_create("name: s\nmethod: random\n")


def test_a_damaged_sweep_yaml_is_named_as_damaged_not_as_another_sweep(tmp_path):
    folder = SweepFolder(tmp_path / "sweep")
    folder.check_or_create("name: s\nmethod: grid\n")
    (tmp_path / "sweep" / "sweep.yaml").write_text('{"broken')
    with pytest.raises(
        UserError, match=r"sweep.yaml is not valid YAML \(damaged\?\); the sweep cannot"
    ):
        folder.check_or_create("name: s\nmethod: grid\n")
    assert (tmp_path / "sweep" / "sweep.yaml").read_text() == '{"broken'


def test_a_ranking_that_fails_mid_write_keeps_the_previous_one(tmp_path):
    folder = SweepFolder(tmp_path)
    folder.write_ranking("trial 1  5.01", {"rows": 1})
    with pytest.raises(UnicodeEncodeError):
        folder.write_ranking("trial 2  \ud800", {"rows": 2})  # fails while the text is written
    assert (tmp_path / "ranking.txt").read_text() == "trial 1  5.01\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranking.json", "ranking.txt"]


def test_of_two_sweeps_started_at_once_on_a_new_folder_the_second_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "s"
    SweepFolder(out).check_or_create("name: a\n")  # the first one created the folder
    looked = []

    def before_the_first(real):  # the second looked before the first had created anything
        def check(path):
            if path in (out, out / "sweep.yaml") and len(looked) < 2:
                looked.append(path)
                return False
            return real(path)

        return check

    monkeypatch.setattr(Path, "is_file", before_the_first(Path.is_file))
    monkeypatch.setattr(Path, "exists", before_the_first(Path.exists))
    with pytest.raises(UserError, match="holds another sweep"):
        SweepFolder(out).check_or_create("name: b\n")
    assert len(looked) == 2 and (out / "sweep.yaml").read_text() == "name: a\n"


def test_one_sweep_process_per_folder_and_a_dead_ones_lock_is_taken_over(tmp_path):
    folder = SweepFolder(tmp_path)
    running = f"already running \\(process {os.getpid()}\\)"
    with folder.locked(), pytest.raises(UserError, match=running), folder.locked():
        pass
    assert not (tmp_path / ".lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (tmp_path / ".lock").write_text(dead)
    with folder.locked():
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_trial_that_finished_after_its_sweep_died_is_not_trained_again(
    tmp_path, tiny_data, monkeypatch
):
    from tinyrun import tiny_config

    from hellolondon.train.loop import train

    lrs = {"values": [1e-3, 2e-3]}
    path = sweep_file(tmp_path, tiny_data, method="grid", parameters={"train.lr": lrs})
    spec = space.load_spec(path)
    folder = SweepFolder(tmp_path / "sweep")
    folder.check_or_create(spec.text)
    for i, lr in enumerate(lrs["values"], 1):
        cfg = tiny_config(
            tiny_data, folder.trials_dir, f"tracking.run_name=s-00{i}", f"train.lr={lr}"
        )
        train(cfg, log=lambda *_: None)
    # the sweep died while s-002 ran; the trial went on to its end on its own
    folder.save(
        [Trial("s-001", {"train.lr": 1e-3}, "finished"), Trial("s-002", {"train.lr": 2e-3})]
    )
    monkeypatch.setattr(driver, "run_trial", lambda *a: pytest.fail("trained again"))
    lines: list[str] = []
    driver.run_sweep(path, out_dir=folder.path, log=lines.append)
    assert [t.state for t in folder.load()] == ["finished", "finished"]
    assert "finished after the sweep had ended" in folder.load()[1].note
    assert RunDir(folder.trials_dir / "s-002").read_summary()["starts"] == 1


def test_missing_data_is_refused_once_before_any_trial(capsys, tmp_path):
    path = sweep_file(tmp_path, tmp_path / "nope")
    out = tmp_path / "sweep"
    err = _one_line_error(capsys, ["sweep", str(path), "--trials", "2", "--out-dir", str(out)])
    assert f"the sweep's data folder {tmp_path / 'nope'} does not exist (--data in its " in err
    assert "start the sweep where that folder is, or change the sweep file" in err
    assert "--data DIR" not in err  # `sweep` has no such flag
    assert not out.exists()


def test_a_swept_setting_wins_over_the_commands_flag_but_not_over_the_sweeps_own(
    capsys, tmp_path, tiny_data
):
    """A trial's values are settings, applied after the flags: `data.data_dir` swept beside
    --data in command: is the data of each trial. The sweep's own --run-name and --group name
    each trial, so a parameter for them is refused."""
    dirs = {"data.data_dir": {"values": [str(tiny_data), str(tmp_path / "other")]}}
    path = sweep_file(tmp_path, tiny_data, method="grid", parameters=dirs)
    assert "--data" in yaml.safe_load(path.read_text())["command"]
    assert space.load_spec(path).params == {"data.data_dir": ("data", "data_dir")}
    out = tmp_path / "sweep"  # each swept folder is checked before a trial starts
    err = _one_line_error(capsys, ["sweep", str(path), "--out-dir", str(out)])
    assert "other does not exist" in err and not out.exists()
    for key, flag in (("tracking.group", "--group"), ("tracking.run_name", "--run-name")):
        names = {key: {"values": ["a", "b"]}}
        path = sweep_file(tmp_path, tiny_data, method="grid", parameters=names)
        err = _one_line_error(capsys, ["sweep", str(path), "--check"])
        assert f"parameter {key!r} is set by the sweep for each trial ({flag})" in err


def test_random_sweep_needs_a_trial_count(capsys, tmp_path, tiny_data):
    path = sweep_file(tmp_path, tiny_data)
    assert "give --trials N" in _one_line_error(capsys, ["sweep", str(path)])


# ------------------------------------------------------------------ the engine's decisions


def test_a_trials_log_has_its_command_quoted_and_without_secrets(tmp_path, tiny_data, monkeypatch):
    import shlex

    monkeypatch.setenv("HF_TOKEN", "plainvalue123")
    notes = ["--notes", "key sk-proj-abcdefghijklmnop1234 and plainvalue123"]
    quick = ["train.max_iters=2", "train.eval_interval=0", "train.ckpt_interval=0"]
    path = sweep_file(
        tmp_path, tiny_data, method="grid", parameters={"train.lr": {"values": [1e-3]}},
        fixed=[*notes, *quick], metric={"name": "train/loss", "goal": "minimize"},
    )  # fmt: skip
    folder = SweepFolder(tmp_path / "sweep")
    lines: list[str] = []
    driver.run_sweep(path, out_dir=folder.path, log=lines.append)
    (trial,) = folder.load()
    text = folder.log_path(trial).read_text()
    assert trial.state == "finished", text
    assert "sk-proj-abcdefghijklmnop1234" not in text and "plainvalue123" not in text
    command = shlex.split(text.splitlines()[0][2:])  # a shell reads it back as one argument
    assert command[command.index("--notes") + 1] == "key *** and ***"
    # one trial: nothing differs, yet the ranking shows the swept value, and counts in English
    ranking = json.loads((folder.path / "ranking.json").read_text())
    assert ranking["settings"] == ["train.lr"]
    said = "\n".join(lines)
    assert (
        "1 trial (1 finished), best first:" in said and "train.lr" in said.split("best first:")[1]
    )


def test_a_trial_that_logged_nothing_is_named_under_the_ranking(tmp_path, tiny_data):
    from tinyrun import tiny_config

    from hellolondon.train.loop import train

    lrs = {"values": [1e-3, 2e-3]}
    spec = space.load_spec(
        sweep_file(tmp_path, tiny_data, method="grid", parameters={"train.lr": lrs})
    )
    folder = SweepFolder(tmp_path / "sweep")
    folder.check_or_create(spec.text)
    cfg = tiny_config(tiny_data, folder.trials_dir, "tracking.run_name=s-001", "train.lr=0.001")
    train(cfg, log=lambda *_: None)
    records = [Trial("s-001", {"train.lr": 1e-3}, "finished"), Trial("s-002", {"train.lr": 2e-3})]
    records[1].state = "failed"  # it died before its first row (a GPU that was not there, say)
    lines: list[str] = []
    table = driver.finish(spec, folder, records, lines.append)
    assert [r.path.name for r in table.runs] == ["s-001"] and table.settings == ["train.lr"]
    assert "2 trials (1 finished, 1 failed), best first:" in "\n".join(lines)
    assert "not ranked: s-002 failed, logged no row (train.lr=0.002)" in lines


def test_the_report_command_under_the_ranking_pastes_into_a_shell(tmp_path, tiny_data):
    spec = space.load_spec(sweep_file(tmp_path, tiny_data))
    folder = SweepFolder(tmp_path / "sweep of é")
    folder.check_or_create(spec.text)
    trial = folder.trials_dir / "s-001"
    trial.mkdir(parents=True)
    rows = [{"step": 5, "train/loss": 6.0}, {"step": 5, "eval/val_loss": 6.2}]
    (trial / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines: list[str] = []
    driver.finish(spec, folder, [Trial("s-001", {"train.lr": 1e-3}, "finished")], lines.append)
    command = lines[-1].split("the trials overlaid: ")[1]
    shell = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {command}"], capture_output=True, text=True, check=True
    )
    assert shell.stdout.splitlines() == ["hellolondon", "report", str(trial)]


def test_grid_trials_count_to_the_grid_size(tmp_path, tiny_data, monkeypatch):
    """`trial i/N`: N is the grid's size (repeated values once) when --trials asks for more."""
    lrs = {"values": [1e-3, 2e-3, 2e-3]}
    path = sweep_file(tmp_path, tiny_data, method="grid", parameters={"train.lr": lrs})
    monkeypatch.setattr(driver, "run_trial", lambda *a: setattr(a[3], "state", "finished"))
    monkeypatch.setattr(driver, "_report", lambda *a: None)
    monkeypatch.setattr(driver, "finish", lambda *a: None)
    for trials in (None, 5, 1):
        lines: list[str] = []
        driver.run_sweep(path, trials=trials, out_dir=tmp_path / f"g{trials}", log=lines.append)
        counts = [line.split()[1] for line in lines if line.startswith("trial ")]
        assert counts == (["1/1"] if trials == 1 else ["1/2", "2/2"])


def test_hyperband_stops_the_trailing_trial(tmp_path, tiny_data):
    """The engine decides from the trials' val loss histories (3 evaluations each)."""
    from tinyrun import tiny_config

    from hellolondon.train.loop import train

    path = sweep_file(
        tmp_path,
        tiny_data,
        early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2},
    )
    spec = space.load_spec(path)
    folder = SweepFolder(tmp_path / "sweep")
    folder.check_or_create(spec.text)
    trials = []
    for i, lr in enumerate((3e-3, 4e-3, 1e-5)):
        name = f"t{i}"
        extra = [f"train.lr={lr}", "train.min_lr=0", "train.eval_interval=4"]
        cfg = tiny_config(tiny_data, folder.trials_dir, f"tracking.run_name={name}", *extra)
        train(cfg, log=lambda *_: None)
        trials.append(Trial(name, {"train.lr": lr}, state="finished" if i < 2 else "running"))
    assert driver.should_stop(spec, folder, trials, trials[2])
    assert not driver.should_stop(
        spec, folder, trials[:2] + [Trial("t0", {}, "running")], trials[0]
    )


def _has_checkpoint(run: Path) -> bool:
    from hellolondon.train.checkpoint import find_resumable

    try:
        find_resumable(run, log=lambda *_: None)
        return True
    except Exception:
        return False


def _wait(predicate, proc, timeout=240.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        assert proc.poll() is None, "the sweep ended before the test could kill it"
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_random_sweep_killed_during_trial_2_resumes_to_3_finished_trials(
    tmp_path, tiny_data, capsys
):

    longer = [
        "train.max_iters=150",
        "train.eval_interval=100",
        "train.ckpt_interval=20",
        "train.log_interval=10",
    ]
    path = sweep_file(tmp_path, tiny_data, name="kr", fixed=longer)
    out = tmp_path / "kr"
    argv = [
        sys.executable,
        "-m",
        "hellolondon",
        "sweep",
        str(path),
        "--trials",
        "3",
        "--out-dir",
        str(out),
    ]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    proc = subprocess.Popen(
        argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    second = out / "trials" / "kr-002"
    try:
        _wait(lambda: _has_checkpoint(second), proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its trial, as a crash would
        proc.wait()
    folder = SweepFolder(out)
    before = folder.load()
    assert [t.state for t in before] == ["finished", "running"]

    assert main(["sweep", str(path), "--trials", "3", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    after = folder.load()
    assert [t.state for t in after] == ["finished"] * 3
    assert after[1].values == before[1].values and "resumed" in after[1].note
    assert "--resume" in folder.log_path(after[1]).read_text()
    assert after[0].values == before[0].values  # not run again
    assert "--resume" not in folder.log_path(after[2]).read_text()  # started after the resume
    from hellolondon.report.rundata import load_run

    steps = load_run(second).series("train/loss")[0]
    assert steps == list(range(10, 151, 10))  # every logged step once, none lost or doubled
    ranking = (out / "ranking.txt").read_text()
    assert ranking.splitlines()[0].startswith("run") and len(ranking.splitlines()) == 4
    assert "best first" in printed and "kr-00" in printed


@pytest.mark.slow
def test_a_trial_killed_on_its_own_is_resumed_by_the_next_run_of_the_sweep(
    tmp_path, tiny_data, capsys
):
    """The OOM killer takes the trial, not the sweep: the trial is "killed", not "failed"."""
    import threading

    longer = ["train.max_iters=150", "train.ckpt_interval=20", "train.log_interval=10"]
    path = sweep_file(tmp_path, tiny_data, name="ok", fixed=longer)
    out = tmp_path / "ok"
    folder = SweepFolder(out)

    def kill_the_trial() -> None:
        end = time.monotonic() + 240
        while not _has_checkpoint(out / "trials" / "ok-001") and time.monotonic() < end:
            time.sleep(0.05)
        os.kill(folder.load()[0].pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_trial)
    killer.start()
    assert main(["sweep", str(path), "--trials", "1", "--out-dir", str(out)]) == 0
    killer.join()
    printed = capsys.readouterr().out
    (trial,) = folder.load()
    assert trial.state == "killed" and "SIGKILL" in trial.note, trial
    assert "ok-001 killed (exit -9): killed by SIGKILL" in printed
    assert main(["sweep", str(path), "--trials", "1", "--out-dir", str(out)]) == 0
    assert "trial ok-001: resuming" in capsys.readouterr().out
    assert [t.state for t in folder.load()] == ["finished"]


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_exits_0_and_the_same_command_goes_on(tmp_path, tiny_data):
    """As `train`: the running trial saves a checkpoint, the sweep says how to go on, exit 0."""

    longer = ["train.max_iters=150", "train.ckpt_interval=20", "train.log_interval=10"]
    path = sweep_file(tmp_path, tiny_data, name="st", fixed=longer)
    out = tmp_path / "st"
    argv = [sys.executable, "-m", "hellolondon", "sweep", str(path), "--trials", "1",
            "--out-dir", str(out)]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait(lambda: _has_checkpoint(out / "trials" / "st-001"), proc)
    proc.send_signal(signal.SIGTERM)  # the sweep alone, as a scheduler would
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert stdout.splitlines()[-2:] == [
        "  st-001 stopped: its checkpoint is where it goes on from",
        "sweep stopped; the same command goes on where it stopped",
    ]
    assert SweepFolder(out).load()[0].state == "running"
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "trial st-001: resuming" in again.stdout
    assert [t.state for t in SweepFolder(out).load()] == ["finished"]


@pytest.mark.slow
def test_bayes_sweep_of_3_trials(tmp_path, tiny_data, capsys):
    path = sweep_file(
        tmp_path,
        tiny_data,
        name="by",
        method="bayes",
        parameters={
            "train.lr": {"distribution": "log_uniform_values", "min": 3e-4, "max": 1e-2},
            "train.warmup_iters": {"min": 0, "max": 4},
        },
    )
    out = tmp_path / "by"
    assert main(["sweep", str(path), "--trials", "3", "--out-dir", str(out)]) == 0
    trials = SweepFolder(out).load()
    assert len(trials) == 3 and all(t.state == "finished" for t in trials)
    assert all(isinstance(t.values["train.warmup_iters"], int) for t in trials)
    # random points until two trials have finished, then the Gaussian process's suggestion
    improvement = [t.search_info["expected_improvement"] for t in trials]
    assert improvement[:2] == [None, None] and isinstance(improvement[2], float), improvement
    lines = (out / "ranking.txt").read_text().splitlines()
    assert len(lines) == 4 and "train.lr" in lines[0]
    # the trials overlaid in one report
    assert (
        main(
            ["report", *map(str, sorted((out / "trials").iterdir())), "--out", str(tmp_path / "r")]
        )
        == 0
    )


@pytest.mark.slow
def test_hyperband_stops_a_trailing_trial_while_it_runs(tmp_path, tiny_data, monkeypatch, capsys):
    monkeypatch.setattr(driver, "POLL_S", 0.05)
    longer = [
        "train.max_iters=100",
        "train.eval_interval=10",
        "train.ckpt_interval=100",
        "train.min_lr=0",
    ]
    path = sweep_file(
        tmp_path,
        tiny_data,
        name="hb",
        method="grid",
        fixed=longer,
        parameters={"train.lr": {"values": [3e-3, 4e-3, 1e-6]}},
        early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2},
    )
    out = tmp_path / "hb"
    assert main(["sweep", str(path), "--out-dir", str(out)]) == 0
    trials = SweepFolder(out).load()
    assert [t.state for t in trials] == ["finished", "finished", "stopped"]
    assert "early_terminate (hyperband) stops it" in capsys.readouterr().out
    from hellolondon.report.rundata import load_run

    stopped = load_run(out / "trials" / "hb-003")
    assert stopped.summary["stopped_early"] and stopped.summary["iterations"] < 100


@pytest.mark.parametrize(
    ("ends", "note"),
    [
        ("print('SIGINT: stopping after this step and saving a checkpoint')", "killed by SIGINT"),
        ("pass", "killed by a signal"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGRTMIN + 6)", "killed by signal 40"),
        ("raise SystemExit(143)", "killed by SIGTERM"),
    ],
    ids=["sigint", "unnamed", "realtime", "shell-sigterm"],
)
def test_a_trial_ended_by_a_signal_on_its_own_names_that_signal(tmp_path, monkeypatch, ends, note):
    """A trial that heeded a signal (saved, summary `stopped by a signal`, exit 0) is named
    with the signal its console gives, not always SIGTERM; one killed by a signal without a
    name does not crash the sweep."""
    from types import SimpleNamespace

    folder = SweepFolder(tmp_path / "s")
    trial = Trial("s-001", {"train.lr": 1e-3})
    run = folder.trial_dir(trial)
    summary = {"iterations": 5, "stop_reason": "stopped by a signal"}
    stops = (
        f"import json, pathlib; p = pathlib.Path({str(run)!r}); p.mkdir(parents=True); "
        "(p / 'config.json').write_text('{}'); "
        "(p / 'metrics.jsonl').write_text(json.dumps({'step': 5, 'train/loss': 5.0}) + '\\n'); "
        f"(p / 'summary.json').write_text(json.dumps({summary!r}))\n{ends}"
    )
    log = folder.log_path(trial)
    log.parent.mkdir(parents=True)
    log.write_text("$ an earlier start\nSIGQUIT: stopping after this step\n")  # not this one's
    monkeypatch.setattr(driver, "trial_command", lambda *_: [sys.executable, "-c", stops])
    driver.run_trial(SimpleNamespace(early_terminate=None), folder, [trial], trial, print)
    assert trial.state == "killed", trial
    assert trial.note == f"{note}; the same sweep command resumes it from its checkpoint"


def test_a_trial_aborted_by_a_second_ctrl_c_is_resumed_like_a_killed_one(tmp_path, monkeypatch):
    """A trial's training aborted by a second SIGINT exits 130 and its run folder records the
    abort: the sweep takes it as killed (resumed by the next run of the sweep), not failed."""
    import socket
    from types import SimpleNamespace

    folder = SweepFolder(tmp_path / "s")
    trial = Trial("s-001", {"train.lr": 1e-3})
    run = folder.trial_dir(trial)
    record = {"pid": 1, "host": socket.gethostname(), "aborted": "by a second Ctrl-C at step 7"}
    aborts = (
        f"import json, pathlib; p = pathlib.Path({str(run)!r}); p.mkdir(parents=True); "
        f"(p / 'process.json').write_text(json.dumps({record!r})); print('interrupted'); "
        "raise SystemExit(130)"
    )
    monkeypatch.setattr(driver, "trial_command", lambda *_: [sys.executable, "-c", aborts])
    spec = SimpleNamespace(early_terminate=None)
    driver.run_trial(spec, folder, [trial], trial, lambda *_: None)
    assert trial.exit_code == 130 and trial.state == "killed", trial
    assert trial.note == (
        "aborted by a second Ctrl-C at step 7; the same sweep command resumes it from its "
        "checkpoint"
    )
