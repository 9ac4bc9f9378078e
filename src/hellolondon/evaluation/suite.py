"""Run the evaluation of one checkpoint, write its report and log it to the run's tracker.

Reports go to `runs/<run>/eval/step-NNNNNN.json` (the numbers) and `.md` (a short readable
summary), so `hellolondon export` can put the measured metrics of that very checkpoint in the
model card.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hellolondon.errors import UserError
from hellolondon.files import atomic_write, read_json, unwritable
from hellolondon.rundir import EVAL_REPORT_KEYS, RunDir

PARTS = ("heldout", "probes", "generation")


def default_out(ckpt: Path) -> Path:
    run = RunDir.of_checkpoint(ckpt)
    return run.eval_dir if run is not None else ckpt / "eval"


def report_name(state: dict) -> str:
    return f"step-{int(state.get('step', 0)):06d}"


def find_report(ckpt: Path, state: dict, explicit: str | Path | None = None) -> dict | None:
    """The eval report of this checkpoint if one was written (or the one given)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(
                f"eval report {path} not found; run `hellolondon eval` first or leave out --report"
            )
    else:
        path = default_out(ckpt) / f"{report_name(state)}.json"
        if not path.is_file():
            return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(
            f"eval report {path} is not valid JSON; run `hellolondon eval` again"
        ) from None
    if not isinstance(report, dict) or "step" not in report:
        raise UserError(
            f"{path} is not an eval report (no step); give the .json that `hellolondon eval` "
            "wrote, or leave out --report"
        )
    return report


def weights_digest(state: dict) -> str | None:
    """The sha256 of a checkpoint's weights file, as its state.json records it."""
    return (state.get("files") or {}).get("model.safetensors")


def same_weights(report: dict[str, Any], digest: str | None) -> bool:
    """Whether a report measured the weights with this digest (a report without one, from an
    earlier version, is taken on its step and tokenizer alone)."""
    return not (report.get("weights_sha256") and digest) or report["weights_sha256"] == digest


def _data_dir(cfg, data_dir: str | Path | None, run: RunDir | None) -> Path:
    """`--data`, else the folder the run trained on: as its config names it, or by the absolute
    path it recorded when evaluated from another folder (as `reproduce` finds it)."""
    from hellolondon.prepare import is_prepared
    from hellolondon.provenance import recorded_data_dir

    recorded = recorded_data_dir(run.read_config()) if run is not None else None
    path = Path(data_dir or recorded or cfg.data.data_dir)
    if not is_prepared(path):
        hint = "" if data_dir else " (the run's data.data_dir)"
        raise UserError(
            f"no prepared token files at {path}{hint}; pass --data DIR, or --no-heldout to skip"
        )
    return path


def own_data(run: RunDir | None, cfg, data: Path, meta: dict) -> bool:
    """Whether `data` holds the token files the run was trained on (so its validation split is
    the run's own held-out text): by their fingerprint where the run recorded it, else by the
    folder its config names."""
    from hellolondon.provenance import trained_on

    recorded = trained_on(run.read_config()) if run is not None else None
    if recorded and meta.get("tokens_fingerprint"):
        return recorded == meta["tokens_fingerprint"]
    return data.resolve() == Path(cfg.data.data_dir).resolve()


def other_data_name(report: dict[str, Any]) -> str | None:
    """`step-NNNNNN-on-<folder>` for a report whose held-out split is not the run's own: kept
    apart from the run's report (which the model card quotes) and from its tracker."""
    h = report.get("heldout")
    if not h or h.get("own_data", True):
        return None
    return f"{report_name(report)}-on-{_key(Path(h['data_dir']).name)}"


def evaluate(
    path: str | Path,
    data_dir: str | Path | None = None,
    probes_path: str | Path | None = None,
    parts: tuple[str, ...] = PARTS,
    device: str = "cpu",
    stride: int | None = None,
    max_tokens: int = 0,
    gen_tokens: int = 64,
    show_progress: bool = False,
) -> tuple[dict[str, Any], Any, dict, Path]:
    """Evaluate a run (its newest checkpoint) or a checkpoint. Returns (report, config,
    checkpoint state, checkpoint folder). Inputs are all checked before the slow work starts."""
    from hellolondon.evaluation.generation import generation_quality
    from hellolondon.evaluation.heldout import score_heldout
    from hellolondon.evaluation.probes import load_probes, score_probes
    from hellolondon.prepare import check_tokenizer_matches, load_meta
    from hellolondon.train.checkpoint import check_finite, load_for_inference

    t0 = time.perf_counter()
    loaded = load_for_inference(path, device)
    check_finite(loaded, "evaluate")  # before minutes of scoring that could only give NaN
    model, cfg, state, ckpt, tok = (
        loaded.model, loaded.cfg, loaded.state, loaded.ckpt, loaded.tokenizer
    )  # fmt: skip
    probes = load_probes(probes_path) if "probes" in parts else None
    meta = data = None
    run = RunDir.of_checkpoint(ckpt)
    if "heldout" in parts:
        data = _data_dir(cfg, data_dir, run)
        meta = load_meta(data)
        check_tokenizer_matches(meta, tok)
    report: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "run": run.name if run else None,
        "step": int(state.get("step", 0)),
        "model": {**cfg.model.__dict__, "parameters": model.num_params(False)},
        "tokenizer_fingerprint": tok.fingerprint,
        # which weights were measured: another run, or another line of this run, has other
        # weights at the same step
        "weights_sha256": weights_digest(state),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if data is not None:
        report["heldout"] = score_heldout(
            model, tok, data, meta, stride, max_tokens, device, show_progress
        )
        report["heldout"]["data_dir"] = str(data)
        report["heldout"]["own_data"] = own_data(run, cfg, data, meta)
    if probes is not None:
        report["probes"] = score_probes(model, tok, probes, device, show_progress)
        report["probes"]["file"] = str(probes_path or "packaged")
    if "generation" in parts:
        report["generation"] = generation_quality(
            model, tok, max_new_tokens=gen_tokens, show_progress=show_progress
        )
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report, cfg, state, ckpt


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def summary_text(r: dict[str, Any]) -> str:
    """A short Markdown summary of a report."""
    where = f"run {r['run']}" if r.get("run") else r["checkpoint"]
    lines = [f"# Evaluation: {where}, step {r['step']}", ""]
    h = r.get("heldout")
    if h:
        scope = (
            "every token"
            if h["complete"]
            else f"the first {h['tokens']:,} of {h['split_tokens']:,} tokens"
        )
        lines += [
            f"**Held-out: {h['bpb']:.4f} bits per byte** (loss {h['loss']:.4f} nats/token, perplexity "
            f"{h['ppl']:.2f}) over {scope} of the validation split, context {h['context']}, stride {h['stride']}.",
            "",
        ]
        for key in ("by_period", "by_source", "by_category"):
            if key in h:
                parts = [f"{k} {v['bpb']:.3f}" for k, v in h[key].items()]  # names hold commas
                lines.append(f"- bits/byte {key.replace('_', ' ')}: " + "; ".join(parts))
        lines.append("")
    p = r.get("probes")
    if p:
        lines += [
            f"**Knowledge probes: {_pct(p['accuracy'])} correct** against {_pct(p['chance'])} by chance "
            f"({p['items']} items, z = {p['z']:+.2f}; per-byte scoring {_pct(p['accuracy_norm'])}).",
            "",
            "- by category: "
            + ", ".join(
                f"{k} {_pct(v['accuracy'])} (chance {_pct(v['chance'])})"
                for k, v in p["by_category"].items()
            ),
            "",
        ]
    g = r.get("generation")
    if g:
        lines += [
            f"**Generation** ({g['prompts']} prompts, up to {g['sampling']['max_new_tokens']} tokens, "
            f"temperature {g['sampling']['temperature']}): distinct-1 {g['distinct_1']:.3f}, distinct-2 "
            f"{g['distinct_2']:.3f}, distinct-3 {g['distinct_3']:.3f}, repetition rate {g['repetition_rate']:.3f}.",
            "",
        ]
        for s in g["samples"]:
            lines += [f"> **{s['prompt']}**{s['text']}".replace("\n", " "), ""]
    return "\n".join(lines).rstrip() + "\n"


def check_report_dir(out_dir: str | Path) -> Path:
    """Check that the report folder can be created and written to, before the evaluation that
    fills it (the whole held-out split can take hours); nothing is created yet."""
    out = Path(out_dir)
    why = unwritable(out)
    if why:
        raise UserError(f"cannot create the report folder {out} ({why}); choose another --out")
    return out


def with_earlier_parts(report: dict[str, Any], out_dir: str | Path, name: str) -> dict[str, Any]:
    """The report with the parts it left out (--no-heldout, ...) taken from an earlier report of
    the same checkpoint and tokenizer in `out_dir`, so that a partial evaluation adds to the
    report that export puts in the model card rather than replacing it."""
    earlier = read_json(Path(out_dir) / f"{name}.json")
    if not _same_checkpoint(earlier, report):
        return report
    kept = {p: earlier[p] for p in PARTS if p in earlier and p not in report}
    if _scored_more(earlier.get("heldout"), report.get("heldout")):
        kept["heldout"] = earlier["heldout"]
    return report | kept


def _same_checkpoint(earlier: dict[str, Any], report: dict[str, Any]) -> bool:
    """Whether two reports measured one checkpoint: the same step, tokenizer and weights, in a
    run folder that may have been renamed since; a report without the weights' digest (from an
    earlier version) is taken on its run's name instead."""
    if any(earlier.get(k) != report[k] for k in ("step", "tokenizer_fingerprint")):
        return False
    if earlier.get("weights_sha256") and report.get("weights_sha256"):
        return earlier["weights_sha256"] == report["weights_sha256"]
    return earlier.get("run") == report["run"]


def _scored_more(earlier: dict | None, new: dict | None) -> bool:
    """Whether an earlier held-out score covers more of the same split, at the same context and
    stride, than a new one (a --max-tokens check after a complete evaluation, say): the report
    then keeps the earlier score."""
    if not earlier or not new:
        return False
    same = ("data_dir", "split_tokens", "context", "stride")
    return all(earlier.get(k) == new.get(k) for k in same) and earlier["tokens"] > new["tokens"]


def write_report(report: dict[str, Any], out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """`<name>.json` and `<name>.md` in `out_dir`, each written whole or not at all."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the report folder {out} ({exc.strerror}); choose another --out"
        ) from None
    paths = (out / f"{name}.json", out / f"{name}.md")
    texts = (json.dumps(report, indent=1, ensure_ascii=False) + "\n", summary_text(report))
    for path, text in zip(paths, texts, strict=True):
        try:
            atomic_write(path, text)
        except OSError as exc:
            raise UserError(
                f"cannot write the report {path} ({exc.strerror}); choose another --out"
            ) from None
    return paths


def _key(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "unknown"


def tracker_row(r: dict[str, Any]) -> dict[str, float]:
    """The report's numbers under `eval/` keys."""
    row: dict[str, float] = {"eval/iter": r["step"]}
    h = r.get("heldout")
    if h:
        row |= {
            "eval/val_bpb": h["bpb"],
            "eval/heldout_loss": h["loss"],
            "eval/heldout_ppl": h["ppl"],
            "eval/heldout_tokens": h["tokens"],
        }
        for group in ("period", "source", "category"):
            for label, v in h.get(f"by_{group}", {}).items():
                row[f"eval/val_bpb/{group}/{_key(label)}"] = v["bpb"]
    p = r.get("probes")
    if p:
        row |= {
            "eval/probe_accuracy": p["accuracy"],
            "eval/probe_chance": p["chance"],
            "eval/probe_accuracy_norm": p["accuracy_norm"],
        }
        for cat, v in p["by_category"].items():
            row[f"eval/probe_accuracy/{_key(cat)}"] = v["accuracy"]
    g = r.get("generation")
    if g:
        row |= {f"eval/gen_distinct_{n}": g[f"distinct_{n}"] for n in (1, 2, 3)}
        row["eval/gen_repetition"] = g["repetition_rate"]
    return row


def log_to_run(
    report: dict[str, Any], cfg, state: dict, run: RunDir, whole: dict[str, Any] | None = None
) -> None:
    """Append the eval row (what `report` measured now) to the run's tracker (the metrics log,
    and W&B when configured) at the checkpoint's step, resuming the run's own tracker run, and
    set the run summary to `whole`, the checkpoint's report with the parts measured before:
    a resumed W&B run keeps only steps it does not hold yet, and the summary has no steps."""
    from hellolondon.tracking.setup import open_tracker

    row, summary = tracker_row(report), tracker_row(whole or report)
    # the summary holds one report: keys of another one (another step, left-out parts) go
    stale = {
        k: None for k in run.read_summary() if k.startswith(EVAL_REPORT_KEYS) and k not in summary
    }
    tracker = open_tracker(
        cfg,
        run,
        rank=0,
        run_config=run.read_config() or None,
        resume_run_id=state.get("tracker_run_id"),
    )
    try:
        if len(row) > 1:  # not eval/iter alone: a part measured now
            tracker.log(row, report["step"])
        tracker.summary(summary | stale)
    finally:
        tracker.finish()
