"""A run records what it takes to run it again; `reproduce` runs it again and names what changed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tinyrun import TINY_MODEL, TINY_TRAIN

from hellolondon import provenance
from hellolondon.cli import main
from hellolondon.prepare import hash_token_files, load_meta
from hellolondon.report.rundata import load_run


def _losses(run_dir) -> list[tuple[int, float]]:
    steps, values = load_run(run_dir).series("train/loss")
    return list(zip(steps, values, strict=True))


def _train(data, out, name, *extra) -> None:
    argv = ["train", "--data", str(data), "--out-dir", str(out), "--run-name", name]
    assert main([*argv, *TINY_MODEL, *TINY_TRAIN, *extra]) == 0


def test_prepare_records_the_token_files_fingerprint(tiny_data):
    meta = load_meta(tiny_data)
    assert meta["tokens_fingerprint"] == hash_token_files(tiny_data)


def test_run_config_records_reproduction_facts(tiny_data, tmp_path, monkeypatch):
    secret = "hf_" + "x" * 34
    monkeypatch.setenv("HF_TOKEN", secret)
    argv = ["train", "--data", str(tiny_data), "--out-dir", str(tmp_path), "--run-name", "a"]
    argv += [*TINY_MODEL, *TINY_TRAIN, f"tracking.notes=token {secret}"]
    monkeypatch.setattr("sys.argv", ["hellolondon", *argv])
    assert main(argv) == 0
    facts = load_run(tmp_path / "a").config["reproduce"]
    assert facts["hellolondon_version"]
    assert facts["packages"]["torch"] and facts["packages"]["python"]
    assert {"cuda", "cudnn", "nccl", "wandb", "tokenizers"} <= set(facts["packages"])
    assert facts["command"].startswith("hellolondon train --data")
    assert "--run-name a" in facts["command"] and "***" in facts["command"]
    assert facts["data"]["tokens_fingerprint"] == load_meta(tiny_data)["tokens_fingerprint"]
    assert facts["data"]["tokenizer_fingerprint"] == load_meta(tiny_data)["tokenizer_fingerprint"]
    assert facts["seeds"]["seed"] == 1337
    assert facts["host"]
    assert secret not in json.dumps(load_run(tmp_path / "a").config)


def test_git_facts_outside_a_checkout(tmp_path):
    assert provenance.git_facts(tmp_path) is None


def test_reproduced_run_logs_identical_losses(tiny_data, tmp_path, capsys):
    _train(tiny_data, tmp_path, "first")
    capsys.readouterr()
    assert main(["reproduce", str(tmp_path / "first"), "--run-name", "again"]) == 0
    out = capsys.readouterr().out
    assert "match the recorded run" in out
    first, again = _losses(tmp_path / "first"), _losses(tmp_path / "again")
    assert len(first) == 12 and first == again
    # train --config <the recorded config> does the same
    recorded = tmp_path / "first" / "config.json"
    assert main(["train", "--config", str(recorded), "--run-name", "third"]) == 0
    assert _losses(tmp_path / "third") == first


def test_reproduce_from_another_folder(tiny_data, tmp_path, monkeypatch, capsys):
    """The run recorded relative paths (data, out_dir); reproduced from elsewhere, it still
    finds its data and puts the new run beside itself."""
    monkeypatch.chdir(tmp_path)
    _train(
        os.path.relpath(tiny_data), "runs", "first", "train.max_iters=3", "train.eval_interval=0"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["reproduce", str(tmp_path / "runs" / "first"), "--run-name", "again"]) == 0
    assert "match the recorded run" in capsys.readouterr().out
    assert _losses(tmp_path / "runs" / "again") == _losses(tmp_path / "runs" / "first")
    assert list(elsewhere.iterdir()) == []
    # train --config with the recorded config finds the data the same way
    recorded = tmp_path / "runs" / "first" / "config.json"
    assert main(["train", "--config", str(recorded), "--run-name", "copy"]) == 0
    assert "match the recorded run" in capsys.readouterr().out
    assert _losses(elsewhere / "runs" / "copy") == _losses(tmp_path / "runs" / "first")
    shutil.rmtree(elsewhere / "runs")
    # from the folder it was started in, the settings stay as given: nothing to compare
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "runs/first", "--run-name", "third"]) == 0
    capsys.readouterr()
    assert main(["compare", "runs/first", "runs/third", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"] == []


def test_a_sweep_trial_is_reproduced_beside_its_sweep_not_inside_it(tiny_data, tmp_path, capsys):
    sweep = tmp_path / "sweep-s"
    (sweep / "trials").mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("name: s\n")
    _train(tiny_data, sweep / "trials", "s-001", "train.max_iters=2", "train.eval_interval=0",
           "tracking.group=s")  # fmt: skip
    capsys.readouterr()
    assert main(["reproduce", str(sweep / "trials" / "s-001"), "--run-name", "again"]) == 0
    assert sorted(p.name for p in (sweep / "trials").iterdir()) == ["s-001"]
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["tracking"]["group"] == ""  # not one more member of the sweep's group
    assert _losses(tmp_path / "again") == _losses(sweep / "trials" / "s-001")


def test_changed_data_is_reported_before_training(tiny_data, tmp_path, capsys):
    _train(tiny_data, tmp_path, "first", "train.max_iters=3", "train.eval_interval=0")
    changed = tmp_path / "data"
    shutil.copytree(tiny_data, changed)
    with open(changed / "train.bin", "r+b") as f:  # same size, other tokens
        f.seek(64)
        f.write(b"\x07\x00")
    capsys.readouterr()
    args = ["reproduce", str(tmp_path / "first"), "--data", str(changed), "--run-name", "b"]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    warn = next(i for i, line in enumerate(lines) if "token files fingerprint" in line)
    first_step = next(i for i, line in enumerate(lines) if line.startswith("iter "))
    assert warn < first_step
    assert "changed after `prepare` wrote them" in out
    # --strict refuses: one line, nothing started
    code = main([*args[:-1], "strict-run", "--strict"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "token files" in err
    assert not (tmp_path / "strict-run").exists()


def test_a_run_records_the_token_files_it_trained_on_not_their_meta(tiny_data, tmp_path, capsys):
    edited = tmp_path / "edited"
    shutil.copytree(tiny_data, edited)
    with open(edited / "train.bin", "r+b") as f:  # after `prepare`: meta.json no longer fits
        f.seek(64)
        f.write(b"\x07\x00")
    _train(edited, tmp_path, "r", "train.max_iters=2", "train.eval_interval=0")
    out = capsys.readouterr().out
    assert f"warning: the token files in {edited} are not as `prepare` wrote them" in out
    data = load_run(tmp_path / "r").config["reproduce"]["data"]
    assert data["tokens_fingerprint"] == hash_token_files(edited)
    assert data["recorded_in_meta"] == load_meta(edited)["tokens_fingerprint"]
    # the untouched files are not what it trained on, though meta.json says the same of both
    assert main(["reproduce", str(tmp_path / "r"), "--data", str(tiny_data), "--check"]) == 0
    assert "data: token files fingerprint" in capsys.readouterr().out
    assert main(["reproduce", str(tmp_path / "r"), "--check"]) == 0  # the files it trained on
    out = capsys.readouterr().out
    assert "token files fingerprint" not in out and "changed after `prepare`" in out


def test_reproduce_and_train_config_read_the_token_files_once(
    tiny_data, tmp_path, capsys, monkeypatch
):
    # once for the comparison with the record and for the new run's record (gigabytes: seconds)
    edited = tmp_path / "edited"
    shutil.copytree(tiny_data, edited)
    with open(edited / "train.bin", "r+b") as f:
        f.seek(64)
        f.write(b"\x07\x00")
    _train(edited, tmp_path, "r", "train.max_iters=1", "train.eval_interval=0")
    capsys.readouterr()
    real, hashed = hash_token_files, []
    monkeypatch.setattr(
        "hellolondon.prepare.hash_token_files", lambda d: hashed.append(d) or real(d)
    )
    again = ["--wandb-mode", "disabled", "train.max_iters=1", "train.eval_interval=0"]
    assert main(["reproduce", str(tmp_path / "r"), "--run-name", "b", *again]) == 0
    config = str(tmp_path / "r" / "config.json")
    assert main(["train", "--config", config, "--run-name", "c", *again]) == 0
    assert hashed == [str(edited), str(edited)]  # one a command
    out = capsys.readouterr().out
    assert out.count("not as `prepare` wrote them") == 2  # what is said and recorded is as before
    for name in ("b", "c"):
        data = load_run(tmp_path / name).config["reproduce"]["data"]
        assert data["tokens_fingerprint"] == real(edited)
        assert data["recorded_in_meta"] == load_meta(edited)["tokens_fingerprint"]


def test_train_config_reads_the_recorded_config_once(tiny_data, tmp_path, capsys, monkeypatch):
    # for its settings, the check against the record and the recorded global batch
    _train(tiny_data, tmp_path, "r", "train.max_iters=1", "train.eval_interval=0")
    config = tmp_path / "r" / "config.json"
    real, reads = Path.read_text, []
    monkeypatch.setattr(Path, "read_text", lambda p, *a, **k: reads.append(p) or real(p, *a, **k))
    again = ["--wandb-mode", "disabled", "train.max_iters=1", "train.eval_interval=0"]
    assert main(["train", "--config", str(config), "--run-name", "c", *again]) == 0
    assert [p for p in reads if p.resolve() == config.resolve()] == [config]
    out = capsys.readouterr().out
    assert "reproduce: code, packages and data match the recorded run" in out  # still checked
    assert load_run(tmp_path / "c").config["train"]["max_iters"] == 1


def test_data_moved_since_the_run_is_said_with_what_to_do(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    _train(data, tmp_path, "r", "train.max_iters=1", "train.eval_interval=0")
    data.rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["reproduce", str(tmp_path / "r"), "--check"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: the data folder {tmp_path / 'r'} trained on, {data}, is not there any more "
        "(moved or deleted); give where it is now with --data DIR"
    )
    moved = ["reproduce", str(tmp_path / "r"), "--data", str(tmp_path / "moved"), "--check"]
    assert main(moved) == 0
    assert main(["train", "--config", str(tmp_path / "r" / "config.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: data folder {data} does not exist; give the folder")


def test_a_run_of_several_processes_is_run_again_with_its_global_batch(tiny_data, tmp_path, capsys):
    _train(tiny_data, tmp_path, "r", "train.max_iters=1", "train.eval_interval=0")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    config["hardware"]["world_size"] = 2  # as `train --gpus 2` records it: 4 x 1 x 2 processes
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    for argv in (
        ["reproduce", str(tmp_path / "r"), "--run-name", "again"],
        ["train", "--config", str(tmp_path / "r" / "config.json"), "--run-name", "same"],
    ):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert (
            "the recorded run trained on 2 processes: its global batch of 8 sequences is kept"
            in out
        )
        assert "global batch: 4 x 2 accumulation x 1 process = 8 sequences" in out
    # a grad_accum given is obeyed: the user's choice, not the record's
    assert main(["reproduce", str(tmp_path / "r"), "--run-name", "mine", "train.grad_accum=1"]) == 0
    out = capsys.readouterr().out
    assert "is kept" not in out and "global batch: 4 x 1 accumulation x 1 process" in out


def test_differences_name_what_changes_float_rounding_on_a_cpu():
    base = {"cpu_threads": 2, "env": {}, "gpu_names": []}
    assert provenance.differences(base, base) == []
    now = {"cpu_threads": 1, "env": {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "1"}}
    assert provenance.differences(base, now | {"gpu_names": []}) == [
        "hardware: 2 CPU threads recorded, 1 now (on a CPU the thread count changes float "
        "rounding, so the losses in their last digits)",
        "environment: OMP_NUM_THREADS=(unset) recorded, OMP_NUM_THREADS=1 now",
    ]  # which GPU is visible is not a difference of numerics; the GPUs' names are
    on_gpu = {"cpu_threads": 8, "env": {}, "gpu_names": ["NVIDIA H200"]}
    assert provenance.differences(on_gpu, on_gpu | {"cpu_threads": 16}) == []


def test_differences_name_the_uncommitted_changes_on_both_sides():
    clean = {"commit": "a" * 40, "dirty": False, "diff_sha256": None, "changed_files": []}
    dirty = {"commit": "a" * 40, "dirty": True, "diff_sha256": "d1", "changed_files": ["README.md"]}
    found = provenance.differences({"git": dirty}, {"git": clean})
    assert found == ["code: uncommitted changes recorded in README.md, now in no file"]
    other = dirty | {"diff_sha256": "d2"}
    assert provenance.differences({"git": dirty}, {"git": other}) == [
        "code: uncommitted changes recorded in README.md, now in README.md (other changes to "
        "the same files)"
    ]
    assert provenance.differences({"git": dirty}, {"git": dirty}) == []
    moved = clean | {"commit": "b" * 40}  # another commit too: both said
    assert provenance.differences({"git": dirty}, {"git": moved}) == [
        "code: commit aaaaaaaaaaaa recorded, bbbbbbbbbbbb now",
        "code: uncommitted changes recorded in README.md, now in no file",
    ]


def test_a_resumed_run_keeps_its_first_start_on_record(tiny_data, tmp_path, monkeypatch, capsys):
    first = ["train", "--data", str(tiny_data), "--out-dir", str(tmp_path), "--run-name", "r"]
    first += [*TINY_MODEL, *TINY_TRAIN, "train.max_iters=6"]
    monkeypatch.setattr("sys.argv", ["hellolondon", *first])
    assert main(first) == 0
    run = tmp_path / "r"
    started = load_run(run).config["reproduce"]
    again = ["train", "--resume", str(run)]
    monkeypatch.setattr("sys.argv", ["hellolondon", *again])
    assert main(again) == 0  # the same settings: nothing to warn about
    facts = load_run(run).config["reproduce"]
    assert facts["command"] == started["command"] and "--run-name r" in facts["command"]
    assert facts["git"] == started["git"] and facts["data"] == started["data"]
    (resume,) = facts["resumes"]
    assert resume["from_iteration"] == 6 and resume["command"].endswith(f"--resume {run}")
    assert "settings_changed" not in resume
    capsys.readouterr()
    assert main(["reproduce", str(run), "--check"]) == 0
    assert "match the recorded run" in capsys.readouterr().out
    # resumed with more iterations: the schedule of its first part is not that of one run
    longer = [*again, "train.max_iters=12"]
    monkeypatch.setattr("sys.argv", ["hellolondon", *longer])
    assert main(longer) == 0
    facts = load_run(run).config["reproduce"]
    assert [r["from_iteration"] for r in facts["resumes"]] == [6, 6]
    assert facts["resumes"][1]["settings_changed"] == {"train.max_iters": [6, 12]}
    capsys.readouterr()
    assert main(["reproduce", str(run), "--check"]) == 0
    out = capsys.readouterr().out
    assert "resumed: from iteration 6 the run went on with train.max_iters=12 (was 6)" in out
    assert main(["reproduce", str(run), "--check", "--strict"]) == 2
    assert "--strict was given: resumed: from iteration 6" in capsys.readouterr().err


def test_differences_name_a_resume_on_other_code():
    first = {
        "hellolondon_version": "0.1.0",
        "git": {"commit": "a" * 40, "dirty": False, "diff_sha256": None},
        "packages": {"torch": "2.13.0"},
        "data": {"tokens_fingerprint": "t" * 64, "tokenizer_fingerprint": "k" * 64},
    }
    resume = json.loads(json.dumps(first)) | {"from_iteration": 300}
    resume["git"] = {"commit": "b" * 40, "dirty": True, "diff_sha256": "d"}
    resume["packages"]["torch"] = "2.14.0"
    recorded = first | {"resumes": [resume]}
    (line,) = provenance.differences(recorded, first)
    assert line.startswith("resumed: from iteration 300 the run went on with commit bbbbbbbbbbbb")
    assert "torch 2.14.0" in line
    assert provenance.differences(first | {"resumes": [first | {"from_iteration": 3}]}, first) == []


def test_a_run_without_a_readable_config(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "train/loss": 5.0}\n')
    assert main(["reproduce", str(run)]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    for text, said in [
        ("{", "is not valid JSON (truncated or damaged)"),
        ("[1]", "is not a JSON object"),
        ('{"train": 3}', "has a `train` that is not an object"),
        ("{}", "is empty"),
    ]:
        (run / "config.json").write_text(text)
        assert main(["reproduce", str(run)]) == 2
        assert f"config.json {said}: the recorded settings" in capsys.readouterr().err


def test_a_checkpoint_given_for_a_run_names_its_run(trained_run, capsys):
    best = trained_run / "checkpoints" / "best"
    assert main(["reproduce", str(best)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {best} is a checkpoint of a run; give the run folder: {trained_run}\n"


def test_differences_name_code_and_packages():
    base = {
        "hellolondon_version": "0.1.0",
        "git": {"commit": "a" * 40, "dirty": False, "diff_sha256": None},
        "packages": {"torch": "2.13.0", "python": "3.11.7"},
        "data": {"tokens_fingerprint": "t" * 64, "tokenizer_fingerprint": "k" * 64},
    }
    now = json.loads(json.dumps(base))
    assert provenance.differences(base, now) == []
    now["git"] = {"commit": "b" * 40, "dirty": True, "diff_sha256": "d", "changed_files": ["x.py"]}
    now["packages"]["torch"] = "2.14.0"
    now["data"]["tokenizer_fingerprint"] = "z" * 64
    found = "\n".join(provenance.differences(base, now))
    assert "commit aaaaaaaaaaaa recorded, bbbbbbbbbbbb now" in found
    assert "torch 2.13.0 recorded, 2.14.0 now" in found
    assert "tokenizer fingerprint" in found


def test_new_commands_have_help_with_examples(capsys):
    for cmd in ("reproduce", "compare", "sweep"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_a_reproduction_record_edited_into_another_shape_is_no_crash(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"reproduce": "x"}))
    assert main(["reproduce", str(run), "--check"]) == 0
    out, err = capsys.readouterr()
    assert "recorded no reproduction facts" in out + err and "Error" not in out + err


@pytest.mark.parametrize(
    "edit, named",
    [
        ({"git": "x"}, 'reproduce.git is "x", not an object'),
        ({"data": [1]}, "reproduce.data is [1], not an object"),
        ({"resumes": [1]}, "reproduce.resumes[0] is 1, not an object"),
        ({"resumes": [{"packages": 3}]}, "reproduce.resumes[0].packages is 3"),
        ({"resumes": [{"settings_changed": {"train.lr": 1}}]}, "settings_changed.train.lr is 1"),
    ],
)
def test_a_fact_of_the_wrong_kind_in_the_record_is_one_line(
    trained_run, tmp_path, capsys, edit, named
):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text())
    config["reproduce"] |= edit
    (run / "config.json").write_text(json.dumps(config))
    assert main(["reproduce", str(run), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1 and "Traceback" not in err
