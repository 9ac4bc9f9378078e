"""A W&B process killed mid-run can leave its run file ending in an unfinished record; `wandb sync`
then stops at that file and uploads none of the later parts. A resume cuts that record, so the
printed `wandb sync` command uploads every part of the run."""

from __future__ import annotations

import glob
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_testkit import FAKE_KEY, WorkingWandb, drive, offline_dirs, sealed_env

from hellolondon.tracking.wandb_file import (
    BLOCK,
    FILE_HEADER,
    FIRST,
    LAST,
    MIDDLE,
    WHOLE,
    cut_unfinished_record,
    whole_records_end,
)


def framed(records: list[bytes]) -> tuple[bytes, list[int]]:
    """W&B's log framing of `records` (fragments never cross a 32 KiB block), and the offset
    where each record ends."""
    out, ends = bytearray(FILE_HEADER), []
    for record in records:
        rest, first = record, True
        while True:
            room = BLOCK - len(out) % BLOCK
            if room < 7:
                out += bytes(room)
                continue
            part, rest = rest[: room - 7], rest[room - 7 :]
            kind = (WHOLE if not rest else FIRST) if first else (LAST if not rest else MIDDLE)
            out += struct.pack("<IHB", 0, len(part), kind) + part
            first = False
            if not rest:
                break
        ends.append(len(out))
    return bytes(out), ends


RECORDS = [b"a" * 100, b"b" * 40_000, b"c" * 20_000, b"d" * 10]  # the second spans two blocks


def test_a_whole_file_is_left_as_it_is(tmp_path):
    data, ends = framed(RECORDS)
    path = tmp_path / "run-x.wandb"
    path.write_bytes(data)
    assert whole_records_end(path) == ends[-1] == len(data)
    assert cut_unfinished_record(path) == 0 and path.read_bytes() == data


@pytest.mark.parametrize(
    "torn",
    [
        pytest.param(lambda data, ends: data[: ends[-1] - 3], id="inside-a-fragment"),
        pytest.param(lambda data, ends: data[: ends[-2] + 4], id="inside-a-fragment-header"),
        pytest.param(lambda data, ends: data[:BLOCK], id="first-fragment-fills-its-block"),
        pytest.param(lambda data, ends: data + bytes(3000), id="zeros-never-written"),
    ],
)
def test_an_unfinished_last_record_is_cut_back_to_the_last_whole_one(torn, tmp_path):
    data, ends = framed(RECORDS)
    path = tmp_path / "run-x.wandb"
    path.write_bytes(torn(data, ends))
    whole = max(e for e in [len(FILE_HEADER), *ends] if e <= len(path.read_bytes()))
    size = len(path.read_bytes())
    assert size > whole
    assert cut_unfinished_record(path) == size - whole
    assert path.read_bytes() == data[:whole]


def test_a_file_that_is_not_wandbs_or_is_damaged_before_its_end_is_not_touched(tmp_path):
    data, ends = framed(RECORDS)
    damaged = bytearray(data[: ends[-1] - 3])
    damaged[ends[0] + 6] = 9  # a fragment of a kind that does not exist, mid-file
    for name, content in [("other.wandb", b"not a W&B file at all"), ("bad.wandb", damaged)]:
        path = tmp_path / name
        path.write_bytes(bytes(content))
        assert cut_unfinished_record(path) == 0 and path.read_bytes() == bytes(content)


def test_wandbs_own_files_are_read_as_whole(tmp_path):
    env = sealed_env(tmp_path)
    run_dir = tmp_path / "runs" / "w"
    run_dir.parent.mkdir()
    out = drive(run_dir, env, 60)
    assert out.returncode == 0, out.stderr
    (path,) = offline_dirs(run_dir)[0].glob("*.wandb")
    assert whole_records_end(path) == path.stat().st_size


def test_after_a_torn_part_the_printed_sync_uploads_every_part(tmp_path):
    server = WorkingWandb()
    env = sealed_env(tmp_path)
    run_dir = tmp_path / "runs" / "t"
    run_dir.parent.mkdir()
    first = drive(run_dir, env, 60, stop=50)
    assert first.returncode == 0, first.stderr
    (path,) = offline_dirs(run_dir)[0].glob("*.wandb")
    path.write_bytes(path.read_bytes()[:-3])  # its last record unfinished, as a killed wandb-core
    second = drive(run_dir, env, 60, start=60, stop=80, resume=first.result["run_id"])
    assert second.returncode == 0, second.stderr
    cut = [line for line in second.lines() if "unfinished" in line]
    assert len(cut) == 1
    assert cut[0].startswith(f"wandb: runs/t/wandb/{offline_dirs(run_dir)[0].name} ended in a")

    command = [line for line in second.lines() if "upload it with: " in line][-1]
    words = shlex.split(command.split("upload it with: ")[1])
    assert words[:2] == ["wandb", "sync"]
    parts = sorted(glob.glob(str(tmp_path / words[2])))
    env.update(WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=server.url)
    try:
        synced = subprocess.run(
            [sys.executable, "-m", "wandb", "sync", *parts],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "incomplete record" not in synced.stderr, synced.stderr
        assert server.steps() == list(range(0, 81, 10)) and server.exitcode == 0
    finally:
        server.close()
    assert all(any(Path(p).glob("*.wandb.synced")) for p in parts) and len(parts) == 2
