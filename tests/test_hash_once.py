"""The token files are hashed once per training start: `train --config RUN/config.json --gpus N`
checks them against the record in the launcher, and rank 0 takes that hash while the files are
the ones hashed, else hashes them itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from tinyrun import TINY_MODEL, TINY_TRAIN

from hellolondon.cli import main
from hellolondon.prepare import hash_token_files
from hellolondon.provenance import HashInBackground
from hellolondon.report.rundata import load_run
from hellolondon.train import torchrun

QUICK = ["--wandb-mode", "disabled", "train.max_iters=1", "train.eval_interval=0"]


@pytest.fixture
def data(tiny_data, tmp_path) -> Path:
    """A copy of the prepared folder, free to be edited."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def _edit(data: Path) -> None:
    with open(data / "train.bin", "r+b") as f:
        f.seek(64)
        f.write(b"\x07\x00")


def _edit_keeping_mtime(data: Path) -> None:
    before = (data / "train.bin").stat()
    time.sleep(0.05)  # past the file system clock's tick, so that the change time moves
    _edit(data)
    os.utime(data / "train.bin", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (data / "train.bin").stat().st_mtime_ns == before.st_mtime_ns


def test_a_note_is_taken_while_the_files_are_the_ones_hashed(data):
    note = HashInBackground(data).note()
    assert note["tokens_fingerprint"] == hash_token_files(data)
    taken = HashInBackground(data, note=json.loads(json.dumps(note)))  # as a file hands it on
    assert taken._thread is None and taken.result() == note["tokens_fingerprint"]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda data, note: _edit(data),  # rewritten in place: same size, new times
        lambda data, note: _edit_keeping_mtime(data),  # and its mtime set back by hand
        lambda data, note: note.update(data_dir=str(data.parent)),  # another folder
        lambda data, note: note.update(files=note["files"][:1]),
        lambda data, note: note.update(tokens_fingerprint=None),
    ],
    ids=["edited", "mtime-set-back", "other-folder", "odd-shape", "no-fingerprint"],
)
def test_a_note_that_does_not_fit_the_files_is_not_trusted(data, spoil):
    note = HashInBackground(data).note()
    note["tokens_fingerprint"] = "0" * 64  # what a stale or forged note would say
    spoil(data, note)
    taken = HashInBackground(data, note=note)
    assert taken.result() == hash_token_files(data)  # hashed again, as it is now


def test_a_file_changed_while_it_was_hashed_gives_no_note(data, monkeypatch):
    real = hash_token_files

    def hash_then_edit(folder):
        value = real(folder)
        _edit(Path(folder))
        return value

    monkeypatch.setattr("hellolondon.prepare.hash_token_files", hash_then_edit)
    hashing = HashInBackground(data)
    assert hashing.result() is not None and hashing.note() is None


def _recorded_run(data: Path, out: Path) -> str:
    argv = ["train", "--data", str(data), "--out-dir", str(out), "--run-name", "r"]
    assert main([*argv, *TINY_MODEL, *TINY_TRAIN, *QUICK]) == 0
    return str(out / "r" / "config.json")


def _rank_zero_in_process(before_rank=lambda: None):
    """A stand-in for torchrun: rank 0's own command, run here while the launcher waits."""

    def run_child(cmd: list[str], env: dict[str, str]) -> tuple[int, None]:
        before_rank()
        rank_args = cmd[cmd.index("hellolondon") + 1 :]
        return main(rank_args), None

    return run_child


@pytest.mark.parametrize("edited_before_rank", [False, True])
def test_train_config_with_gpus_reads_the_token_files_once(
    data, tmp_path, monkeypatch, capsys, edited_before_rank
):
    config = _recorded_run(data, tmp_path)
    real, hashed = hash_token_files, []
    monkeypatch.setattr(
        "hellolondon.prepare.hash_token_files", lambda d: hashed.append(d) or real(d)
    )
    edit = (lambda: _edit(data)) if edited_before_rank else (lambda: None)
    monkeypatch.setattr(torchrun, "_run_child", _rank_zero_in_process(edit))
    handed = tmp_path / "handed"  # where the launcher's files for the ranks go
    handed.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(handed))
    argv = ["train", "--config", config, "--gpus", "2", "--run-name", "c", *QUICK, "device=cpu"]
    assert main(argv) == 0
    assert "--hashed-tokens" in capsys.readouterr().out  # the torchrun command it printed
    # the launcher hashed them for its check; rank 0 again only where they changed since
    assert len(hashed) == (2 if edited_before_rank else 1)
    recorded = load_run(tmp_path / "c").config["reproduce"]["data"]["tokens_fingerprint"]
    assert recorded == real(data)
    assert not list(handed.iterdir())  # removed once the ranks ended


SITECUSTOMIZE = """
import os
import hellolondon.prepare as prepare

_real = prepare.hash_token_files


def _logged(data_dir):
    with open(os.environ["HASH_LOG"], "a") as f:
        f.write(f"{os.getpid()} {os.environ.get('RANK', 'launcher')}\\n")
    return _real(data_dir)


prepare.hash_token_files = _logged
"""


@pytest.mark.slow
def test_two_gloo_ranks_started_from_a_recorded_config_hash_the_data_once(data, tmp_path):
    config = _recorded_run(data, tmp_path)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "hashes.log"
    path = os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "HASH_LOG": str(log), "OMP_NUM_THREADS": "1"}
    argv = ["train", "--config", config, "--gpus", "2", "--run-name", "c", *QUICK, "device=cpu"]
    done = subprocess.run(
        [sys.executable, "-m", "hellolondon", *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(DDP on cpu)" in done.stdout  # two ranks with a process group (gloo)
    assert log.read_text().split()[1::2] == ["launcher"]  # rank 0 took the launcher's hash
    recorded = load_run(tmp_path / "c").config["reproduce"]["data"]["tokens_fingerprint"]
    assert recorded == hash_token_files(data)
