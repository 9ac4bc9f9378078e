"""Throughput of `corpus clean` (cleaning + quality + MinHash dedup + writing) on a synthetic corpus.

Generates a corpus of the size asked for (Project Gutenberg texts with header and licence,
DjVu OCR texts with page numbers, running heads and hyphenated line ends, a few near
duplicates and Latin texts), then cleans it with 1, 2, ... worker processes and prints MB/s.
Besides wall-clock time it reports CPU time (this process and its workers), which a busy shared
machine does not inflate. It also times (in CPU time) the parent's serial tail (writing documents.jsonl from the spool) so that the
speed on more cores can be extrapolated.

    python benchmarks/clean_bench.py --mb 60 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from hellolondon.corpus.clean import STOPWORDS, CleanConfig
from hellolondon.corpus.documents import read_documents, write_documents
from hellolondon.corpus.pipeline import clean_corpus, items_from_paths

STOP = sorted(STOPWORDS)  # the function words, so the texts pass the language filter
LETTERS = "etaoinshrdlcumwfgypbvk"


def vocabulary(rng: random.Random, n: int = 6000) -> tuple[list[str], list[float]]:
    words = list(STOP) + ["".join(rng.choices(LETTERS, k=rng.randint(3, 10))) for _ in range(n)]
    weights = [1.0 / (i + 8) for i in range(len(words))]  # Zipf-like: function words most common
    return words, weights


def prose(rng: random.Random, vocab: tuple[list[str], list[float]], n_words: int) -> list[str]:
    """Lines of about 70 characters, in paragraphs of 4 to 12 lines."""
    words = rng.choices(vocab[0], weights=vocab[1], k=n_words)
    lines, line = [], []
    for i, w in enumerate(words):
        line.append(w.capitalize() if i % 17 == 0 else w + ("," if i % 11 == 0 else ""))
        if sum(len(x) + 1 for x in line) > 66:
            lines.append(" ".join(line))
            line = []
            if rng.random() < 0.15:
                lines[-1] += "."
                lines.append("")
    lines.append(" ".join(line) + ".")
    return lines


def gutenberg(lines: list[str], n: int) -> str:
    head = (f"The Project Gutenberg eBook of Book {n}\n\nTitle: Book {n}\n\nAuthor: Author {n}\n\nLanguage: English\n\n"
            f"*** START OF THE PROJECT GUTENBERG EBOOK BOOK {n} ***\n\nProduced by volunteers.\n\n")  # fmt: skip
    licence = "\n\n".join(["Project Gutenberg-tm licence paragraph, with terms of use."] * 60)
    return (
        head
        + "\n".join(lines)
        + f"\n\n*** END OF THE PROJECT GUTENBERG EBOOK BOOK {n} ***\n\n{licence}\n"
    )


def djvu(lines: list[str], n: int, rng: random.Random) -> str:
    pages, out = [lines[i : i + 38] for i in range(0, len(lines), 38)], []
    for p, page in enumerate(pages, 1):
        page = list(page)
        for j in range(len(page) - 1):
            if page[j] and page[j + 1] and rng.random() < 0.08:  # split the line's last word
                head, _, last = page[j].rpartition(" ")
                if len(last) > 5:
                    page[j] = f"{head} {last[:3]}-"
                    page[j + 1] = f"{last[3:]} {page[j + 1]}"
        top = f"{p} BOOK {n} OF LONDON." if p % 2 == 0 else f"THE SECOND PART. {p}"
        out.append("\n".join([top, "", *page, "", str(p)]))
    return "\f".join(out) + "\n"


def make_corpus(folder: Path, mb: float, seed: int = 0) -> int:
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    folder.mkdir(parents=True, exist_ok=True)
    total, n = 0, 0
    while total < mb * 1e6:
        n += 1
        words = rng.randint(60_000, 400_000)  # about 0.4 to 2.5 MB per book
        lines = prose(rng, vocab, words)
        kind = rng.random()
        if kind < 0.02:
            text = "\n".join(
                "Gallia est omnis divisa in partes tres quarum unam incolunt" for _ in lines
            )
            name = f"latin{n}.txt"
        elif kind < 0.30:
            text, name = djvu(lines, n, rng), f"scan{n}_djvu.txt"
        else:
            text, name = gutenberg(lines, n), f"pg{n}.txt"
        (folder / name).write_text(text, encoding="utf-8")
        total += len(text.encode("utf-8"))
        if rng.random() < 0.05:  # a second edition: the same text with 1% of words changed
            changed = [w if rng.random() > 0.01 else "altered" for w in text.split(" ")]
            (folder / f"edition{n}.txt").write_text(" ".join(changed), encoding="utf-8")
            total += len(text.encode("utf-8"))
    return total


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers), which does not
    count the time other programs on a shared machine take from us."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=60.0, help="size of the synthetic corpus")
    parser.add_argument("--workers", default="1,2", help="worker counts to time, e.g. 1,2")
    parser.add_argument(
        "--dir", default="", help="folder to generate into (default: a temporary one)"
    )
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="clean_bench_"))
    try:
        t0 = time.perf_counter()
        size = make_corpus(root / "in", args.mb)
        files = len(list((root / "in").iterdir()))
        print(
            f"corpus: {size / 1e6:.1f} MB in {files} files (generated in {time.perf_counter() - t0:.1f}s)"
        )
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        )
        rows = []
        for workers in [int(w) for w in args.workers.split(",")]:
            out = root / f"out{workers}"
            t0, c0 = time.perf_counter(), cpu_seconds()
            result = clean_corpus(
                items_from_paths([root / "in"]), out, CleanConfig(), workers=workers, progress=False
            )
            dt, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            status = result["report"]["cleaning"]["status"]
            rows.append({"workers": workers, "seconds": round(dt, 2), "MB_per_s": round(size / 1e6 / dt, 2),
                         "cpu_seconds": round(cpu, 2), "MB_per_cpu_s": round(size / 1e6 / cpu, 2), **status})  # fmt: skip
            print(json.dumps(rows[-1]))
        out = root / f"out{rows[-1]['workers']}" / "documents.jsonl"
        t0 = time.process_time()
        write_documents(root / "tail.jsonl", read_documents(out))
        tail = time.process_time() - t0
        tail_row = {
            "serial_tail_cpu_seconds": round(tail, 2),
            "serial_tail_MB_per_s": round(size / 1e6 / tail, 1),
        }
        print(json.dumps(tail_row))
        own, kids = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        print(
            json.dumps(
                {
                    "peak_rss_MB_parent": own.ru_maxrss // 1024,
                    "peak_rss_MB_worker": kids.ru_maxrss // 1024,
                }
            )
        )
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
