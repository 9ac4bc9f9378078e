"""The folder lock: one process at a time, and nothing stale after a process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hellolondon.files import exclusive_lock

HOLDER = """
import sys, time
from hellolondon.files import exclusive_lock
with exclusive_lock(sys.argv[1], RuntimeError):
    print("held", flush=True)
    time.sleep(60)
"""


class Busy(Exception):
    pass


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_the_file_goes_at_the_end(
    tmp_path,
):
    lock = tmp_path / ".lock"
    with exclusive_lock(lock, Busy):
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(Busy, match=f"^{os.getpid()}$"), exclusive_lock(lock, Busy):
            pass
    assert not lock.exists()
    lock.write_text("12345")  # a file left by some earlier process, not locked by anyone
    with exclusive_lock(lock, Busy):
        assert lock.read_text() == str(os.getpid())


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path):
    lock = tmp_path / ".lock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=f"^{holder.pid}$"), exclusive_lock(lock, Busy):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.exists()  # the file outlives its process, but the kernel's lock does not
    deadline = time.monotonic() + 5
    with exclusive_lock(lock, Busy):
        assert lock.read_text() == str(os.getpid()) and time.monotonic() < deadline


def test_a_folder_made_for_writing_goes_again_when_the_command_leaves_it_empty(tmp_path):
    from hellolondon.files import writing

    new = tmp_path / "new"
    with pytest.raises(RuntimeError), writing(new):
        assert new.is_dir()
        raise RuntimeError("the command failed before its files were in place")
    assert not new.exists()
    with writing(new):
        (new / "tokenizer.json").write_text("{}")
    assert [p.name for p in new.iterdir()] == ["tokenizer.json"]  # what it wrote stays
    mine = tmp_path / "mine"  # a folder the user made is never removed, empty or not
    mine.mkdir()
    with pytest.raises(RuntimeError), writing(mine):
        raise RuntimeError("failed")
    assert mine.is_dir()
    deep = mine / "a" / "b" / "c"  # every missing parent it made goes too, not the user's
    with pytest.raises(RuntimeError), writing(deep):
        assert deep.is_dir()
        raise RuntimeError("stopped")
    assert mine.is_dir() and list(mine.iterdir()) == []
    with pytest.raises(RuntimeError), writing(deep):
        (mine / "a" / "notes.txt").write_text("kept")  # written meanwhile: a/ is no longer empty
        raise RuntimeError("stopped")
    assert [p.name for p in (mine / "a").iterdir()] == ["notes.txt"]


def test_writing_removes_the_temporary_files_a_killed_writer_of_its_outputs_left(tmp_path):
    from hellolondon.files import writing

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone = [".train.bin.tmp", f".tokenizer.json.tmp-{dead.stdout.strip()}"]
    kept = [
        f".tokenizer.json.tmp-{os.getpid()}",  # a live process's atomic write
        ".notes.tmp",  # not a name of the command's
        ".train.bin.tmp.keep",
        "train.bin.tmp",
        ".val.bin.tmp-x",
    ]
    for name in gone + kept:
        (tmp_path / name).write_text("left")
    with writing(tmp_path, ["train.bin", "tokenizer.json"]):
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, ".writing.lock"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
