"""`hellolondon prepare`: documents.jsonl -> train.bin / val.bin / meta.json."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "prepare",
        help="tokenize documents.jsonl into train.bin / val.bin",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            "  hellolondon prepare --corpus work/documents.jsonl --tokenizer work/tokenizer --out work/data\n\n"
            "Writes uint16 token files (each document starts with <|endoftext|>) and meta.json\n"
            "(counts, tokenizer fingerprint, the validation documents' spans). A folder that\n"
            "already holds token files is replaced only with --force: runs trained on them read\n"
            "them again to resume and to evaluate."
        ),
    )
    parser.add_argument("--corpus", required=True, help="the corpus file (documents.jsonl)")
    parser.add_argument(
        "--tokenizer", required=True, help="tokenizer folder from `tokenizer train`"
    )
    parser.add_argument("--out", required=True, help="folder for train.bin, val.bin and meta.json")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="encoding processes (default: 1 below 64 MB, else up to 8); more than the "
        "CPUs this process may use is lowered to that number, with a note, since each "
        "process holds a copy of the tokenizer and encoding is CPU-bound",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.05,
        help="share of each source's text held out (default 0.05)",
    )
    parser.add_argument("--force", action="store_true", help="replace token files already in --out")
    parser.set_defaults(func=prepare_command)


def prepare_command(args: argparse.Namespace) -> int:
    from hellolondon.errors import UserError
    from hellolondon.prepare import check_replace, prepare, usable_cpus

    if not 0 < args.val_fraction < 0.5:
        raise UserError("--val-fraction must be between 0 and 0.5")
    if args.workers is not None and args.workers < 1:
        raise UserError("--workers must be at least 1")
    if args.workers is not None and args.workers > (cpus := usable_cpus()):
        print(
            f"note: --workers {args.workers} is more than the CPUs this process may use "
            f"({cpus}); using {cpus}",
            file=sys.stderr,
        )
        args.workers = cpus
    check_replace(args.out, args.force)
    meta = prepare(
        args.corpus, args.tokenizer, args.out, args.workers, args.val_fraction,
        show_progress=sys.stderr.isatty(),  # a bar's redraws would fill a log file
    )  # fmt: skip
    seconds = meta["seconds"]
    mb = meta["corpus_bytes"] / 1e6
    print(
        f"train: {meta['train_tokens']:,} tokens in {meta['train_documents']} documents; "
        f"val: {meta['val_tokens']:,} tokens in {meta['val_documents']} documents"
    )
    print(f"{mb:.1f} MB in {seconds:.1f}s ({mb / max(seconds, 1e-9):.1f} MB/s) -> {args.out}")
    return 0
