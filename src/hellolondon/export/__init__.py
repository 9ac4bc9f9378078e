"""Export a checkpoint as a Hugging Face `GPT2LMHeadModel` folder.

    out/
        config.json              GPT-2 config: sizes, `gelu_new`, eps 1e-5, bos/eos/pad ids
        generation_config.json   the sampling defaults of `hellolondon generate`
        model.safetensors        weights in GPT-2's layout (Conv1D matrices are (in, out))
        tokenizer.json, tokenizer_config.json, special_tokens_map.json
        README.md                the model card (`export/card.py`)

Our model has no biases and LayerNorms without bias; GPT-2 has both, so they are written as
zeros, which changes nothing. The folder is written under a temporary name and renamed at the
end: a failed export leaves the target as it was.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from hellolondon.config import RunConfig
from hellolondon.errors import UserError
from hellolondon.export.card import check_license, model_card, new_tokens_default
from hellolondon.files import default_mode, sha256_file
from hellolondon.generate import Sampling
from hellolondon.model import GPT
from hellolondon.tokenizer import Tokenizer
from hellolondon.train.checkpoint import Loaded, is_checkpoint

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CHECKSUMS = ".checksums.json"  # sha256 of each file as written (hidden: not uploaded)
EDITABLE = ("README.md",)  # the model card: the user's to complete before publishing
CHECK_TOLERANCE = 1e-4  # float32 logits of the export and of our model
# every file an export holds: --force replaces a folder of these and of nothing else
EXPORT_FILES = frozenset(
    ("README.md", "config.json", "generation_config.json", "model.safetensors", *TOKENIZER_FILES)
) | {CHECKSUMS}
LAYER_NORM_EPS = 1e-5  # torch's LayerNorm default, which the model uses
# nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights renamed and transposed into GPT-2's layout, with zero biases added.
    The tied output matrix is left out: `tie_word_embeddings` rebuilds it on load. A model on
    the meta device gives the tensors' names and shapes alone."""
    out: dict[str, torch.Tensor] = {}
    for name, w in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        w = w.detach() if w.is_meta else w.detach().to("cpu", torch.float32)
        if name.endswith(CONV1D):
            w = w.t()
        out[name] = w.contiguous()
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            out[name.replace(".weight", ".bias")] = torch.zeros_like(w)
        elif name.endswith(CONV1D):
            out[name.replace(".weight", ".bias")] = torch.zeros(w.size(1), device=w.device)
    return out


def hf_shapes(config: dict[str, Any]) -> dict[str, list[int]]:
    """The tensors (name: shape) an export of the model `config` (GPT-2's config.json) holds."""
    from hellolondon.config import ModelConfig

    keys = {"vocab_size": "vocab_size", "block_size": "n_positions", "n_layer": "n_layer",
            "n_head": "n_head", "n_embd": "n_embd"}  # fmt: skip
    with torch.device("meta"):
        model = GPT(ModelConfig(**{k: int(config[v]) for k, v in keys.items()}))
    return {name: list(t.shape) for name, t in hf_state_dict(model).items()}


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """bos/eos/pad ids as the tokenizer's own config names them, so model and tokenizer agree."""
    path = Path(tok.path) / "tokenizer_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(
            f"{path} is missing or unreadable; the export needs the tokenizer's special tokens "
            "(train it again with `hellolondon tokenizer train`)"
        ) from None
    ids = {}
    for key in ("bos", "eos", "pad"):
        token = config.get(f"{key}_token") or "<|endoftext|>"
        token = token["content"] if isinstance(token, dict) else token
        idx = tok.token_to_id(token)
        if idx is None:
            raise UserError(
                f"tokenizer {tok.path}: its {key} token {token!r} is not in the vocabulary"
            )
        ids[f"{key}_token_id"] = idx
    return ids


def hf_config(cfg: RunConfig, ids: dict[str, int]) -> dict[str, Any]:
    m = cfg.model
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": m.vocab_size,
        "n_positions": m.block_size,
        "n_embd": m.n_embd,
        "n_layer": m.n_layer,
        "n_head": m.n_head,
        "n_inner": 4 * m.n_embd,
        "activation_function": "gelu_new",  # tanh-approximate GELU, as trained
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": m.dropout,
        "embd_pdrop": m.dropout,
        "attn_pdrop": m.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "dtype": "float32",
        **ids,
    }


def generation_config(
    ids: dict[str, int], context: int, s: Sampling | None = None
) -> dict[str, Any]:
    s = s or Sampling()
    return {
        **ids,
        "do_sample": s.temperature > 0,
        "temperature": s.temperature or 1.0,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "repetition_penalty": s.repetition_penalty,
        "max_new_tokens": new_tokens_default(context, s.max_new_tokens),
    }


def write_model(model: GPT, cfg: RunConfig, ids: dict[str, int], out: Path) -> None:
    """config.json, generation_config.json and model.safetensors (no tokenizer, no card)."""
    out.mkdir(parents=True, exist_ok=True)
    save_file(hf_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    default_mode(out / "model.safetensors")
    _write_json(out / "config.json", hf_config(cfg, ids))
    _write_json(out / "generation_config.json", generation_config(ids, cfg.model.block_size))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _copy_tokenizer(tok: Tokenizer, block_size: int, out: Path) -> None:
    src = Path(tok.path)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config["model_max_length"] = block_size  # evaluation harnesses truncate to this
    config["split_special_tokens"] = True  # literal control tokens in text are text, as in training
    _write_json(config_path, config)


def check_out_dir(out: Path, force: bool) -> None:
    """An empty or new folder; with `force`, also an earlier export, which is replaced. A
    folder holding anything else is never replaced: --force would delete it. That includes an
    export with files of the user's own beside it (a clone's .git, harness results)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_export(out):
        held = sorted(p.name for p in out.iterdir())
        names = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise UserError(
            f"{out} holds files that are not an export ({names}); --force replaces only an "
            "earlier export; choose another --out"
        )
    if not force:
        raise UserError(
            f"export folder {out} exists and is not empty; choose another --out or add --force to replace it"
        )
    foreign = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES)
    if foreign:
        names = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(
            f"export folder {out} also holds files that export does not write ({names}); "
            "--force would delete them: move them out, or choose another --out"
        )


def is_export(folder: Path) -> bool:
    """A folder `export` wrote: the model's config, weights and tokenizer, and no checkpoint
    state (a checkpoint folder also holds model.safetensors)."""
    return all(
        (folder / name).is_file()
        for name in ("config.json", "model.safetensors", "tokenizer_config.json")
    ) and not is_checkpoint(folder)


def check_export(folder: Path) -> list[str]:
    """An export folder whose files load: config.json and the tokenizer's files as JSON, and
    model.safetensors whole (its header read, its length checked) and of the config's shape;
    and each file as export wrote it (the sha256 it recorded in .checksums.json), except the
    model card, which may be edited. Returns the names of the edited EDITABLE files."""
    from safetensors import safe_open

    def bad(what: str) -> UserError:
        return UserError(f"{folder}: {what}; run `hellolondon export` again")

    read = {}
    for name in ("config.json", *TOKENIZER_FILES[:2]):
        try:
            read[name] = json.loads((folder / name).read_text(encoding="utf-8"))
        except OSError:
            raise bad(f"{name} is missing or cannot be read") from None
        except ValueError as exc:
            raise bad(f"{name} is not valid JSON ({str(exc).splitlines()[0][:80]})") from None
    config = read["config.json"]
    if not isinstance(config, dict) or config.get("model_type") != "gpt2":
        raise bad("config.json is not a GPT-2 model's config")
    try:
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            found = {n: list(f.get_slice(n).get_shape()) for n in f.keys()}  # noqa: SIM118
    except Exception as exc:  # a cut-short or foreign file: safetensors names the fault
        raise bad(f"model.safetensors cannot be read ({str(exc).splitlines()[0][:80]})") from None
    try:
        wanted = hf_shapes(config)
    except Exception:  # a number missing or not one, a width the heads do not divide ...
        raise bad("config.json does not describe a GPT-2 model this project writes") from None
    for name in sorted(set(wanted) | set(found)):
        if wanted.get(name) != found.get(name):
            has = f"holds {name} of shape {found[name]}" if name in found else f"has no {name}"
            raise bad(
                f"model.safetensors does not fit config.json: it {has} ({wanted.get(name) or 'no such tensor'} expected)"
            )
    sums = folder / CHECKSUMS  # an export of an earlier version has none
    try:
        recorded = json.loads(sums.read_text(encoding="utf-8")) if sums.is_file() else {}
    except (OSError, ValueError):
        raise bad(f"{CHECKSUMS} cannot be read") from None
    if not isinstance(recorded, dict):
        raise bad(f"{CHECKSUMS} is not the record export wrote")
    edited = []
    for name, digest in recorded.items():
        if not (folder / name).is_file() or sha256_file(folder / name) != digest:
            if name in EDITABLE and (folder / name).is_file():
                edited.append(name)
                continue
            raise bad(f"{name} is not the file export wrote (missing, or its bytes changed)")
    return edited


def check_not_holding(out: Path, ckpt: Path) -> None:
    """Replacing --out removes everything in it: never the checkpoint being exported or its run."""
    if out.exists() and ckpt.resolve().is_relative_to(out.resolve()):
        raise UserError(
            f"--out {out} holds the checkpoint being exported ({ckpt}); replacing it would "
            "delete the checkpoint and its run; choose a folder outside the run"
        )


def export_checkpoint(
    path: str | Path,
    out: str | Path,
    force: bool = False,
    report: str | Path | None = None,
    license: str | None = None,
    check: bool = False,
) -> dict[str, Any]:
    """Write the export folder for a run or checkpoint; returns what the card and CLI show.
    With `check`, the finished folder is loaded back with transformers and its logits compared
    with ours (`info["check"]`, the largest difference) before it replaces anything at `out`:
    a failed check leaves `out` as it was."""
    from hellolondon.evaluation.suite import find_report
    from hellolondon.train.checkpoint import check_finite, load_for_inference

    out = Path(os.path.abspath(out))  # "." and ".." get a name, for the folder swapped in beside
    license = check_license(license)
    check_out_dir(out, force)
    if check:
        _transformers()  # missing: said before anything is written
    loaded = load_for_inference(path, "cpu")
    check_finite(loaded, "export")
    check_not_holding(out, loaded.ckpt)
    _check_tokenizer_fits(loaded)
    ids = special_ids(loaded.tokenizer)
    report_data = find_report(loaded.ckpt, loaded.state, report)
    if report_data:
        _check_report_fits(report_data, report, loaded)
    info = _write_export(loaded, ids, report_data, license, out, check)
    return info | {"out": str(out), "report": bool(report_data)}


def _check_tokenizer_fits(loaded: Loaded) -> None:
    if loaded.tokenizer.vocab_size != loaded.cfg.model.vocab_size:
        raise UserError(
            f"tokenizer has {loaded.tokenizer.vocab_size} tokens but the model {loaded.cfg.model.vocab_size}; export needs the training tokenizer"
        )


def _check_report_fits(report_data: dict, report: str | Path | None, loaded: Loaded) -> None:
    """The eval report the card quotes is of this checkpoint: its step, tokenizer, data, weights."""
    from hellolondon.evaluation.suite import other_data_name, same_weights, weights_digest

    state, ckpt = loaded.state, loaded.ckpt
    if (
        report_data.get("step") != state.get("step")
        or report_data.get("tokenizer_fingerprint") != loaded.tokenizer.fingerprint
    ):
        raise UserError(
            f"eval report is for step {report_data.get('step')} of another or this run, not for checkpoint {ckpt} (step {state.get('step')}); evaluate this checkpoint first"
        )
    if other := other_data_name(report_data):
        raise UserError(
            f"eval report {report} scored other token files than the run's own ({other}): the "
            "model card quotes the run's held-out text only; give the report of "
            "`hellolondon eval` on the run's own data, or leave out --report"
        )
    if not same_weights(report_data, weights_digest(state)):
        raise UserError(
            f"eval report of {report_data.get('checkpoint')} measured other weights than "
            f"checkpoint {ckpt} at the same step (another run's, or an earlier line of this "
            "run's); evaluate this checkpoint first"
        )


def _write_export(
    loaded: Loaded,
    ids: dict[str, int],
    report_data: dict | None,
    license: str | None,
    out: Path,
    check: bool,
) -> dict[str, Any]:
    """Write the folder under a temporary name beside `out`, check it if asked, and swap it in;
    any failure removes the temporary folder and leaves `out` as it was."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        info = _write_folder(loaded, ids, report_data, license, tmp)
        if check:
            info["check"] = _checked_logits(loaded.model, tmp, out)
        _replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # a read-only or full disk, a parent that is a file
            raise UserError(
                f"cannot write the export folder {out} ({exc.strerror or exc}); choose another --out"
            ) from None
        raise
    return info


def _write_folder(
    loaded: Loaded, ids: dict[str, int], report_data: dict | None, license: str | None, tmp: Path
) -> dict[str, Any]:
    """Every file of the export, in `tmp`; returns the info the card was written from."""
    model, cfg, state, ckpt = loaded.model, loaded.cfg, loaded.state, loaded.ckpt
    write_model(model, cfg, ids, tmp)
    _copy_tokenizer(loaded.tokenizer, cfg.model.block_size, tmp)
    info = {
        "checkpoint": str(ckpt),
        "step": state.get("step"),
        "ids": ids,
        "parameters": model.num_params(False),
        "parameters_trained": model.num_params(),  # the training log's count
    }
    card = model_card(cfg, state, ckpt, report_data, info, license)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    sums = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
    (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1) + "\n", encoding="utf-8")
    return info


def _checked_logits(model: GPT, tmp: Path, out: Path) -> float:
    """The largest logit difference of the export in `tmp` to `model`, within CHECK_TOLERANCE."""
    diff = check_with_transformers(model, tmp)
    if not diff <= CHECK_TOLERANCE:  # NaN fails too
        raise ExportMismatch(
            f"the export's logits differ from ours by up to {diff:.1e} (more "
            f"than {CHECK_TOLERANCE:.0e}); nothing was written to {out}; please report this"
        )
    return diff


def _replace(tmp: Path, out: Path) -> None:
    """Swap the finished folder in; the old one is removed only once the new one is in place.
    An empty folder keeps its place and gets the files: it may be a shell's current folder."""
    if out.is_dir() and not any(out.iterdir()):
        for f in tmp.iterdir():
            os.rename(f, out / f.name)
        tmp.rmdir()
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


class ExportMismatch(UserError):
    """The export does not give our model's logits: a conversion fault, not the user's."""


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise UserError(
            "the check needs transformers: pip install 'hellolondon[hf]', or pass --no-check"
        ) from None
    return transformers


def check_with_transformers(model: GPT, out: str | Path, n_tokens: int = 16) -> float:
    """Load the export with `transformers` and return the largest logit difference to `model`
    on a fixed token sequence (float32; NaN when either is not finite). Raises UserError when
    transformers is missing."""
    GPT2LMHeadModel = _transformers().GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar: noise in export's output
    try:
        hf = GPT2LMHeadModel.from_pretrained(str(out), local_files_only=True).eval()
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    g = torch.Generator().manual_seed(0)
    n = min(n_tokens, model.config.block_size)
    idx = torch.randint(0, model.config.vocab_size, (1, n), generator=g)
    with torch.inference_mode():
        ours = model.float().cpu()(idx)[0]
        theirs = hf(idx).logits.float()
    return float((ours - theirs).abs().max())
