"""`hellolondon eval`: measure a trained model: held-out bits-per-byte and perplexity over the
whole validation split, historical knowledge probes, and the quality of generated text."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  hellolondon eval runs/london-tiny-demo-20261126-101500
  hellolondon eval runs/RUN/checkpoints/best --data work/data --stride 128
  hellolondon eval runs/RUN --no-heldout --probes my_probes.jsonl
  hellolondon eval runs/RUN --max-tokens 200000 --json

The report is written as eval/step-NNNNNN.json and .md in the run folder (or --out DIR), and
its numbers are logged to the run's tracker under eval/ keys (leave out with --no-track).
With --data naming token files the run was not trained on, the report is
eval/step-NNNNNN-on-<folder>.json, kept apart from the run's own and not logged."""


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a run or checkpoint (bits-per-byte, probes, samples)",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a run folder (its newest checkpoint) or a checkpoint folder")
    p.add_argument("--data", help="prepared token folder (default: the one the run trained on)")
    p.add_argument(
        "--probes",
        metavar="FILE",
        help="probe items as JSONL (default: the packaged 1500-1850 set)",
    )
    p.add_argument("--out", metavar="DIR", help="report folder (default: RUN/eval)")
    p.add_argument(
        "--stride", type=int, help="tokens scored per sliding window (default: half the context)"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=0,
        help="score only this many held-out tokens (default 0: all of them)",
    )
    p.add_argument(
        "--gen-tokens", type=int, default=64, help="tokens generated per prompt (default: 64)"
    )
    p.add_argument("--no-heldout", action="store_true", help="skip the held-out split")
    p.add_argument("--no-probes", action="store_true", help="skip the knowledge probes")
    p.add_argument("--no-generation", action="store_true", help="skip generation quality")
    p.add_argument(
        "--no-track", action="store_true", help="do not log the results to the run's tracker"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--json", action="store_true", help="print the JSON report instead of the summary"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hellolondon.evaluation.suite import (
        check_report_dir,
        default_out,
        other_data_name,
        summary_text,
    )
    from hellolondon.train.checkpoint import resolve

    parts = _parts_to_evaluate(args)
    ckpt_path = resolve(args.checkpoint)
    _check_tracker_free(ckpt_path, args.no_track)
    out = check_report_dir(args.out or default_out(ckpt_path))
    report, cfg, state, ckpt = _evaluate(args, parts)
    other = other_data_name(report)  # held out from other token files than the run's
    saved, json_path, md_path = _save(report, state, out, other)
    superseded = "heldout" in report and saved["heldout"] is not report["heldout"]
    track = _log_to_tracker(report, saved, superseded, cfg, state, ckpt, other, args)
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else summary_text(report))
    _print_notes(report, saved, other, superseded, args.json)
    tracked = "; logged to the run's tracker" if track else ""
    # with --json, stdout is the report alone so that it can be piped
    print(
        f"report: {json_path} and {md_path.name}{tracked}",
        file=sys.stderr if args.json else sys.stdout,
    )
    return 0


def _parts_to_evaluate(args: argparse.Namespace) -> tuple[str, ...]:
    """The parts to evaluate, once the options are checked."""
    from hellolondon.errors import UserError

    skip = {"heldout": args.no_heldout, "probes": args.no_probes, "generation": args.no_generation}
    parts = tuple(k for k, off in skip.items() if not off)
    if not parts:
        raise UserError(
            "nothing to evaluate: --no-heldout, --no-probes and --no-generation leave no part"
        )
    if args.max_tokens < 0:
        raise UserError(f"--max-tokens must be 0 (all) or more, not {args.max_tokens}")
    if args.gen_tokens < 1:
        raise UserError(f"--gen-tokens must be at least 1, not {args.gen_tokens}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder for the report")
    return parts


def _check_tracker_free(ckpt_path: Path, no_track: bool) -> None:
    """Refuse to log to the tracker of a run that is being trained now."""
    from hellolondon.errors import UserError
    from hellolondon.rundir import RunDir

    training = RunDir.of_checkpoint(ckpt_path)
    found = training.training_process() if training is not None and not no_track else None
    if found is not None and found[0] == "running":
        # its tracker (metrics log, summary, W&B run) is the training process's while it runs
        raise UserError(
            f"run {training.path} is being trained now ({found[1]}), so its tracker is in use; "
            "evaluate with --no-track, or wait for the run to end"
        )


def _evaluate(args: argparse.Namespace, parts: tuple[str, ...]) -> tuple[dict, Any, dict, Path]:
    """The report, config, state and checkpoint folder of the asked evaluation."""
    from hellolondon.evaluation.suite import evaluate
    from hellolondon.hardware import resolve_device

    return evaluate(
        args.checkpoint,
        args.data,
        args.probes,
        parts,
        resolve_device(args.device, "--device "),
        args.stride,
        args.max_tokens,
        args.gen_tokens,
        show_progress=True,
    )


def _save(report: dict, state: dict, out: Path, other: str | None) -> tuple[dict, Path, Path]:
    """Write the report, with the parts it left out taken from an earlier one; returns what
    was saved and its .json and .md files."""
    from hellolondon.evaluation.suite import report_name, with_earlier_parts, write_report

    name = other or report_name(state)
    saved = with_earlier_parts(report, out, name)
    json_path, md_path = write_report(saved, out, name)
    return saved, json_path, md_path


def _log_to_tracker(
    report: dict,
    saved: dict,
    superseded: bool,
    cfg: Any,
    state: dict,
    ckpt: Path,
    other: str | None,
    args: argparse.Namespace,
) -> bool:
    """Log the scores to the run's tracker, unless --no-track, a checkpoint outside a run or
    other token files than the run's; returns whether they were logged."""
    from hellolondon.evaluation.suite import log_to_run
    from hellolondon.rundir import RunDir

    logged = {k: v for k, v in report.items() if not (superseded and k == "heldout")}
    run_dir = RunDir.of_checkpoint(ckpt)
    track = run_dir is not None and not args.no_track and other is None
    if track:
        # the tracker's start line is not part of the report that --json pipes on
        with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
            log_to_run(logged, cfg, state, run_dir, whole=saved)
    return track


def _print_notes(
    report: dict, saved: dict, other: str | None, superseded: bool, as_json: bool
) -> None:
    """Say when the report was kept apart (other data) or kept an earlier held-out score."""
    if other is not None:
        print(
            f"{report['heldout']['data_dir']} holds other token files than the run was trained "
            "on: the report is kept apart from the run's own (which export's model card quotes) "
            "and not logged to its tracker. Whether these documents were in the run's training "
            "text is not checked",
            file=sys.stderr if as_json else sys.stdout,
        )
    if superseded:
        print(
            f"the report keeps its earlier held-out score over {saved['heldout']['tokens']:,} "
            f"tokens; this one over {report['heldout']['tokens']:,} is shown above, not saved",
            file=sys.stderr if as_json else sys.stdout,
        )
