"""What it takes to run a training run again: code, packages, command line, data, seeds, machine.

`collect` gathers the facts when a run starts (they go under `reproduce` in the run config and the
W&B config); `differences` names what has changed since, so that `hellolondon reproduce RUN` and
`hellolondon train --config <a run's config>` can warn before the first step. Nothing here fails
a run: a fact that cannot be found is recorded as None.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from hellolondon import __version__
from hellolondon.errors import UserError
from hellolondon.tracking.secrets import scrub

# Environment variables that change numerics or which devices a run sees.
ENV_KEYS = ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")
PACKAGES = ("torch", "numpy", "tokenizers", "wandb", "safetensors")
GIT_TIMEOUT_S = 5.0
MAX_CHANGED = 20  # changed files listed for a dirty checkout


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_facts(package_dir: Path | None = None) -> dict[str, Any] | None:
    """Commit, branch and dirtiness of the checkout this package runs from; None outside one
    (an installed package, or a package folder that git does not track)."""
    here = package_dir or Path(__file__).resolve().parent
    if _git(["ls-files", "--error-unmatch", "__init__.py"], here) is None:
        return None
    commit = (_git(["rev-parse", "HEAD"], here) or "").strip() or None
    branch = (_git(["rev-parse", "--abbrev-ref", "HEAD"], here) or "").strip() or None
    status = _git(["status", "--porcelain", "--untracked-files=no"], here)
    changed = [line[3:] for line in (status or "").splitlines() if line.strip()]
    diff = _git(["diff", "HEAD"], here) if changed else None
    return {
        "commit": commit,
        "branch": branch,
        "dirty": bool(changed) if status is not None else None,
        "changed_files": changed[:MAX_CHANGED],
        # equal hashes: the same uncommitted changes on the same commit, so the same code
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, Any]:
    """Python and the packages that decide what a run computes, with the CUDA stack."""
    import torch

    versions: dict[str, Any] = {"python": platform.python_version()}
    versions |= {name: _version(name) for name in PACKAGES}
    versions["torch"] = torch.__version__  # the build, with its +cu/+cpu tag
    versions["cuda"] = torch.version.cuda
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    versions["cudnn"] = cudnn
    nccl = None
    if torch.cuda.is_available():
        try:
            found = torch.cuda.nccl.version()
            nccl = ".".join(map(str, found)) if isinstance(found, tuple) else str(found)
        except Exception:
            nccl = None
    versions["nccl"] = nccl
    return versions


def gpu_names() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


# set by `train --gpus N` for its ranks: the command the user typed, which each rank records in
# place of its own (`train --resolved-config <a temporary file>`, which cannot be run again)
LAUNCHER_COMMAND = "HELLOLONDON_LAUNCHER_COMMAND"


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed, with `python -m hellolondon` for the module's own entry file."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    head = argv[0]
    if Path(head).name == "__main__.py" and Path(head).parent.name == "hellolondon":
        head = "python -m hellolondon"
    elif Path(head).name == "hellolondon":
        head = "hellolondon"
    else:
        head = shlex.quote(head)
    return " ".join([head, *(shlex.quote(a) for a in argv[1:])])


def _recorded_data(run_config: dict[str, Any]) -> dict[str, Any]:
    """The data facts a run's config.json recorded; {} where it has none or they are not a
    record (a file edited by hand)."""
    recorded = run_config.get("reproduce")
    data = recorded.get("data") if isinstance(recorded, dict) else None
    return data if isinstance(data, dict) else {}


def trained_on(run_config: dict[str, Any]) -> str | None:
    """The tokens fingerprint of the token files a run was trained on, from its config.json
    (None for a run that did not record it)."""
    return _recorded_data(run_config).get("tokens_fingerprint")


def collect(
    meta: dict[str, Any],
    data_dir: str | Path,
    seed: int,
    argv: list[str] | None = None,
    tokens: str | None = None,
) -> dict[str, Any]:
    """The facts recorded with a run: see the module docstring. Secrets are scrubbed. `tokens`:
    the token files' fingerprint as hashed now (`hash_token_files`), recorded in place of the
    one meta.json says `prepare` wrote, with that one beside it where the two differ."""
    facts = {
        "hellolondon_version": __version__,
        "git": git_facts(),
        "packages": package_versions(),
        "command": os.environ.get(LAUNCHER_COMMAND) or command_line(argv),
        "data": {
            "data_dir": str(Path(data_dir).resolve()),
            "tokens_fingerprint": meta.get("tokens_fingerprint"),
            "tokenizer_fingerprint": meta.get("tokenizer_fingerprint"),
            "corpus_sha256": meta.get("corpus_sha256"),
        },
        "seeds": {"seed": seed, "per_rank": "seed + rank (weights start from seed on every rank)"},
        "host": socket.gethostname(),
        "gpu_names": gpu_names(),
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
        "cpu_threads": _cpu_threads(),
    }
    if tokens is not None:
        facts["data"]["tokens_fingerprint"] = tokens
        if tokens != meta.get("tokens_fingerprint"):
            facts["data"]["recorded_in_meta"] = meta.get("tokens_fingerprint")
    return scrub(facts)


def _cpu_threads() -> int:
    """Threads PyTorch's CPU operations use: on a CPU their count can change float rounding."""
    import torch

    return torch.get_num_threads()


class HashInBackground:
    """`hash_token_files(data_dir)` on a daemon thread (reading gigabytes takes seconds), so
    that it overlaps the rest of a run's start and never holds up the exit of a refused one.
    `result()` is the fingerprint, or None where the files could not be read.

    `note`: what another process hashed (its `note()`), taken instead of reading the files
    again while they are as they were then: the same folder, and the same files (inode, size,
    modification and change times)."""

    def __init__(self, data_dir: str | Path, note: dict[str, Any] | None = None) -> None:
        self._dir = data_dir
        self._value: str | None = None
        self._stat: list[list[int]] | None = None  # the files' stat it is of
        self._thread: threading.Thread | None = None
        if note is not None and self._take(note):
            return
        self._thread = threading.Thread(target=self._hash, name="hash-token-files", daemon=True)
        self._thread.start()

    def _hash(self) -> None:
        from hellolondon.prepare import hash_token_files

        try:
            before = _token_files_stat(self._dir)
            self._value = hash_token_files(self._dir)
            # a file written to while it was read: the hash is of neither version to vouch for
            self._stat = before if _token_files_stat(self._dir) == before else None
        except OSError:  # the run reads them already: a record without the hash, not a failure
            self._value = None

    def _take(self, note: dict[str, Any]) -> bool:
        value = note.get("tokens_fingerprint")
        try:
            now = _token_files_stat(self._dir)
        except OSError:
            return False
        same = note.get("data_dir") == str(Path(self._dir).resolve()) and note.get("files") == now
        if not same or not isinstance(value, str) or not value:
            return False
        self._value, self._stat = value, now
        return True

    def result(self) -> str | None:
        if self._thread is not None:
            self._thread.join()
        return self._value

    def note(self) -> dict[str, Any] | None:
        """The fingerprint with the folder and the files' inodes, sizes and times it was
        hashed from, for another process to take; None where there is nothing to vouch for."""
        value = self.result()
        if value is None or self._stat is None:
            return None
        return {
            "data_dir": str(Path(self._dir).resolve()),
            "files": self._stat,
            "tokens_fingerprint": value,
        }


def _token_files_stat(data_dir: str | Path) -> list[list[int]]:
    from hellolondon.prepare import token_file

    stats = [token_file(data_dir, split).stat() for split in ("train", "val")]
    # ctime too: a write moves it, and unlike mtime it cannot be set back by hand
    return [[st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] for st in stats]


def changed_since_prepare(meta: dict[str, Any], tokens: str, data_dir: str | Path) -> str | None:
    """A warning when the token files hash to other than what `prepare` recorded in meta.json."""
    written = meta.get("tokens_fingerprint")
    if not written or written == tokens:
        return None
    return (
        f"warning: the token files in {data_dir} are not as `prepare` wrote them (meta.json "
        f"records fingerprint {_short(written)}, they hash to {_short(tokens)} now): edited or "
        "damaged since; the run records what it trains on, run `hellolondon prepare` again for "
        "files that match their record"
    )


# What a resume records of its own start (the seeds and the first command stay the first start's)
RESUME_KEYS = ("hellolondon_version", "git", "packages", "command", "data", "host", "gpu_names")
SETTING_SECTIONS = ("model", "train", "data")
NOT_COMPARED = {"data.data_dir"}  # a path: the data's identity is its fingerprint


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for section in SETTING_SECTIONS:
        for name, value in (config.get(section) or {}).items():
            if f"{section}.{name}" not in NOT_COMPARED:
                flat[f"{section}.{name}"] = value
    return flat


def settings_changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list]:
    """{"train.seed": [1337, 7], ...}: the model, train and data settings two configs differ in
    (the data folder's path aside: the data's identity is its fingerprint)."""
    a, b = _settings(before), _settings(after)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def across_resume(previous: dict[str, Any], now: dict[str, Any], step: int) -> dict[str, Any]:
    """The facts of a run that goes on in its own folder: those of its first start (its
    command, code, data), with this start added under `resumes`, so that a run trained in parts
    by other code, packages, data or settings says so. `previous` is the run config the folder
    holds, `now` the one this start made."""
    first, facts = previous.get("reproduce"), now.get("reproduce") or {}
    if not isinstance(first, dict):
        return facts
    entry: dict[str, Any] = {"from_iteration": step}
    entry |= {k: facts.get(k) for k in RESUME_KEYS}
    changed = settings_changed(previous, now)
    if changed:
        entry["settings_changed"] = changed
    return {**first, "resumes": [*(first.get("resumes") or []), entry]}


def _resume_differences(first: dict[str, Any], resume: dict[str, Any]) -> list[str]:
    """What a resume ran with that its run's first start did not."""
    out: list[str] = []
    if first.get("hellolondon_version") != resume.get("hellolondon_version"):
        out.append(f"hellolondon {resume.get('hellolondon_version')}")
    fg, rg = first.get("git") or {}, resume.get("git") or {}
    if fg.get("commit") != rg.get("commit"):
        out.append(f"commit {_short(rg.get('commit'))}")
    elif fg.get("diff_sha256") != rg.get("diff_sha256"):
        out.append("other uncommitted changes")
    fp, rp = first.get("packages") or {}, resume.get("packages") or {}
    out += [f"{n} {rp.get(n)}" for n in sorted(set(fp) | set(rp)) if fp.get(n) != rp.get(n)]
    fd, rd = first.get("data") or {}, resume.get("data") or {}
    if fd.get("tokens_fingerprint") != rd.get("tokens_fingerprint"):
        out.append(f"token files {_short(rd.get('tokens_fingerprint'))}")
    if fd.get("tokenizer_fingerprint") != rd.get("tokenizer_fingerprint"):
        out.append(f"tokenizer {_short(rd.get('tokenizer_fingerprint'))}")
    if sorted(first.get("gpu_names") or []) != sorted(resume.get("gpu_names") or []):
        out.append(f"GPUs {resume.get('gpu_names') or 'none'}")
    out += [
        f"{k}={new} (was {old})" for k, (old, new) in (resume.get("settings_changed") or {}).items()
    ]
    return out


def current(data_dir: str | Path, tokens: str | None = None) -> dict[str, Any]:
    """The same facts for this checkout and machine now, with the token files hashed as they
    are on disk (not as meta.json says they were written). `tokens`: that hash, where this
    command has it already."""
    from hellolondon.prepare import hash_token_files, load_meta

    meta = load_meta(data_dir)
    return collect(meta, data_dir, seed=0, tokens=tokens or hash_token_files(data_dir))


def recorded_data_dir(run_config: dict[str, Any]) -> str | None:
    """The data folder a run trained on: `data.data_dir` as given while it still names that
    folder from here (it may be relative), else the absolute path recorded, while it exists."""
    given = (run_config.get("data") or {}).get("data_dir")
    recorded = _recorded_data(run_config).get("data_dir")
    if given and recorded and Path(given).resolve() == Path(recorded):
        return given
    return recorded if recorded and Path(recorded).is_dir() else given


def _changed(git: dict[str, Any]) -> str:
    """The files a checkout's uncommitted changes touch, as a record names them."""
    if not git.get("dirty"):
        return "no file"
    files = git.get("changed_files")
    files = files if isinstance(files, list) else []
    return (
        ", ".join(str(f) for f in files[:5])
        + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        or "some file"
    )


def _short(value: Any) -> str:
    if value is None:
        return "unknown"
    text = str(value)
    return text[:12] if len(text) == 64 or len(text) == 40 else text


NUMERICS_ENV = ("OMP_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")  # not which GPU


def _numerics_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Settings of the machine that change float rounding: the CPU thread count of a CPU run
    (how a matrix product splits its sums), and the environment variables that set it."""
    out = []
    threads = recorded.get("cpu_threads"), now.get("cpu_threads")
    if not recorded.get("gpu_names") and None not in threads and threads[0] != threads[1]:
        out.append(
            f"hardware: {threads[0]} CPU threads recorded, {threads[1]} now (on a CPU the "
            "thread count changes float rounding, so the losses in their last digits)"
        )
    env_r, env_n = recorded.get("env") or {}, now.get("env") or {}
    if not isinstance(env_r, dict):  # a record edited into another shape
        env_r = {}
    for key in NUMERICS_ENV:
        if env_r.get(key) != env_n.get(key):
            out.append(
                f"environment: {key}={env_r.get(key, '(unset)')} recorded, "
                f"{key}={env_n.get(key, '(unset)')} now"
            )
    return out


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One line per difference that can change what the run computes: code, packages, data."""
    out: list[str] = []
    if recorded.get("hellolondon_version") != now.get("hellolondon_version"):
        out.append(
            f"code: hellolondon {recorded.get('hellolondon_version')} recorded, "
            f"{now.get('hellolondon_version')} now"
        )
    rg, ng = recorded.get("git"), now.get("git")
    if rg and ng:
        if rg.get("commit") != ng.get("commit"):
            out.append(
                f"code: commit {_short(rg.get('commit'))} recorded, {_short(ng.get('commit'))} now"
            )
        same_changes = rg.get("diff_sha256") == ng.get("diff_sha256")
        same_code = rg.get("commit") == ng.get("commit") and same_changes
        if (rg.get("dirty") or ng.get("dirty")) and not same_code:
            out.append(
                f"code: uncommitted changes recorded in {_changed(rg)}, now in {_changed(ng)}"
                + (" (other changes to the same files)" if _changed(rg) == _changed(ng) else "")
            )
    elif rg and not ng:
        out.append(
            f"code: recorded from a checkout at {_short(rg.get('commit'))}, now not run from one"
        )
    elif ng and not rg:
        out.append(f"code: recorded outside a checkout, now at commit {_short(ng.get('commit'))}")
    rp, np_ = recorded.get("packages") or {}, now.get("packages") or {}
    for name in sorted(set(rp) | set(np_)):
        if rp.get(name) != np_.get(name):
            out.append(
                f"packages: {name} {rp.get(name) or 'absent'} recorded, {np_.get(name) or 'absent'} now"
            )
    rd, nd = recorded.get("data") or {}, now.get("data") or {}
    labels = {"tokens_fingerprint": "token files", "tokenizer_fingerprint": "tokenizer"}
    for key, label in labels.items():
        if rd.get(key) and rd.get(key) != nd.get(key):
            out.append(
                f"data: {label} fingerprint {_short(rd.get(key))} recorded, "
                f"{_short(nd.get(key))} now (in {nd.get('data_dir')})"
            )
    if nd.get("recorded_in_meta"):  # set by `collect` only where the two differ
        out.append("data: the token files were changed after `prepare` wrote them")
    if sorted(recorded.get("gpu_names") or []) != sorted(now.get("gpu_names") or []):
        out.append(
            f"hardware: GPUs {recorded.get('gpu_names') or 'none'} recorded, "
            f"{now.get('gpu_names') or 'none'} now"
        )
    out += _numerics_differences(recorded, now)
    for resume in recorded.get("resumes") or []:
        changed = _resume_differences(recorded, resume)
        if changed:
            out.append(
                f"resumed: from iteration {resume.get('from_iteration')} the run went on with "
                f"{', '.join(changed)}, unlike its start; one run from the start does not "
                "retrace it"
            )
    return out


# the type each recorded fact has where it is recorded at all (None is allowed for every one)
RECORD_TYPES = {
    "hellolondon_version": str, "git": dict, "packages": dict, "command": str, "data": dict,
    "seeds": dict, "host": str, "gpu_names": list, "env": dict, "resumes": list,
    "from_iteration": int, "settings_changed": dict,
}  # fmt: skip
KINDS = {str: "text", dict: "an object", list: "a list", int: "a whole number"}


def _check_record(recorded: dict[str, Any], where: str = "reproduce") -> None:
    """Refuse, in one line, a reproduction record whose facts are not of the kind the run
    wrote (a config.json edited by hand), rather than fail inside the comparison."""
    for key, kind in RECORD_TYPES.items():
        value = recorded.get(key)
        if value is not None and not isinstance(value, kind):
            raise _edited(f"{where}.{key}", value, KINDS[kind])
    for key, pair in (recorded.get("settings_changed") or {}).items():
        if not (isinstance(pair, list) and len(pair) == 2):
            raise _edited(f"{where}.settings_changed.{key}", pair, "[before, after]")
    for i, entry in enumerate(recorded.get("resumes") or []):
        if not isinstance(entry, dict):
            raise _edited(f"{where}.resumes[{i}]", entry, "an object")
        _check_record(entry, f"{where}.resumes[{i}]")


def _edited(field: str, value: Any, kind: str) -> UserError:
    return UserError(
        f"config.json: {field} is {json.dumps(value)[:60]}, not {kind} as the run recorded it; "
        "put back the run's own record (its W&B run's config holds a copy), or remove the "
        "reproduce section to start without these checks"
    )


def check_before_training(
    run_config: dict[str, Any],
    data_dir: str | Path,
    log: Callable[[str], None] = print,
    strict: bool = False,
    hashing: HashInBackground | None = None,
) -> list[str]:
    """Warn, one line each, about what differs from the run that recorded `run_config`; with
    `strict`, refuse to start instead. Returns the differences. `hashing`: the token files of
    `data_dir` hashed for the training that follows, so that they are read once."""
    recorded = run_config.get("reproduce")
    if not isinstance(recorded, dict):
        log(
            "warning: the run recorded no reproduction facts; code, packages and data are not checked"
        )
        return []
    _check_record(recorded)
    now = current(data_dir, hashing.result() if hashing is not None else None)
    found = differences(recorded, now)
    if strict and found:
        raise UserError(
            f"{len(found)} difference(s) from the recorded run, and --strict was given: "
            + "; ".join(found)
        )
    for line in found:
        log(f"warning: differs from the recorded run: {line}")
    if not found:
        log("reproduce: code, packages and data match the recorded run")
    return found


def recorded_global_batch(
    run_config: dict[str, Any], log: Callable[[str], None] = print
) -> int | None:
    """The global batch (sequences per step) of a recorded run that trained on several
    processes, said in a line, so that running it again on another number keeps it as a
    resume does; None for a one-process run (its settings already are its global batch)."""
    hardware, train = run_config.get("hardware"), run_config.get("train")
    if not isinstance(hardware, dict) or not isinstance(train, dict):
        return None
    try:
        world = int(hardware.get("world_size") or 1)
        batch = int(train["batch_size"]) * int(train["grad_accum"]) * world
    except (KeyError, TypeError, ValueError):
        return None
    if world <= 1:
        return None
    log(
        f"the recorded run trained on {world} processes: its global batch of {batch} sequences "
        f"is kept (--global-batch {batch})"
    )
    return batch


def recorded_gpus(run_config: dict[str, Any]) -> str | None:
    """The N of `train --gpus N` in the command that last started or resumed a run (its
    record holds each), None for one process or a torchrun started by hand."""
    reproduce = run_config.get("reproduce")
    if not isinstance(reproduce, dict):
        return None
    resumes = reproduce.get("resumes")
    starts = [reproduce, *(resumes if isinstance(resumes, list) else [])]
    commands = [s.get("command") for s in starts if isinstance(s, dict)]
    commands = [c for c in commands if isinstance(c, str) and c]
    if not commands:
        return None
    try:
        words = shlex.split(commands[-1])
    except ValueError:
        return None
    for i, word in enumerate(words):
        value = words[i + 1] if word == "--gpus" and i + 1 < len(words) else None
        value = word.removeprefix("--gpus=") if word.startswith("--gpus=") else value
        if value is not None:
            return value if value.isdigit() else None
    return None
