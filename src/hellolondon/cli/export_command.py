"""`hellolondon export` and `hellolondon publish`: share a trained model in Hugging Face format."""

from __future__ import annotations

import argparse
import sys

EXPORT_ABOUT = "`hellolondon export`: write a checkpoint as a Hugging Face GPT-2 folder."
PUBLISH_ABOUT = (
    "`hellolondon publish`: upload a folder `hellolondon export` wrote to the Hugging Face Hub."
)

EXPORT_EXAMPLES = """examples:
  hellolondon export runs/london-tiny-demo-20261126-101500 --out export/london-tiny
  hellolondon export runs/RUN/checkpoints/best --out export/london-slm --license mit --force

The folder loads with transformers (GPT2LMHeadModel / AutoModelForCausalLM) and has a model card
(README.md). Evaluate the checkpoint first (hellolondon eval) to put its metrics in the card.
Before it replaces anything at --out, the export is loaded back with transformers and its
logits compared with ours (needs the `hf` extra; skip with --no-check)."""

PUBLISH_EXAMPLES = """examples:
  hellolondon publish export/london-tiny --repo your-name/london-tiny --dry-run
  HF_TOKEN=hf_... hellolondon publish export/london-tiny --repo your-name/london-tiny --private

The token is read from HF_TOKEN (a write token from https://huggingface.co/settings/tokens),
or else from where `hf auth login` saved it; it is never printed or written anywhere."""


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a Hugging Face GPT-2 folder from a checkpoint",
        description=EXPORT_ABOUT,
        epilog=EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a run folder (its newest checkpoint) or a checkpoint folder")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder to write (must be new or empty)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier export at --out (one with files of your own beside it is kept)",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        help="eval report JSON for the card (default: the run's own for this step)",
    )
    p.add_argument(
        "--license",
        help="licence id for the card's metadata, e.g. mit or cc-by-4.0 (default: none)",
    )
    p.add_argument(
        "--no-check", action="store_true", help="skip loading the export back with transformers"
    )
    p.set_defaults(func=run_export)

    q = sub.add_parser(
        "publish",
        help="upload an export folder to the Hugging Face Hub",
        description=PUBLISH_ABOUT,
        epilog=PUBLISH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("folder", help="a folder written by `hellolondon export`")
    q.add_argument(
        "--repo",
        required=True,
        metavar="USER/NAME",
        help="model repository on the Hub (created if missing)",
    )
    q.add_argument("--private", action="store_true", help="create the repository as private")
    q.add_argument("--dry-run", action="store_true", help="list what would be uploaded and stop")
    q.add_argument(
        "--message", default="Upload model exported with hellolondon", help="commit message"
    )
    q.set_defaults(func=run_publish)


def run_export(args: argparse.Namespace) -> int:
    from hellolondon.export import ExportMismatch, export_checkpoint

    try:
        info = export_checkpoint(
            args.checkpoint, args.out, force=args.force, report=args.report,
            license=args.license, check=not args.no_check,
        )  # fmt: skip
    except ExportMismatch as exc:  # a fault of the conversion: exit 1, as a failed check
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ids = info["ids"]
    print(
        f"exported step {info['step']} of {info['checkpoint']} to {info['out']} ({info['parameters']:,} parameters with the position table; "
        f"bos {ids['bos_token_id']}, eos {ids['eos_token_id']}, pad {ids['pad_token_id']})"
    )
    if not info["report"]:
        print(
            "note: no eval report for this checkpoint, so the model card has no metrics; run `hellolondon eval` and export again"
        )
    if "check" in info:
        print(f"check: transformers loads it; largest logit difference to ours {info['check']:.1e}")
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from hellolondon.publish import publish

    publish(
        args.folder, args.repo, dry_run=args.dry_run, private=args.private, message=args.message
    )
    return 0
