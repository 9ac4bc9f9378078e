"""Checkpoints: one folder per save, written atomically, verified on load, never unpickled.

checkpoints/step-000500/
    model.safetensors   weights (the tied output matrix stored once)
    optimizer.pt        optimizer state, read back with torch.load(weights_only=True)
    rng.pt              torch and CUDA generator states of every rank (weights_only as well)
    state.json          iteration, the loop's state and the monitor's, config, tokenizer
                        fingerprint, tracker run id, scaler, Python/NumPy RNG, sha256 of each file
checkpoints/latest      the name of the folder the run continues from: the newest of its line
checkpoints/best/       hard links to the files of the best folder by val loss
checkpoints/abandoned/  folders a resume from an older checkpoint left behind (never deleted)

`save_run` and `restore_run` write and read everything a training run needs, for one process,
DDP and FSDP alike; `load_for_inference` gives generate, eval and export a model and tokenizer.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hellolondon import __version__
from hellolondon.errors import UserError
from hellolondon.files import atomic_write, default_mode, sha256_file

FORMAT = 2  # 1: the loop's state as top-level keys, no monitor state (still read)
TIED = "lm_head.weight"
ABANDONED = "abandoned"
FULL_BELOW = 1 << 20  # bytes free under which a failed checkpoint write is put down to a full disk


def rng_state() -> dict[str, Any]:
    """Python and NumPy states as JSON (torch's are per process: see `local_rng`)."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *map(float, np_state[2:])],
    }


def local_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's torch generators: the CPU one and that of its own GPU only (asking every
    GPU would open a CUDA context on each from every rank)."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def rng_tensors(per_rank: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """rng.pt: rank 0's states under plain names, rank r's as `rank<r>.<name>`, and the world."""
    out = {"world": torch.tensor(len(per_rank))}
    for r, states in enumerate(per_rank):
        out.update({(f"rank{r}." if r else "") + k: v for k, v in states.items()})
    return out


def set_rng_state(
    as_json: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
) -> None:
    """Restore this rank's generators. At another world size than the checkpoint's, rank r > 0
    derives a distinct stream from rank 0's restored one (dropout is then not bit-exact)."""
    py = as_json["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = as_json["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), int(pos), int(has_gauss), cached))
    same_world = int(tensors.get("world", torch.tensor(1))) == world
    prefix = f"rank{rank}." if rank and same_world else ""
    torch.set_rng_state(tensors[prefix + "torch"])
    if device is not None and device.type == "cuda" and prefix + "cuda" in tensors:
        torch.cuda.set_rng_state(tensors[prefix + "cuda"], device)
    if rank and not same_world:
        torch.manual_seed(int(torch.randint(0, 2**62, ())) + rank)


def step_folder_name(step: int) -> str:
    return f"step-{step:06d}"


def is_checkpoint(folder: Path) -> bool:
    """Whether `folder` is a checkpoint folder (unverified: see read_state)."""
    return (folder / "state.json").exists()


def save(
    ckpt_root: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optim_state: dict,
    state: dict[str, Any],
    keep_last: int,
    is_best: bool,
    rng: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `step-NNNNNN/` beside a temporary name, then rename: a reader never sees half a
    checkpoint. Then move `latest`, refresh `best` and prune old folders. `rng`: every rank's
    generator states from `rng_tensors` (default: this process's CPU generator)."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / step_folder_name(step)
    _remove_unfinished(ckpt_root)
    tmp = ckpt_root / f".{final.name}.tmp-{os.getpid()}"
    try:
        _write_folder(tmp, step, model_state, optim_state, state, rng)
    except BaseException as exc:  # a full disk, say: the half-written folder would keep its space
        full = _disk_full(ckpt_root, exc)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final)) from exc
        raise
    _replace_folder(tmp, final)
    atomic_write(ckpt_root / "latest", final.name)
    if is_best:
        _link_best(final, ckpt_root / "best")
    _prune(ckpt_root, keep_last, final)
    return final


def _remove_unfinished(ckpt_root: Path) -> None:
    """What an earlier process killed while saving left: a folder it was writing
    (.step-NNNNNN.tmp-<pid>, .best.tmp), never resumed and as large as a checkpoint; and one it
    had moved aside (.step-NNNNNN.old, .best.old), put back where its replacement never came.
    Only one process writes a run's checkpoints (rank 0; a resume refuses a live run)."""
    for old in ckpt_root.glob(".*.old"):
        final = ckpt_root / old.name[1 : -len(".old")]
        if not final.exists():
            os.rename(old, final)
    for left in [*ckpt_root.glob(".step-*"), *ckpt_root.glob(".best.*")]:
        shutil.rmtree(left, ignore_errors=True)


def _disk_full(folder: Path, exc: BaseException) -> bool:
    """Whether a write failed for want of space. torch.save does not say so: a full disk
    reaches it as "enforce fail ... unexpected pos", so the disk is asked."""
    if isinstance(exc, OSError) or not isinstance(exc, Exception):
        return False  # an OSError names itself; Ctrl-C is no disk error
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW
    except OSError:
        return False


def _write_folder(
    tmp: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optim_state: dict,
    state: dict[str, Any],
    rng: dict[str, torch.Tensor] | None,
) -> None:
    tmp.mkdir()
    weights = {k: v.detach().cpu().contiguous() for k, v in model_state.items() if k != TIED}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    default_mode(tmp / "model.safetensors")
    torch.save(optim_state, tmp / "optimizer.pt")
    torch.save(
        rng if rng is not None else rng_tensors([local_rng(torch.device("cpu"))]), tmp / "rng.pt"
    )
    files = {n: sha256_file(tmp / n) for n in ("model.safetensors", "optimizer.pt", "rng.pt")}
    meta = {"format": FORMAT, "step": step, **state, "rng": rng_state(), "files": files}
    (tmp / "state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    for f in tmp.iterdir():  # the folder's rename (`save`) is the atomic step
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _replace_folder(new: Path, final: Path) -> None:
    """Rename `new` to `final`. A folder already there (the same step saved again, after the
    evaluation a stop cut short) is moved aside and removed only once `new` has its name. A
    `.old` a killed save left was removed by `_remove_unfinished` before the write."""
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        os.rename(final, old)
    os.rename(new, final)
    shutil.rmtree(old, ignore_errors=True)


def _link_best(src: Path, best: Path) -> None:
    tmp = best.with_name(".best.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in src.iterdir():
        try:
            os.link(f, tmp / f.name)  # files are never rewritten in place, so links are safe
        except OSError:
            shutil.copy2(f, tmp / f.name)
    old = best.with_name(".best.old")
    shutil.rmtree(old, ignore_errors=True)
    if best.exists():
        os.rename(best, old)
    os.rename(tmp, best)
    shutil.rmtree(old, ignore_errors=True)


def _step_of(p: Path) -> int:
    try:
        return int(p.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def step_dirs(ckpt_root: Path) -> list[Path]:
    """Step folders (with a state.json), newest first."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.glob("step-*") if is_checkpoint(p)]
    return sorted(found, key=_step_of, reverse=True)


def _prune(ckpt_root: Path, keep_last: int, written: Path) -> None:
    """Keep the folder just written and the newest others up to `keep_last` in all."""
    others = [p for p in step_dirs(ckpt_root) if p != written]
    for old in others[keep_last - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


class NewerCheckpoint(UserError):
    """A checkpoint a newer version wrote: never passed over for an older one (a resume would
    abandon its steps); the way on is to upgrade."""


def read_state(ckpt: Path, verify: bool = True) -> dict[str, Any]:
    """state.json of a checkpoint folder, with every file checked against its recorded sha256."""
    path = ckpt / "state.json"
    if not path.is_file():
        raise UserError(f"{ckpt} is not a checkpoint folder (no state.json)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(
            f"checkpoint file {path} is truncated or corrupt (not valid JSON)"
        ) from None
    fmt = state.get("format") if isinstance(state, dict) else None
    if type(fmt) is int and fmt > FORMAT:
        raise NewerCheckpoint(
            f"{path} is of checkpoint format {fmt}, from a newer hellolondon (this one, "
            f"{__version__}, reads formats 1 to {FORMAT}); upgrade hellolondon to use it"
        )
    if fmt not in (1, FORMAT):
        raise UserError(f"{path}: not a checkpoint state this version can read")
    if not isinstance(state.get("config"), dict):
        raise UserError(f"{path} is incomplete (it has no config)")  # callers say what to do
    _check_bookkeeping(state, path)
    from hellolondon.config import from_dict

    try:  # checked here, so that every reader of the checkpoint names the file
        from_dict(state["config"])
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    for name, digest in state.get("files", {}).items() if verify else ():
        f = ckpt / name
        if not f.is_file():
            raise UserError(f"checkpoint file {f} is missing")
        if sha256_file(f) != digest:
            raise UserError(f"checkpoint file {f} is truncated or corrupt (sha256 mismatch)")
    if state.get("format") == 1:  # the loop's counters were top-level keys
        state["trainer"] = {
            "step": state["step"],
            "samples_seen": state.get("samples_seen", 0),
            "best_val_loss": state.get("best_val_loss"),
        }
    return state


def _check_bookkeeping(state: dict[str, Any], path: Path) -> None:
    """The step (a whole number >= 0: it names reports and exports) and the files' digests
    (names to sha256 strings) that every reader of a checkpoint relies on."""
    step = state.get("step")
    if type(step) is not int or step < 0:
        raise UserError(f"{path} is damaged: its step is {step!r}, not a whole number >= 0")
    files = state.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise UserError(f"{path} is damaged: its files are not a map of names to sha256 digests")


def counters(ckpt: Path) -> dict[str, Any]:
    """The loop's counters a checkpoint was written at: step, samples_seen, best_val_loss (None
    before any evaluation). Its files are not checked."""
    trainer = read_state(ckpt, verify=False)["trainer"]
    return {k: trainer.get(k) for k in ("step", "samples_seen", "best_val_loss")}


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    try:
        weights = load_file(str(ckpt / "model.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise UserError(
            f"checkpoint file {ckpt / 'model.safetensors'} cannot be read ({exc})"
        ) from None
    weights[TIED] = weights["transformer.wte.weight"]
    return weights


def load_tensors(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint file {path} cannot be read ({type(exc).__name__})") from None


def _root(p: Path) -> Path:
    """The folder holding step-NNNNNN/: a run folder's checkpoints/, or the path itself."""
    from hellolondon.rundir import RunDir

    return RunDir(p).checkpoints if RunDir(p).checkpoints.is_dir() else p


def _candidates(root: Path) -> list[Path]:
    """Where a run continues from, in order: the folder `latest` names, then the step folders
    newest first."""
    latest = root / "latest"
    named = root / latest.read_text().strip() if latest.is_file() else None
    first = [named] if named is not None and (named / "state.json").exists() else []
    return first + [p for p in step_dirs(root) if p not in first]


def resolve(path: str | Path) -> Path:
    """A run folder (the checkpoint it continues from), a `checkpoints/` folder, or one
    checkpoint folder."""
    p = Path(path)
    if is_checkpoint(p):
        return p
    candidates = _candidates(_root(p))
    reasons = []
    for ckpt in candidates:
        try:
            read_state(ckpt, verify=False)
            return ckpt
        except NewerCheckpoint:
            raise
        except UserError as exc:  # a cut-short state.json: the one before it
            reasons.append(str(exc))
    if candidates:
        raise UserError(
            f"no checkpoint under {_root(p)} can be read (the newest: {reasons[0]}); train "
            "the run again or restore them"
        )
    raise _no_checkpoint(p)


def _no_checkpoint(p: Path) -> UserError:
    """Why there is nothing at `p` to continue from, and what to do instead."""
    from hellolondon.rundir import RunDir, holds_runs

    if not p.exists():
        return UserError(f"{p} does not exist; give a run folder or a checkpoint folder")
    if not p.is_dir():  # a run's config.json, say
        return UserError(f"{p} is a file, not a folder; give a run folder or a checkpoint folder")
    if (p / "model.safetensors").is_file():  # weights without state.json: an export's folder
        return UserError(
            f"{p} is a Hugging Face model folder (from `hellolondon export`), not a checkpoint; "
            "load it with transformers, or give the run folder or checkpoint it came from"
        )
    run = RunDir(p)
    found = run.training_process()
    if found is not None and found[0] == "running":  # not stopped: before its first save
        return UserError(
            f"no checkpoint found at {p}: the run is being trained now ({found[1]}) and has "
            "saved none yet; wait for its first one, or stop it (a Ctrl-C to it saves one)"
        )
    if run.config_file.is_file():  # a run stopped before its first save
        return UserError(
            f"no checkpoint found at {p}: the run stopped before its first checkpoint; start it "
            f"again as a new run with `hellolondon train --config {run.config_file} --run-name "
            "NEW_NAME`"
        )
    return holds_runs(p) or UserError(
        f"no checkpoint found at {p}; give a run folder or a checkpoint folder"
    )


def find_resumable(path: str | Path, log=print) -> tuple[Path, dict[str, Any]]:
    """The checkpoint a run continues from (`latest`), or when that one fails verification
    the newest one before it that passes; each one skipped is reported."""
    p = Path(path)
    if (p / "state.json").exists():
        return p, read_state(p)
    root = _root(p)
    candidates = _candidates(root)
    if not candidates:
        raise _no_checkpoint(p)
    for ckpt in candidates:
        try:
            return ckpt, read_state(ckpt)
        except NewerCheckpoint:
            raise
        except UserError as exc:
            log(f"warning: {exc}; falling back to the previous checkpoint")
    raise UserError(f"every checkpoint under {root} is corrupt; start a new run")


def continue_line(ckpt: Path, log=print) -> None:
    """Make `ckpt` the end of its run's line before the run goes on from it: step folders after
    it (an abandoned line, or ones that failed verification) move to `abandoned/`, where they
    are kept but never resumed or pruned, `best/` goes back to the best checkpoint of this line
    (the run's summary names that one), and `latest` names `ckpt`."""
    root = ckpt.parent
    state = read_state(ckpt, verify=False)
    step = state["step"]
    later = [p for p in root.glob("step-*") if p.is_dir() and _step_of(p) > step]
    for p in later:
        target = _set_aside(p, root / ABANDONED / p.name)
        log(f"{p.name} is after the checkpoint this run continues from: kept in {target}")
    _best_of_line(root, step, state.get("trainer", {}).get("best_step"), log)
    latest = root / "latest"
    if later or not latest.is_file() or latest.read_text().strip() != ckpt.name:
        atomic_write(root / "latest", ckpt.name)


def _set_aside(p: Path, target: Path) -> Path:
    """Move `p` to `target`, or `target.1`, `.2` ... where that is taken."""
    name, n = target.name, 1
    while target.exists():
        target, n = target.with_name(f"{name}.{n}"), n + 1
    target.parent.mkdir(exist_ok=True)
    os.rename(p, target)
    return target


def _best_of_line(root: Path, step: int, line_best: int | None, log) -> None:
    """A `best/` from after `step` belongs to the abandoned line: set it aside (it may be the
    only copy of those weights) and link the line's own best (`line_best`, the step its state
    names) where its folder is still there."""
    best = root / "best"
    try:
        old_step = read_state(best, verify=False)["step"] if is_checkpoint(best) else -1
    except UserError:  # unreadable: what it holds is not known, so it is left as it is
        return
    if old_step <= step:
        return
    target = _set_aside(best, root / ABANDONED / f"best-step-{old_step:06d}")
    source = root / f"step-{line_best:06d}" if line_best is not None else None
    if source is not None and is_checkpoint(source):
        _link_best(source, best)
        log(
            f"best/ was step {old_step}'s, of the abandoned line (kept in {target}): it is now {source.name}"
        )
    else:
        log(
            f"best/ was step {old_step}'s, of the abandoned line: kept in {target}; this line has no best/ yet"
        )


# ---------------------------------------------------------------------------- a training run


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class RunParts:
    """What a training checkpoint holds besides the config: the model, its optimizer and grad
    scaler, and the stateful objects of the loop (saved in state.json under their names)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    stateful: dict[str, Stateful]


def save_run(
    root: Path, parts: RunParts, dist: Any, info: dict[str, Any], keep_last: int, is_best: bool
) -> Path | None:
    """Checkpoint a training run at the step its "trainer" state holds. Every rank must call
    this: with FSDP each sends its shards, and every rank's generators are saved. Rank 0 writes
    the folder and returns it; `info` is JSON kept in state.json (config, fingerprints, ...)."""
    from hellolondon.train import fsdp
    from hellolondon.train.distributed import barrier, gather_object

    rng = gather_object(local_rng(dist.device), dist)
    if dist.fsdp:
        weights, optim = fsdp.full_state(parts.model, parts.optimizer)
    elif dist.is_main:
        weights, optim = parts.model.state_dict(), parts.optimizer.state_dict()
    path = None
    if dist.is_main:
        state = {name: obj.state_dict() for name, obj in parts.stateful.items()}
        state |= info | {"scaler": parts.scaler.state_dict(), "world_size": dist.world_size}
        step = parts.stateful["trainer"].state_dict()["step"]
        path = save(root, step, weights, optim, state, keep_last, is_best, rng_tensors(rng))
    barrier(dist)
    return path


def restore_run(ckpt: Path, state: dict[str, Any], parts: RunParts, dist: Any, log=print) -> None:
    """Load a checkpoint read by `find_resumable` into a freshly built run, on every rank."""
    from hellolondon.train import fsdp

    fsdp.load_model(parts.model, load_weights(ckpt), dist.fsdp)
    fsdp.load_optimizer(
        parts.model, parts.optimizer, load_tensors(ckpt / "optimizer.pt"), dist.fsdp
    )
    _load_scaler(parts.scaler, state.get("scaler") or {}, log)
    for name, obj in parts.stateful.items():
        if name in state:
            obj.load_state_dict(state[name])
    rng = load_tensors(ckpt / "rng.pt")
    set_rng_state(state["rng"], rng, dist.rank, dist.world_size, dist.device)


def _load_scaler(scaler: torch.amp.GradScaler, saved: dict[str, Any], log) -> None:
    """fp16 needs a loss scale; a bf16 or fp32 checkpoint has none, so it starts afresh."""
    if scaler.is_enabled() and not saved:
        log("the checkpoint has no fp16 loss scale (it was saved in bf16 or fp32): starting one")
        return
    scaler.load_state_dict(saved)


# ---------------------------------------------------------------------------- inference


def _sound_other(ckpt: Path) -> Path | None:
    """Another checkpoint of the run that passes verification, newest first; not one that
    holds the same files (`best/` is hard links to its step folder's)."""
    for other in _candidates(ckpt.parent):
        if other.resolve() == ckpt.resolve() or _same_weights(other, ckpt):
            continue
        try:
            read_state(other)
        except UserError:
            continue
        return other
    return None


def _same_weights(a: Path, b: Path) -> bool:
    try:
        return (a / "model.safetensors").samefile(b / "model.safetensors")
    except OSError:
        return False


@dataclass
class Loaded:
    model: Any  # GPT in eval mode
    cfg: Any  # RunConfig
    state: dict[str, Any]
    ckpt: Path
    tokenizer: Any  # Tokenizer


def check_finite(loaded: Loaded, use: str) -> None:
    """Refuse a checkpoint whose weights hold NaN or inf (a run that diverged before it was
    saved): every score or text made from it would be NaN. `use` says what to do instead."""
    bad = [
        name
        for name, t in loaded.model.state_dict().items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise UserError(
            f"the weights of {loaded.ckpt} are not finite (NaN or inf in {len(bad)} tensor"
            f"{'s' * (len(bad) > 1)}, such as {bad[0]}): the run diverged before this checkpoint; "
            f"{use} an earlier checkpoint of the run (its checkpoints/ folder lists them)"
        )


NO_SOUND_CHECKPOINT = (
    "no other checkpoint of the run can be read: copy the checkpoint again from where it was "
    "trained, or train again"
)


def load_for_inference(path: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """The model (eval mode, on `device`), config, state and tokenizer of a run's checkpoint or
    a checkpoint folder, checked to belong together."""
    from hellolondon.config import from_dict
    from hellolondon.model import GPT
    from hellolondon.rundir import tokenizer_dir_of
    from hellolondon.tokenizer import load_tokenizer

    ckpt = resolve(path)
    p = Path(path)
    newest = ckpt if is_checkpoint(p) else next(iter(_candidates(_root(p))), ckpt)
    if newest != ckpt:  # resolve passed over a newest one whose state.json cannot be read
        try:
            read_state(newest, verify=False)
        except UserError as exc:
            other = _sound_other(newest)
            instead = f"; give another checkpoint instead, such as {other}" if other else ""
            raise UserError(f"{exc}{instead}") from None
    try:
        state = read_state(ckpt)
    except NewerCheckpoint:
        raise
    except UserError as exc:  # name one to use instead: never fall back to it silently
        other = _sound_other(ckpt)
        if other is None:
            raise UserError(f"{exc}; {NO_SOUND_CHECKPOINT}") from None
        raise UserError(f"{exc}; give another checkpoint instead, such as {other}") from None
    cfg = from_dict(state["config"])
    model = GPT(cfg.model)
    try:
        model.load_state_dict(load_weights(ckpt))
    except RuntimeError as exc:  # "Error(s) in loading state_dict for GPT:", then the first
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = lines[min(1, len(lines) - 1)].rstrip(".")[:200] if lines else "unreadable"
        raise UserError(
            f"the weights of {ckpt} do not fit the model its state.json describes ({first}); "
            "give another checkpoint"
        ) from None
    tok_dir = tokenizer_dir_of(ckpt)
    tok = load_tokenizer(tok_dir)
    trained_with = state.get("tokenizer_fingerprint")
    if trained_with and tok.fingerprint != trained_with:
        raise UserError(
            f"the tokenizer in {tok_dir} (fingerprint {tok.fingerprint[:12]}) is not the one "
            f"{ckpt} was trained with ({trained_with[:12]}); put the training tokenizer there"
        )
    return Loaded(model.to(device).eval(), cfg, state, ckpt, tok)
