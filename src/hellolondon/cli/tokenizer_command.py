"""`hellolondon tokenizer train|encode|terms`: build and inspect the byte-level BPE tokenizer."""

from __future__ import annotations

import argparse
import sys
import time

from hellolondon.corpus.documents import read_documents

RAW = argparse.RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "tokenizer", help="train or inspect the tokenizer", formatter_class=RAW,
        epilog="examples:\n  hellolondon tokenizer train --corpus work/documents.jsonl --out work/tokenizer\n"
        '  hellolondon tokenizer encode --tokenizer work/tokenizer "The watermen of Southwark"\n'
        "  hellolondon tokenizer terms --tokenizer work/tokenizer --corpus work/documents.jsonl",
    )  # fmt: skip
    tsub = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)

    train = tsub.add_parser(
        "train",
        help="train byte-level BPE on documents.jsonl",
        formatter_class=RAW,
        epilog="example:\n  hellolondon tokenizer train --corpus work/documents.jsonl --out work/tokenizer --vocab-size 8192\n\n"
        "A folder that already holds a tokenizer is replaced only with --force: token files\n"
        "prepared with it, and runs trained on them, would no longer match it.",
    )
    train.add_argument("--corpus", required=True, help="documents.jsonl to learn from")
    train.add_argument("--out", required=True, help="folder for tokenizer.json and its configs")
    train.add_argument(
        "--vocab-size",
        type=int,
        default=30000,
        help="vocabulary size (default 30000, at most 65536)",
    )
    train.add_argument(
        "--no-historical",
        action="store_true",
        help="do not force the historical terms into the vocabulary (they are left out anyway below 4096)",
    )
    train.add_argument("--force", action="store_true", help="replace a tokenizer already in --out")
    train.set_defaults(func=train_command)

    encode = tsub.add_parser(
        "encode",
        help="show how a text is split into tokens",
        formatter_class=RAW,
        epilog='examples:\n  hellolondon tokenizer encode --tokenizer work/tokenizer "The watermen of Southwark"\n'
        '  hellolondon tokenizer encode --tokenizer work/tokenizer -- "-- a text that starts with a dash"',
    )
    encode.add_argument("text", help="text to encode (after --, when it starts with -)")
    encode.add_argument("--tokenizer", required=True, help="tokenizer folder")
    encode.set_defaults(func=encode_command)

    terms = tsub.add_parser(
        "terms",
        help="count the historical terms' tokens in a corpus",
        formatter_class=RAW,
        epilog="example:\n  hellolondon tokenizer terms --tokenizer work/tokenizer --corpus work/documents.jsonl",
    )
    terms.add_argument("--tokenizer", required=True, help="tokenizer folder")
    terms.add_argument("--corpus", required=True, help="documents.jsonl to count in")
    terms.add_argument(
        "--top", type=int, default=20, help="how many of the most frequent terms to list"
    )
    terms.set_defaults(func=terms_command)


def train_command(args: argparse.Namespace) -> int:
    from hellolondon.files import writing
    from hellolondon.tokenizer import FILES, check_replace, train_tokenizer

    check_replace(args.out, args.force)
    next(read_documents(args.corpus), None)  # fail fast with a clear line on a bad corpus
    with writing(args.out, FILES):
        check_replace(args.out, args.force)  # again: another one may have finished meanwhile
        t0 = time.perf_counter()
        texts = (doc.text for doc in read_documents(args.corpus))
        tok = train_tokenizer(
            texts,
            args.out,
            args.vocab_size,
            historical=False if args.no_historical else None,
            show_progress=sys.stdout.isatty(),  # its bars leave blank lines in a pipe or file
        )
    print(f"tokenizer: {tok.vocab_size} tokens in {time.perf_counter() - t0:.1f}s -> {args.out}")
    if tok.vocab_size < args.vocab_size:
        print(
            f"warning: {tok.vocab_size:,} tokens, not the {args.vocab_size:,} asked for: no pair "
            "of symbols left occurs twice in this corpus; a larger corpus fills the vocabulary",
            file=sys.stderr,
        )
    print(f"fingerprint: {tok.fingerprint}")
    return 0


def encode_command(args: argparse.Namespace) -> int:
    from hellolondon.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    ids = tok.encode(args.text)
    print(f"{len(ids)} tokens: {ids}")
    # a byte that is only part of a character is shown as <0xNN>
    print(" | ".join(repr(tok.piece(i)) for i in ids))
    return 0


def terms_command(args: argparse.Namespace) -> int:
    from hellolondon.errors import UserError
    from hellolondon.tokenizer import historical_groups, load_tokenizer, term_counts

    if args.top < 0:  # a negative slice would list all but the last few
        raise UserError(f"--top must be 0 or more, not {args.top}")
    tok = load_tokenizer(args.tokenizer)
    read = [0]

    def texts():
        for doc in read_documents(args.corpus):
            read[0] += 1
            yield doc.text

    counts = term_counts(tok, texts())
    if not read[0]:  # all zeros would read as "none of the terms occur"
        raise UserError(
            f"corpus file {args.corpus} has no documents; expected documents.jsonl with one "
            "JSON document per line"
        )
    found = {t: n for t, n in counts.items() if n}
    groups = historical_groups()
    total = sum(len(terms) for terms in groups.values())
    print(
        f"{len(counts)} of {total} historical terms are single tokens; {len(found)} occur, "
        f"{sum(found.values()):,} times in all"
    )
    for group, terms in groups.items():
        seen = sorted(((found[t], t) for t in terms if t in found), key=lambda nt: (-nt[0], nt[1]))
        most = ", ".join(f"{t} {n:,}" for n, t in seen[:4]) + (", ..." if len(seen) > 4 else "")
        print(f"  {group}: {len(seen)} of {len(terms)} occur, {sum(n for n, _ in seen):,} times"
              + (f" ({most})" if seen else ""))  # fmt: skip
    for term, n in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[: args.top]:
        print(f"{n:8d}  {term}")
    return 0
