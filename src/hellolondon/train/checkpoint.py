"""Checkpoints: one folder per save, written atomically, verified on load, never unpickled.

checkpoints/step-000500/
    model.safetensors   weights (the tied output matrix stored once)
    optimizer.pt        optimizer state, read back with torch.load(weights_only=True)
    rng.pt              torch and CUDA generator states (weights_only as well)
    state.json          iteration, samples consumed, best val loss, config, tokenizer
                        fingerprint, tracker run id, Python/NumPy RNG, sha256 of each file
checkpoints/latest      the name of the newest complete folder
checkpoints/best/       hard links to the files of the best folder by val loss
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hellolondon.errors import UserError
from hellolondon.files import sha256_file

FORMAT = 1
TIED = "lm_head.weight"


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
    final = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {k: v.detach().cpu().contiguous() for k, v in model_state.items() if k != TIED}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    torch.save(optim_state, tmp / "optimizer.pt")
    torch.save(
        rng if rng is not None else rng_tensors([local_rng(torch.device("cpu"))]), tmp / "rng.pt"
    )
    files = {n: sha256_file(tmp / n) for n in ("model.safetensors", "optimizer.pt", "rng.pt")}
    meta = {"format": FORMAT, "step": step, **state, "rng": rng_state(), "files": files}
    _write_json(tmp / "state.json", meta)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _write_text(ckpt_root / "latest", final.name)
    if is_best:
        _link_best(final, ckpt_root / "best")
    _prune(ckpt_root, keep_last)
    return final


def _write_json(path: Path, data: dict) -> None:
    _write_text(path, json.dumps(data, indent=1))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def step_dirs(ckpt_root: Path) -> list[Path]:
    """Complete step folders, newest first."""
    if not ckpt_root.is_dir():
        return []
    return sorted(
        (p for p in ckpt_root.glob("step-*") if (p / "state.json").exists()), reverse=True
    )


def _prune(ckpt_root: Path, keep_last: int) -> None:
    for old in step_dirs(ckpt_root)[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)


def read_state(ckpt: Path, verify: bool = True) -> dict[str, Any]:
    """state.json of a checkpoint folder, with every file checked against its recorded sha256."""
    path = ckpt / "state.json"
    if not path.is_file():
        raise UserError(f"{ckpt} is not a checkpoint folder (no state.json)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"checkpoint file {path} is corrupt (not valid JSON)") from None
    if state.get("format") != FORMAT:
        raise UserError(f"{path}: unknown checkpoint format {state.get('format')!r}")
    for name, digest in state.get("files", {}).items() if verify else ():
        f = ckpt / name
        if not f.is_file():
            raise UserError(f"checkpoint file {f} is missing")
        if sha256_file(f) != digest:
            raise UserError(f"checkpoint file {f} is truncated or corrupt (sha256 mismatch)")
    return state


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
    return p / "checkpoints" if (p / "checkpoints").is_dir() else p


def resolve(path: str | Path) -> Path:
    """A run folder (its `latest`), a `checkpoints/` folder, or one checkpoint folder."""
    p = Path(path)
    if (p / "state.json").exists():
        return p
    root = _root(p)
    latest = root / "latest"
    if latest.is_file() and (root / latest.read_text().strip() / "state.json").exists():
        return root / latest.read_text().strip()
    found = step_dirs(root)
    if found:
        return found[0]
    raise UserError(f"no checkpoint found at {path}; give a run folder or a checkpoint folder")


def find_resumable(path: str | Path, log=print) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint that passes verification; a corrupt one is reported and skipped."""
    p = Path(path)
    if (p / "state.json").exists():
        return p, read_state(p)
    root = _root(p)
    candidates = step_dirs(root)
    if not candidates:
        raise UserError(f"nothing to resume: no checkpoint under {root}")
    for ckpt in candidates:
        try:
            return ckpt, read_state(ckpt)
        except UserError as exc:
            log(f"warning: {exc}; falling back to the previous checkpoint")
    raise UserError(f"every checkpoint under {root} is corrupt; start a new run")


def tokenizer_dir_of(ckpt: Path) -> Path:
    """The tokenizer saved with a checkpoint: in the folder itself or in its run folder."""
    for candidate in (ckpt / "tokenizer", ckpt.parent.parent / "tokenizer"):
        if (candidate / "tokenizer.json").is_file():
            return candidate
    raise UserError(
        f"checkpoint {ckpt} has no tokenizer beside it (looked for {ckpt.parent.parent / 'tokenizer'}); copy the tokenizer folder there"
    )


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, RunConfig, state, checkpoint folder) from a run or checkpoint path."""
    from hellolondon.config import from_dict
    from hellolondon.model import GPT

    ckpt = resolve(path)
    state = read_state(ckpt)
    cfg = from_dict(state["config"])
    model = GPT(cfg.model)
    try:
        model.load_state_dict(load_weights(ckpt))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(
            f"checkpoint {ckpt} does not fit its recorded architecture ({first})"
        ) from None
    return model.to(device).eval(), cfg, state, ckpt
