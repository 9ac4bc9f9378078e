"""Time tokenizer training and `prepare` on the bundled sample corpus.

    python benchmarks/prepare_bench.py [--vocab 30000 8192] [--workers 1 2] [--scale 8]
        [--chunk-chars 2000000 8000000]

--scale N also prepares a corpus N times the sample (copies with new ids) to show throughput
and that memory stays flat as the corpus grows. --chunk-chars prepares the sample once per
chunk size (text per encoding task). Peak RSS is of the parent prepare process (with
--workers 2 its workers are not counted). Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from hellolondon.corpus.documents import write_documents
from hellolondon.corpus.sample import sample_documents, write_sample
from hellolondon.prepare import CHUNK_CHARS
from hellolondon.tokenizer import historical_terms, term_counts, train_tokenizer

# The peak is the process's own high-water mark (VmHWM), not ru_maxrss: Linux carries
# ru_maxrss across exec, so a child would report this (larger) process's resident set it was
# forked from.
RUN = (
    "import json, re, sys; from pathlib import Path; from hellolondon import prepare as prep\n"
    "if __name__ == '__main__':\n"
    "    prep.CHUNK_CHARS = int(sys.argv[5])\n"
    "    m = prep.prepare(sys.argv[1], sys.argv[2], sys.argv[3], workers=int(sys.argv[4]))\n"
    "    hwm = re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())\n"
    "    m['peak_mb'] = int(hwm[1]) / 1024 if hwm else None\n"
    "    print(json.dumps({k: v for k, v in m.items() if k != 'val_spans'}))\n"
)


def run_prepare(corpus: Path, tok: Path, out: Path, workers: int, chunk: int) -> dict:
    """One prepare in a fresh process, so its peak memory is measured on its own."""
    cmd = [sys.executable, "-c", RUN, str(corpus), str(tok), str(out), str(workers), str(chunk)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def bench_prepare(
    corpus: Path, tok: Path, out: Path, workers: int, repeat: int, chunk: int = CHUNK_CHARS
) -> None:
    # Best of `repeat`: the fastest run is the one least disturbed by other work on the machine.
    runs = [run_prepare(corpus, tok, out, workers, chunk) for _ in range(repeat)]
    meta = min(runs, key=lambda m: m["seconds"])
    peaks = [m["peak_mb"] for m in runs if m["peak_mb"] is not None]
    peak = f"{max(peaks):.0f} MB" if peaks else "unknown (no /proc)"
    mb = meta["corpus_bytes"] / 1e6
    tokens = meta["train_tokens"] + meta["val_tokens"]
    print(
        f"prepare {corpus.name} ({mb:.1f} MB) workers={workers} chunk={chunk:,}: "
        f"{meta['seconds']:.2f}s, "
        f"{mb / meta['seconds']:.1f} MB/s, {tokens / meta['seconds'] / 1e6:.2f} M tokens/s, "
        f"val {meta['val_tokens'] / tokens:.1%} ({meta['val_documents']} docs), peak RSS {peak}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocab", type=int, nargs="+", default=[30000, 8192])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--scale", type=int, default=0, help="also prepare the sample repeated N times"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per measurement; the best is shown"
    )
    parser.add_argument(
        "--chunk-chars",
        type=int,
        nargs="*",
        default=[],
        help="also prepare the sample (workers=1) with these chunk sizes, smallest first",
    )
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {platform.machine()}, {sys.platform}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = root / "documents.jsonl"
        write_sample(corpus)
        texts = [d.text for d in sample_documents()]
        toks = {}
        for vocab in args.vocab:
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                toks[vocab] = train_tokenizer(texts, root / f"tok{vocab}", vocab_size=vocab)
                times.append(time.perf_counter() - t0)
            print(
                f"train tokenizer vocab={vocab}: {min(times):.2f}s ({toks[vocab].vocab_size} tokens)"
            )
        tok_dir = root / f"tok{args.vocab[0]}"
        counts = term_counts(toks[args.vocab[0]], texts)
        found = sorted(((n, t) for t, n in counts.items() if n), reverse=True)
        print(
            f"historical terms: {len(counts)}/{len(historical_terms())} single tokens, {len(found)} occur "
            f"{sum(n for n, _ in found)} times; top: "
            + ", ".join(f"{t} {n}" for n, t in found[:12])
        )
        for chunk in sorted(args.chunk_chars):
            bench_prepare(corpus, tok_dir, root / f"chunk{chunk}", 1, args.repeat, chunk)
        for workers in args.workers:
            bench_prepare(corpus, tok_dir, root / f"data{workers}", workers, args.repeat)
        if args.scale:
            big = root / f"documents_x{args.scale}.jsonl"
            docs = (
                replace(d, id=f"{d.id}#{k}") for k in range(args.scale) for d in sample_documents()
            )
            write_documents(big, docs)
            for workers in args.workers:
                bench_prepare(big, tok_dir, root / f"big{workers}", workers, 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
