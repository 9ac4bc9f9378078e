"""`hellolondon corpus catalog|collect|clean|report|sample`: build the historical corpus."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from hellolondon.corpus.layout import CorpusFolder

RAW = argparse.RawDescriptionHelpFormatter
DEFAULT_DIR = "work/corpus"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "corpus", help="collect, clean and report the 1500-1850 corpus", formatter_class=RAW,
        description="Build documents.jsonl from Project Gutenberg, archive.org and local files.",
        epilog="steps:\n  hellolondon corpus collect   # download the catalog's sources into work/corpus\n"
        "  hellolondon corpus clean     # -> work/corpus/documents.jsonl, clean_log.jsonl, report.md\n"
        "  hellolondon corpus report    # documents, characters, tokens per period and category\n"
        "  hellolondon corpus sample --out work/documents.jsonl   # the bundled corpus, offline",
    )  # fmt: skip
    steps = parser.add_subparsers(dest="corpus_command", metavar="STEP", required=True)
    _catalog_parser(steps)
    _collect_parser(steps)
    _clean_parser(steps)
    _report_parser(steps)
    sample = steps.add_parser(
        "sample", help="write the bundled sample corpus (no network)", formatter_class=RAW,
        epilog="example:\n  hellolondon corpus sample --out work/documents.jsonl",
    )  # fmt: skip
    sample.add_argument(
        "--out",
        default="work/documents.jsonl",
        help="documents.jsonl to write (default: work/documents.jsonl)",
    )
    sample.add_argument(
        "--force", action="store_true", help="replace --out when it holds other documents"
    )
    sample.set_defaults(func=sample_command)


def _catalog_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", action="append", default=[], metavar="FILE",
                   help="your own catalog (TOML or JSON, same shape as the built-in one); repeatable")  # fmt: skip
    p.add_argument("--no-builtin", action="store_true", help="use only the --catalog files")
    p.add_argument("--status", default="believed,unverified",
                   help="ID statuses to take: believed,unverified,doubtful,wrong (default believed,unverified)")  # fmt: skip
    p.add_argument("--period", default="", help="only these periods, e.g. tudor,stuart")
    p.add_argument(
        "--category", default="", help="only these categories, e.g. fiction,diary_letters"
    )
    p.add_argument(
        "--id", action="append", default=[], help="only this source id (e.g. pg-376); repeatable"
    )


def _catalog_parser(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser(
        "catalog", help="list (and check) the catalog's sources", formatter_class=RAW,
        epilog="examples:\n  hellolondon corpus catalog\n  hellolondon corpus catalog --status doubtful,wrong\n"
        "  hellolondon corpus catalog --catalog my_sources.toml --no-builtin   # check your file",
    )  # fmt: skip
    _catalog_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=catalog_command)


def _collect_parser(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser(
        "collect", help="download the catalog's sources (resumable, checked)", formatter_class=RAW,
        epilog="examples:\n  hellolondon corpus collect                      # all believed and unverified sources\n"
        "  hellolondon corpus collect --id pg-376 --id pg-1342\n"
        "  hellolondon corpus collect --retry-failed       # try again what failed last time\n"
        "  hellolondon corpus collect --offline            # check the cache, fetch nothing\n"
        "  hellolondon corpus collect --gutenberg-mirror https://mirror.example/gutenberg   # a PG mirror\n\n"
        "Writes <out>/raw/<id>.txt (checked files only) and <out>/manifest.json (every source:\n"
        "status, bytes, sha256, attempts, error). Re-running skips what is complete.",
    )  # fmt: skip
    _catalog_options(p)
    p.add_argument("--out", default=DEFAULT_DIR, help=f"collection folder (default {DEFAULT_DIR})")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="take only the first N selected sources (default: all)",
    )
    p.add_argument("--offline", action="store_true", help="use only the local cache; no network")
    p.add_argument(
        "--retry-failed", action="store_true", help="retry sources that failed or were rejected"
    )
    _pacing_options(p)
    _timeout_options(p)
    _server_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=collect_command)


def _pacing_options(p: argparse.ArgumentParser) -> None:
    """How many downloads run at once, and how fast one host is asked."""
    p.add_argument("--workers", type=int, default=4, help="sources downloaded at once (default 4)")
    p.add_argument(
        "--per-host", type=int, default=2, help="concurrent requests per host (default 2)"
    )
    p.add_argument(
        "--delay",
        type=float,
        default=2.0,
        help="least seconds between requests to one host (default 2)",
    )


def _timeout_options(p: argparse.ArgumentParser) -> None:
    """How long a download may take, how often it is tried, and how large it may be."""
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument(
        "--read-timeout", type=float, default=60.0, help="seconds without bytes (default 60)"
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=900.0,
        help="most seconds one download may take, all attempts and waits included; "
        "0 for none (default 900)",
    )
    p.add_argument(
        "--retries", type=int, default=4, help="retries after the first attempt (default 4)"
    )
    p.add_argument(
        "--backoff",
        type=float,
        default=2.0,
        help="first retry wait in seconds, doubling (default 2)",
    )
    p.add_argument(
        "--max-mb", type=float, default=256.0, help="largest download in MB (default 256)"
    )


def _server_options(p: argparse.ArgumentParser) -> None:
    """Where the sources are fetched from, and what the requests say they are."""
    p.add_argument("--gutenberg-mirror", default="",
                   help="a Project Gutenberg mirror's base URL, or a URL template with {id} and {path}")  # fmt: skip
    p.add_argument("--archive-base", default="https://archive.org", help="archive.org base URL")
    p.add_argument("--user-agent", default="", help="User-Agent header (default names hellolondon)")


def _clean_settings() -> str:
    import dataclasses
    import textwrap

    from hellolondon.corpus.clean import CleanConfig

    pairs = [f"{f.name}={str(f.default).lower()}" for f in dataclasses.fields(CleanConfig)]
    return textwrap.fill(", ".join(pairs), width=88, initial_indent="  ", subsequent_indent="  ")


def _clean_parser(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser(
        "clean", help="clean, filter and de-duplicate into documents.jsonl", formatter_class=RAW,
        epilog="examples:\n  hellolondon corpus clean                         # work/corpus -> work/corpus/documents.jsonl\n"
        "  hellolondon corpus clean --extra my_texts/ --extra sessions.xml   # add local files\n"
        "  hellolondon corpus clean --set min_quality=0.6 --set long_s=false\n"
        "  hellolondon corpus clean --config clean.toml --workers 8\n\n"
        "Local files: Project Gutenberg .txt, archive.org *_djvu.txt, Old Bailey TEI .xml.\n"
        "Writes documents.jsonl, clean_log.jsonl (what was removed from each document and\n"
        "why, and why documents were rejected) and report.md / report.json.\n\n"
        f"Settings for --set and the [clean] table, with their defaults (docs/corpus.md):\n{_clean_settings()}",
    )  # fmt: skip
    p.add_argument(
        "--in", dest="input", default=DEFAULT_DIR, help=f"collection folder (default {DEFAULT_DIR})"
    )
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="PATH",
        help="local file or folder; repeatable",
    )
    p.add_argument("--out", default=None, help="output folder (default: the collection folder)")
    p.add_argument("--config", default=None, help="TOML file with clean settings ([clean] table)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override one clean setting"
    )
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a documents.jsonl in --out that `corpus clean` did not write",
    )
    p.set_defaults(func=clean_command)


def _report_parser(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser(
        "report", help="documents, characters, tokens per period and category; rejections", formatter_class=RAW,
        epilog="examples:\n  hellolondon corpus report\n"
        "  hellolondon corpus report --tokenizer work/tokenizer   # count real tokens\n"
        "  hellolondon corpus report --documents work/documents.jsonl --json",
    )  # fmt: skip
    p.add_argument(
        "--in", dest="input", default=DEFAULT_DIR, help=f"corpus folder (default {DEFAULT_DIR})"
    )
    p.add_argument(
        "--documents", default=None, help="documents.jsonl (default: <in>/documents.jsonl)"
    )
    p.add_argument(
        "--tokenizer", default=None, metavar="DIR", help="count tokens with this tokenizer"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument(
        "--save", action="store_true", help="also write report.md and report.json into --in"
    )
    p.set_defaults(func=report_command)


def _split(text: str, flag: str) -> list[str]:
    """Comma-separated names; a value of commas alone (`--period ,`) is refused, not taken as
    the flag's absence, which would select every source."""
    from hellolondon.errors import UserError

    names = [t.strip() for t in text.split(",") if t.strip()]
    if text.strip() and not names:
        raise UserError(f"{flag} {text!r} names nothing; give names separated by commas")
    return names


def _sources(args: argparse.Namespace) -> list:
    from hellolondon.corpus.catalog import STATUSES, load_catalog, select
    from hellolondon.errors import UserError

    statuses = tuple(_split(args.status, "--status"))
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise UserError(f"--status {bad[0]!r} is not one of {', '.join(STATUSES)}")
    sources = load_catalog(args.catalog, builtin=not args.no_builtin)
    from hellolondon.corpus.documents import PERIODS

    for flag, asked, known in (
        (
            "--period",
            _split(args.period, "--period"),
            {p for p, _, _ in PERIODS} | {s.period for s in sources},
        ),
        ("--category", _split(args.category, "--category"), {s.category for s in sources}),
    ):
        if bad := [a for a in asked if a not in known]:  # a typo would select nothing at all
            raise UserError(f"{flag} {bad[0]!r} is not one of {', '.join(sorted(known))}")
    periods, categories = _split(args.period, "--period"), _split(args.category, "--category")
    return select(sources, statuses, args.id, periods, categories)


def catalog_command(args: argparse.Namespace) -> int:
    sources = _sources(args)
    if args.json:
        print(json.dumps([s.metadata() for s in sources], indent=1, ensure_ascii=False))
        return 0
    # STATUS: how far the ID is trusted (believed, unverified, doubtful, wrong)
    print(f"{'ID':<26} {'STATUS':<10} {'YEAR'} {'PERIOD':<15} {'CATEGORY':<16} TITLE - AUTHOR")
    for s in sources:
        print(
            f"{s.id:<26} {s.status:<10} {s.year} {s.period:<15} {s.category:<16} {s.title} - {s.author}"
        )
    print(f"{len(sources)} source" + "s" * (len(sources) != 1))
    return 0


def collect_command(args: argparse.Namespace) -> int:
    from hellolondon.corpus.collect import collect

    _check_collect_flags(args)
    sources = _collect_sources(args)
    result = collect(sources, _collect_options(args))
    _say_collected(args, result)
    return 1 if result["counts"]["failed"] else 0


def _check_collect_flags(args: argparse.Namespace) -> None:
    """Refuses a `corpus collect` flag out of range before anything is read or fetched."""
    from hellolondon.errors import UserError

    if args.workers < 1 or args.per_host < 1 or args.retries < 0:
        raise UserError("--workers and --per-host must be >= 1, --retries >= 0")
    if not 0 < args.max_mb < 2**40:  # nan and inf too
        raise UserError(f"--max-mb must be a number of megabytes above 0, not {args.max_mb:g}")
    if args.user_agent and not (args.user_agent.isprintable() and args.user_agent.isascii()):
        raise UserError(
            f"--user-agent {args.user_agent!r}: an HTTP header takes printable ASCII only, "
            "on one line"
        )
    if not args.deadline >= 0:
        raise UserError(f"--deadline must be >= 0 seconds (0 for none), not {args.deadline:g}")
    for flag, value in (
        ("--connect-timeout", args.connect_timeout),
        ("--read-timeout", args.read_timeout),
    ):
        if not (math.isfinite(value) and value > 0):  # 0 would fail every request at once
            raise UserError(f"{flag} must be a number of seconds above 0, not {value:g}")
    for flag, value in (("--delay", args.delay), ("--backoff", args.backoff)):
        if not 0 <= value < math.inf:  # nan fails the comparison too
            raise UserError(f"{flag} must be a finite number of seconds, 0 or more, not {value:g}")
    if args.limit is not None and args.limit < 1:
        raise UserError(
            f"--limit must be 1 or more (leave it out for all sources), not {args.limit}"
        )


def _collect_sources(args: argparse.Namespace) -> list:
    """The selected sources, the first --limit of them; refused when none are selected."""
    from hellolondon.errors import UserError

    sources = _sources(args)
    if args.limit is not None:
        sources = sources[: args.limit]
    if not sources:
        raise UserError(
            "no sources selected; see `hellolondon corpus catalog` for ids and statuses"
        )
    return sources


def _collect_options(args: argparse.Namespace):
    """The `CollectOptions` (and their `FetchConfig`) that the flags give."""
    from hellolondon.corpus.collect import GUTENBERG_URL, CollectOptions
    from hellolondon.corpus.fetch import USER_AGENT, FetchConfig

    fetch = FetchConfig(
        connect_timeout=args.connect_timeout, read_timeout=args.read_timeout, retries=args.retries,
        backoff=args.backoff, max_bytes=int(args.max_mb * 2**20), per_host=args.per_host,
        host_delay=args.delay, user_agent=args.user_agent or USER_AGENT, deadline=args.deadline,
    )  # fmt: skip
    return CollectOptions(
        Path(args.out), offline=args.offline, retry_failed=args.retry_failed, workers=args.workers,
        gutenberg=args.gutenberg_mirror or GUTENBERG_URL, archive_base=args.archive_base,
        progress=not args.quiet, fetch=fetch,
    )  # fmt: skip


def _say_collected(args: argparse.Namespace, result: dict) -> None:
    """What this run did: a line per source that failed or was rejected, the counts, and what
    to do next."""
    from hellolondon.corpus.collect import read_manifest

    counts = result["counts"]
    folder = CorpusFolder(args.out)
    records = read_manifest(folder.manifest)
    _say_problems(result, records)
    if counts["rejected"]:
        kept = sum(bool(records.get(sid, {}).get("path")) for sid in result["rejected"])
        where = f"the files kept are in {folder.rejected_dir}; " if kept else ""
        print(
            f"{counts['rejected']} rejected: {where}fix their catalog entries (an entry that "
            "changes is fetched again)"
        )
    written = f"  (manifest: {folder.manifest})" if folder.manifest.is_file() else ""
    print(", ".join(f"{k} {v}" for k, v in counts.items()) + written)
    if counts["failed"]:
        print(f"{counts['failed']} failed; run again with --retry-failed to retry them")
    if args.offline and counts["skipped"]:
        print(f"offline: {counts['skipped']} selected sources are not in the cache")


def _say_problems(result: dict, records: dict) -> None:
    """One line each for what went wrong this run: the reason, the attempts, the URL."""
    for status in ("failed", "rejected"):
        for sid in result[status]:
            rec = records.get(sid, {})
            where = f" ({rec['url']})" if rec.get("url") else ""
            tries = rec.get("attempts") or 0
            tries_said = f" [{tries} attempts]" if status == "failed" and tries > 1 else ""
            print(f"{status} {sid}: {rec.get('error') or 'no reason recorded'}{tries_said}{where}")


def _cleaned_here(out: CorpusFolder) -> bool:
    """documents.jsonl is `corpus clean`'s: its clean_log was written with it, after it (a
    file put there later is newer than the log)."""
    log = out.clean_log
    return log.is_file() and log.stat().st_mtime >= out.documents.stat().st_mtime


def clean_command(args: argparse.Namespace) -> int:
    from hellolondon.corpus.clean import load_clean_config
    from hellolondon.corpus.pipeline import clean_corpus, items_from_collection, items_from_paths
    from hellolondon.errors import UserError

    if args.workers < 1:
        raise UserError(f"--workers must be 1 or more, not {args.workers}")
    out = CorpusFolder(args.out or args.input)
    if out.documents.is_file() and not _cleaned_here(out) and not args.force:
        # clean's own earlier output (its clean_log written with it) is replaced by a rerun;
        # another corpus file (the bundled sample, a hand-made one) is not, without --force
        raise UserError(
            f"{out.documents} exists and `corpus clean` did not write it (no {out.clean_log.name} "
            "written with it); choose another --out, or add --force to replace it"
        )
    config = load_clean_config(args.config, args.set)
    folder = CorpusFolder(args.input)
    items = items_from_collection(folder.path) if folder.manifest.is_file() else []
    if not items and not args.extra:
        raise UserError(f"no collected sources in {folder} (no manifest.json with status ok); "
                        "run `hellolondon corpus collect` first, or give local files with --extra")  # fmt: skip
    items += items_from_paths(args.extra)
    result = clean_corpus(items, out.path, config, workers=args.workers, progress=not args.quiet)
    t = result["report"]["totals"]
    status = result["report"].get("cleaning", {}).get("status", {})
    docs = f"{t['documents']} document" + "s" * (t["documents"] != 1)
    print(f"kept {docs} ({t['characters']:,} characters, {t['tokens']:,} words); "
          f"rejected {status.get('rejected', 0)}, duplicates {status.get('duplicate', 0)}")  # fmt: skip
    print(f"wrote {out.documents}, {out.clean_log}, {out.report_md}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from hellolondon.corpus.stats import build_report, format_report, write_report
    from hellolondon.errors import UserError

    if args.save and not Path(args.input).is_dir():  # said before the report, not after
        raise UserError(
            f"--save writes report.md and report.json into --in {args.input}, which is not a "
            "folder; give the corpus folder as --in"
        )
    documents = CorpusFolder(args.input).documents
    if args.documents is None and not documents.is_file() and not documents.parent.is_file():
        raise UserError(
            f"no {documents}: run `hellolondon corpus clean` first, or give a corpus file with "
            "--documents (`hellolondon corpus sample` writes the bundled one to "
            "work/documents.jsonl)"
        )
    report = build_report(args.input, args.documents, args.tokenizer)
    print(
        json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_report(report),
        end="",
    )
    if args.json:
        print()
    if args.save:
        write_report(report, args.input)
    return 0


def sample_command(args: argparse.Namespace) -> int:
    from hellolondon.corpus.sample import holds_sample, write_sample
    from hellolondon.errors import UserError

    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"{out} is a folder; give the documents.jsonl file to write as --out")
    if out.exists() and out.stat().st_size and not args.force and not holds_sample(out):
        raise UserError(
            f"{out} already holds other documents (a collected corpus?); choose another --out "
            "or add --force to replace it"
        )
    n = write_sample(out)
    print(f"wrote {n} documents to {args.out}")
    return 0
