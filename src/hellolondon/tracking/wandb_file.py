"""W&B's run file (`run-<id>.wandb`), as far as a resume needs it: where its last whole record ends.

The file is W&B's transaction log: a 7-byte header (`:W&B`, magic 0xBEE1, version 0), then
records in 32 KiB blocks, each record one or more fragments behind a 7-byte header (checksum,
length, kind: whole, first, middle or last). W&B writes it a block at a time, so a W&B process
killed mid-run (a SIGKILL, an out-of-memory kill, a lost machine) can leave the first fragments of
a record without the rest. `wandb sync` then stops at that file with "the file ends with an
incomplete record" and uploads none of the later parts of the run, which hold the rows a resume
re-sent. Cutting the unfinished record makes the file whole again: a fragment cannot be read by
anyone, and the rows it held are in `metrics.jsonl`, which the resume sends again.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
FRAGMENT_HEADER = 7
WHOLE, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def whole_records_end(path: Path) -> int | None:
    """The offset where the last whole record of W&B's run file ends, or None when the file is
    not W&B's log or is damaged before its end (a damage that cutting its end would not mend)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if f.read(len(FILE_HEADER)) != FILE_HEADER:
            return None
        pos = end = len(FILE_HEADER)
        while pos < size:
            room = BLOCK - pos % BLOCK
            if room < FRAGMENT_HEADER:  # the block's padding: the next fragment starts a block
                pos += room
                continue
            f.seek(pos)
            head = f.read(FRAGMENT_HEADER)
            if len(head) < FRAGMENT_HEADER:
                return end  # cut inside a fragment's header
            if head == bytes(FRAGMENT_HEADER) and not f.read().strip(b"\0"):
                return end  # zeros to the end: space the killed process never wrote
            _, length, kind = struct.unpack("<IHB", head)
            if kind not in (WHOLE, FIRST, MIDDLE, LAST) or length > room - FRAGMENT_HEADER:
                return None
            if pos + FRAGMENT_HEADER + length > size:
                return end  # cut inside a fragment
            pos += FRAGMENT_HEADER + length
            if kind in (WHOLE, LAST):
                end = pos
        return end


def cut_unfinished_record(path: Path) -> int:
    """Cut the record a killed W&B process left unfinished at the end of its run file, so that
    `wandb sync` reads the file to its end. Returns the bytes cut: 0 for a whole file, and for
    one that is not W&B's log or is damaged elsewhere (left as it is)."""
    try:
        end = whole_records_end(path)
        size = path.stat().st_size
        if end is None or end >= size:
            return 0
        os.truncate(path, end)
    except OSError:
        return 0
    return size - end
