"""Small file helpers shared by the stages: hashing, JSON reading, the one atomic write and the
one lock that keeps a folder to one process."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (checkpoints can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def other_files(folder: str | Path, own: Iterable[str] = ()) -> list[str]:
    """The names in `folder` besides `own` and hidden ones (temporary files start with a dot),
    sorted; [] when it is no folder. A stage writes its files only into a folder of its own."""
    folder, own = Path(folder), set(own)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in own and p.name[0] != ".")


def some_of(names: list[str], most: int = 3) -> str:
    """`a, b, c, ...`: the first few of a list of file names, for a message."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object file; {} when missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """A temporary name beside `path` to write to; on success it replaces `path` in one rename,
    so a reader sees the old file or the new one, never half of one. On failure the temporary
    file is removed and `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def default_mode(path: str | Path) -> None:
    """Give `path` the mode a newly created file gets under the umask (safetensors writes its
    files 0600, unreadable to the group and others unlike every other file of the folder)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_write(path: str | Path, data: str | bytes, fsync: bool = True) -> None:
    """Write text (UTF-8) or bytes to `path` atomically (see `atomic_path`)."""
    with atomic_path(path, fsync) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> None:
    atomic_write(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def exclusive_lock(path: str | Path, refuse: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an exclusive lock on `path`, a small file naming this process, for the block; the
    file is removed at its end. While another process holds it, `refuse(pid)` is raised (the
    pid the holder wrote, "?" if it has not yet). The lock is the kernel's (flock), so a process
    that dies, even by SIGKILL, leaves no stale lock behind; where flock does not exist (not on
    POSIX) the block runs unguarded."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    while True:
        f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held past the loop; closed below)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise refuse(holder) from None
        if _still_named(f.fileno(), path):
            break
        f.close()  # its holder removed the file between our open and our lock: take the new one
    try:
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock goes, so no one locks a removed file
        f.close()


WRITING = ".writing.lock"  # held by the command writing into a folder (see `writing`)


@contextlib.contextmanager
def writing(folder: str | Path, outputs: Iterable[str] = ()) -> Iterator[None]:
    """Held while a command writes its files into `folder` (`tokenizer train`, `prepare`,
    `corpus clean`): a second one writing there at the same time, of any kind, is refused. Once
    held, the temporary files of `outputs` (the names the command writes) that a killed command
    left are removed (`remove_leftovers`). A folder it made is removed again when the command
    leaves it empty (it failed or was stopped before its files were in place), and so is each
    missing parent it made on the way, where that is left empty too."""
    from hellolondon.errors import UserError

    folder = Path(folder)
    with (
        made_folder(folder),
        exclusive_lock(
            folder / WRITING,
            lambda pid: UserError(
                f"{folder} is being written by another hellolondon command (process {pid}); "
                "wait for it to end, or choose another --out"
            ),
        ),
    ):
        remove_leftovers(folder, outputs)
        yield


@contextlib.contextmanager
def made_folder(folder: str | Path, make: bool = True) -> Iterator[None]:
    """Make `folder` and its missing parents for the block (`make=False`: the block makes
    them); each one missing before goes again when the block leaves it empty (a command that
    failed or was stopped before it wrote there)."""
    folder = Path(folder)
    made = [f for f in (folder, *folder.absolute().parents) if not f.exists()]
    try:
        if make:
            folder.mkdir(parents=True, exist_ok=True)
        yield
    finally:
        for path in made:  # the deepest first; only an empty folder goes
            try:
                path.rmdir()
            except OSError:
                break


def remove_leftovers(folder: str | Path, outputs: Iterable[str]) -> list[str]:
    """Remove what a writer of `outputs` killed mid-write (SIGKILL, a power cut) left in `folder`:
    `.NAME.tmp` and `atomic_path`'s `.NAME.tmp-PID` of a process no longer alive. Nothing else
    goes: not a file of another name, not a live process's. The caller holds the folder's
    `writing` lock, so no other command is writing these names. Returns the names removed."""
    folder, removed = Path(folder), []
    for path, pid in _temporary_files(folder, outputs):
        if pid is None or not process_alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return sorted(removed)


def others_temporary_files(folder: str | Path, own: Iterable[str]) -> list[str]:
    """The temporary files (`.NAME.tmp`, and `.NAME.tmp-PID` from `atomic_path`) in `folder` of
    a NAME not in `own`: another writer's, a live one's or a killed one's; sorted."""
    folder, own = Path(folder), set(own)
    if not folder.is_dir():
        return []
    pattern = re.compile(r"\.(.+)\.tmp(?:-\d+)?")
    found = (p for p in folder.iterdir() if (m := pattern.fullmatch(p.name)) and m[1] not in own)
    return sorted(p.name for p in found if p.is_file())


def _temporary_files(folder: Path, outputs: Iterable[str]) -> Iterator[tuple[Path, int | None]]:
    for name in outputs:
        pattern = re.compile(rf"\.{re.escape(name)}\.tmp(?:-(\d+))?")
        for path in folder.glob(f".{glob.escape(name)}.tmp*"):
            match = pattern.fullmatch(path.name)
            if match and path.is_file():
                yield path, int(match[1]) if match[1] else None


def process_alive(pid: int) -> bool:
    """A live process `pid` that is a Python (a recycled pid of another program is not ours):
    a training run's, a sweep's that holds its folder's lock, a command's writing a file."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # alive, another user's
    except OSError:
        return False
    try:
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes().lower()
    except OSError:
        return True  # no /proc (macOS): alive is all we can tell


def check_writable_folder(folder: Path, setting: str, fix: str) -> None:
    """Create `folder` and write a file there now, before long work that would otherwise fail at
    its end (or deep inside a library) on a folder it cannot create or write."""
    import tempfile

    from hellolondon.errors import UserError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(
            f"{setting} folder {folder} cannot be created or written ({exc.strerror or exc}); {fix}"
        ) from None


def unwritable(path: str | Path) -> str | None:
    """Why a folder could not be made or written at `path`, leaving nothing behind: its nearest
    existing part is a file, on a read-only file system, not writable, or takes no new folder;
    None when it can. The permission bits do not tell everything (root passes them, a special
    file system such as /proc takes no new folder), so an empty folder is made there and
    removed."""
    made = next(p for p in (Path(path), *Path(path).absolute().parents) if p.exists())
    if not made.is_dir():
        return f"{made} is a file, not a folder"
    if not os.access(made, os.W_OK | os.X_OK):
        read_only = os.statvfs(made).f_flag & os.ST_RDONLY
        return f"{made} is on a read-only file system" if read_only else f"{made} is not writable"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hellolondon-check-", dir=made))
    except OSError as exc:
        return f"{made} takes no new folder: {exc.strerror}"
    return None


def _still_named(fd: int, path: Path) -> bool:
    try:
        here, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (named.st_dev, named.st_ino)
