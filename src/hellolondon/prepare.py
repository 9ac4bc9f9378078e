"""documents.jsonl -> train.bin / val.bin (uint16 token ids) + meta.json.

Each document is written as `<|endoftext|>` followed by its tokens, so the separator also marks
where a text begins. The split is by whole document (never the tail of a text): within each
source, documents are ordered by sha256 of their id (the hash `corpus.documents.is_validation`
uses) and the first ones go to validation until they hold about `val_fraction` of that source's
characters. On a large corpus this matches `is_validation`; on a small one a source of a few
long documents may give none, but the validation set is never empty: then it holds the shortest
document.

Memory stays bounded: documents stream in chunks, workers encode them (a few pieces at a time),
and the parent appends tokens to the files in order with only a few chunks in flight. Outputs are written under
temporary names and renamed at the end, so a failed run leaves the folder as it was; those a
killed run (SIGKILL) left are removed by the next run into the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from hellolondon.corpus.documents import check_corpus_file, read_documents
from hellolondon.errors import UserError
from hellolondon.files import other_files, others_temporary_files, sha256_file, some_of, writing
from hellolondon.progress import progress_bar
from hellolondon.tokenizer import MAX_VOCAB, Tokenizer, load_tokenizer, text_pieces

DTYPE = np.uint16
CHUNK_CHARS = 2_000_000  # text per task: big enough to amortise pickling, small enough to stream
# The tokenizer's record of a token (its text, offsets, masks) takes ~190 bytes, ~50 times the
# text it came from: a chunk is encoded BATCH_CHARS at a time, so that only the records of that
# much text are held at once, not a chunk's. Long documents are cut into pieces of about
# PIECE_CHARS (see `text_pieces`): a batch holds many, which keeps the tokenizer's threads
# evenly busy (small pieces also encoded faster than pieces of 250,000 characters).
PIECE_CHARS = 4_000
BATCH_CHARS = 256_000
OUTPUTS = ("train.bin", "val.bin", "meta.json")


def _hash_key(doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big")


def choose_validation(docs: list[tuple[str, str, int]], val_fraction: float = 0.05) -> set[str]:
    """Pick validation ids from (id, source, characters) triples; see the module docstring.
    A document joins while at least half of it fits in the source's share."""
    by_source: dict[str, list[tuple[str, int]]] = {}
    for doc_id, source, size in docs:
        by_source.setdefault(source, []).append((doc_id, size))
    val: set[str] = set()
    for group in by_source.values():
        group.sort(key=lambda d: (_hash_key(d[0]), d[0]))
        target = val_fraction * sum(size for _, size in group)
        taken = 0
        for doc_id, size in group[:-1]:  # the last one always stays for training
            if taken + size / 2 > target:
                break
            val.add(doc_id)
            taken += size
    if not val and len(docs) >= 2:  # tiny corpora: one document still makes a validation set,
        # the shortest, so that a book is never held out from the little there is to train on
        val.add(min(docs, key=lambda d: (d[2], _hash_key(d[0]), d[0]))[0])
    return val


def _check_inputs(corpus: Path, tokenizer_dir: Path) -> Tokenizer:
    tokenizer = load_tokenizer(tokenizer_dir)
    if tokenizer.vocab_size > MAX_VOCAB:
        raise UserError(
            f"tokenizer vocab {tokenizer.vocab_size} does not fit uint16 token files (max {MAX_VOCAB}); train one with --vocab-size <= {MAX_VOCAB}"
        )
    check_corpus_file(corpus, f"run `hellolondon corpus sample --out {corpus}` first")
    if corpus.stat().st_size == 0:
        raise UserError(
            f"corpus file {corpus} is empty; expected documents.jsonl with one JSON document per line"
        )
    return tokenizer


def _check_unique_ids(corpus: Path, sizes: list[tuple[str, str, int]]) -> None:
    # The split goes by id: documents that share one would all land on the same side.
    seen: set[str] = set()
    for doc_id, _, _ in sizes:
        if doc_id in seen:
            raise UserError(
                f"corpus file {corpus} has two documents with the id {doc_id!r}; the split into "
                "training and validation goes by id, so give each document its own"
            )
        seen.add(doc_id)


# One piece of a document: its span head (validation documents only), whether it goes to
# validation, whether it is the document's first piece (which gets the <|endoftext|>), its text.
_Piece = tuple[dict | None, bool, bool, str]


def _chunks(corpus: Path, val_ids: set[str], cut: bool) -> Iterator[list[_Piece]]:
    chunk: list[_Piece] = []
    size = 0
    for doc in read_documents(corpus):
        if not doc.text:
            continue
        is_val = doc.id in val_ids
        head = None
        if is_val:
            head = {"id": doc.id, "title": doc.title, "period": doc.period}
            head |= {"category": doc.category, "source": doc.source}
        text, doc = doc.text, None  # the pieces below are all that is kept of the text
        pieces = text_pieces(text, PIECE_CHARS) if cut else iter([text])
        for n, piece in enumerate(pieces):
            chunk.append((head, is_val, n == 0, piece))
            size += len(piece)
            if size >= CHUNK_CHARS:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk


# Each worker process loads the tokenizer once; the parent only reads and writes.
_WORKER: Tokenizer | None = None


def _init_worker(tokenizer_dir: str, parent: int | None = None) -> None:
    global _WORKER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the pool is the parallelism
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    _WORKER = load_tokenizer(tokenizer_dir)


def _exit_with(parent: int) -> None:
    """End this worker once `parent` is gone (killed, or ended by a signal without cleaning up):
    a worker holds both ends of its task queue, so it would otherwise wait for tasks forever."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _encode(
    texts: list[str], tokenizer: Tokenizer | None = None, firsts: list[bool] | None = None
) -> list[np.ndarray]:
    """Token arrays of `texts`; a document's first piece starts with <|endoftext|>."""
    tok = tokenizer or _WORKER
    firsts = firsts or [True] * len(texts)
    out = []
    for start, end in _batches(texts):
        batch = tok.encode_batch(texts[start:end])
        for ids, first in zip(batch, firsts[start:end], strict=True):
            arr = np.empty(len(ids) + first, dtype=DTYPE)
            if first:
                arr[0] = tok.eot_id
            arr[int(first) :] = ids
            out.append(arr)
    return out


def _batches(texts: list[str]) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive runs of `texts` that hold about BATCH_CHARS characters."""
    start, size = 0, 0
    for end, text in enumerate(texts, 1):
        size += len(text)
        if size >= BATCH_CHARS:
            yield start, end
            start, size = end, 0
    if start < len(texts):
        yield start, len(texts)


class _Writer:
    """Appends each document's tokens to train.bin or val.bin and records the val spans."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.tmp = {name: out_dir / f".{name}.tmp" for name in OUTPUTS}
        self.files = {}  # closed by close() or discard(): they live across many write() calls
        try:
            for s in ("train", "val"):
                self.files[s] = open(self.tmp[f"{s}.bin"], "wb")  # noqa: SIM115
        except BaseException:  # the one opened first must not stay behind
            self.discard()
            raise
        self.tokens = {"train": 0, "val": 0}
        self.hashes = {s: hashlib.sha256() for s in ("train", "val")}  # of the bytes as written
        self.docs = {"train": 0, "val": 0}
        self.spans: list[dict] = []

    def write(self, chunk: list[_Piece], arrays: list[np.ndarray]) -> None:
        for (head, is_val, first, _text), arr in zip(chunk, arrays, strict=True):
            split = "val" if is_val else "train"
            if first:
                self.docs[split] += 1
                if is_val:
                    start = self.tokens["val"]
                    self.spans.append(dict(head or {}, start=start, end=start))
            self.files[split].write(arr)  # its buffer: the same bytes as arr.tobytes(), no copy
            self.hashes[split].update(arr)
            self.tokens[split] += len(arr)
            if is_val:
                self.spans[-1]["end"] = self.tokens["val"]

    def close(self) -> None:
        for f in self.files.values():
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()

    def finish(self, meta: str) -> None:
        """Put the new files in place of the old ones. Until the new meta.json is in, the
        folder has none: a process killed halfway leaves token files `prepare` must make
        again, never old and new files that look complete together."""
        self.tmp["meta.json"].write_text(meta, encoding="utf-8")
        (self.out_dir / "meta.json").unlink(missing_ok=True)
        for name in OUTPUTS:  # meta.json last
            os.replace(self.tmp[name], self.out_dir / name)

    def discard(self) -> None:
        # Not close(): on a full disk the buffered bytes cannot be written, closing says so
        # again, and the files that take the disk's space must go all the same.
        for f in self.files.values():
            with contextlib.suppress(OSError):
                f.close()
        for path in self.tmp.values():
            path.unlink(missing_ok=True)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as taskset or a container sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _default_workers(corpus: Path) -> int:
    # Below ~64 MB, starting worker processes costs more than it saves: the tokenizer's own
    # threads already use every core. Above, workers also overlap encoding with reading.
    if corpus.stat().st_size < 64 * 2**20:
        return 1
    return min(8, usable_cpus())


def prepare(
    corpus: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    workers: int | None = None,
    val_fraction: float = 0.05,
    show_progress: bool = False,
) -> dict:
    """Tokenize `corpus` into `out_dir`; returns the metadata written to meta.json (plus timing).
    `workers`: encoding processes; 1 encodes in this process (with the tokenizer's own threads);
    None picks 1 for small corpora, else up to 8. Worker processes are spawned, so a script that
    calls this with workers > 1 needs the usual `if __name__ == "__main__":` guard."""
    corpus, tokenizer_dir, out_dir = Path(corpus), Path(tokenizer_dir), Path(out_dir)
    tokenizer = _check_inputs(corpus, tokenizer_dir)
    t0 = time.perf_counter()
    # First pass: ids, sources, sizes and dates only, to choose the split before writing anything.
    first = [
        (d.id, d.source, len(d.text), d.year, d.period) for d in read_documents(corpus) if d.text
    ]
    sizes = [f[:3] for f in first]
    _check_unique_ids(corpus, sizes)
    if not sizes:
        raise UserError(f"corpus file {corpus} has no documents with text")
    if len(sizes) < 2:
        raise UserError(
            f"corpus file {corpus} has one document with text; validation needs a separate one, so add at least one more"
        )
    val_ids = choose_validation(sizes, val_fraction)
    with writing(out_dir, OUTPUTS):  # makes the folder; removes a killed run's temporary files
        if other := other_files(out_dir, OUTPUTS):  # written since the command's own check
            raise UserError(
                f"{out_dir} holds other files ({some_of(other)}); token files get a folder of "
                "their own: choose another --out"
            )
        writer = _Writer(out_dir)
        try:
            _run(
                corpus,
                val_ids,
                tokenizer,
                tokenizer_dir,
                writer,
                workers or _default_workers(corpus),
                show_progress,
                sum(size for _, _, size in sizes),
            )
            writer.close()
            meta = _meta(corpus, tokenizer, writer, val_fraction) | dates(f[3:] for f in first)
            meta["sources"] = len({f[1] for f in first if f[1]})  # distinct `source` fields named
            writer.finish(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        except BaseException:
            writer.discard()
            raise
    seconds = time.perf_counter() - t0
    return meta | {"seconds": seconds, "corpus_bytes": corpus.stat().st_size}


def _run(corpus, val_ids, tokenizer, tokenizer_dir, writer, workers, show_progress, chars) -> None:
    # Counted in characters, not documents: one book can be most of the corpus.
    bar = progress_bar(
        total=chars,
        unit="char",
        unit_scale=True,
        unit_divisor=1000,
        desc="prepare",
        disable=not show_progress,
    )
    chunks = _chunks(corpus, val_ids, cut=tokenizer.splits_safely)

    def args(chunk: list[_Piece]) -> tuple[list[str], list[bool]]:
        return [p[3] for p in chunk], [p[2] for p in chunk]

    def done(chunk: list[_Piece], arrays: list[np.ndarray], chars: int) -> None:
        writer.write(chunk, arrays)
        bar.update(chars)

    if workers <= 1:
        for chunk in chunks:
            texts, firsts = args(chunk)
            done(chunk, _encode(texts, tokenizer, firsts), sum(map(len, texts)))
        bar.close()
        return
    ctx = get_context("spawn")  # fork would copy the tokenizer's thread pool state
    with ProcessPoolExecutor(
        workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(str(tokenizer_dir), os.getpid()),
    ) as pool:
        pending: deque[tuple[list, Future, int]] = deque()
        for chunk in chunks:
            texts, firsts = args(chunk)
            future = pool.submit(_encode, texts, None, firsts)
            # The texts are with the worker now; keep only what the writer needs.
            kept = [(h, v, f, "") for h, v, f, _ in chunk]
            pending.append((kept, future, sum(map(len, texts))))
            while len(pending) > 2 * workers:  # bounded: only a few chunks in memory
                chunk_done, future, chars = pending.popleft()
                done(chunk_done, future.result(), chars)
        while pending:
            chunk_done, future, chars = pending.popleft()
            done(chunk_done, future.result(), chars)
    bar.close()


def _meta(corpus: Path, tokenizer: Tokenizer, writer: _Writer, val_fraction: float) -> dict:
    return {
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id,
        "dtype": "uint16",
        "layout": "each document is <|endoftext|> followed by its tokens",
        "train_tokens": writer.tokens["train"],
        "val_tokens": writer.tokens["val"],
        "train_documents": writer.docs["train"],
        "val_documents": writer.docs["val"],
        "val_fraction": val_fraction,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "tokens_fingerprint": tokens_fingerprint(
            writer.hashes["train"].hexdigest(), writer.hashes["val"].hexdigest()
        ),
        "tokenizer_path": str(Path(tokenizer.path).resolve()) if tokenizer.path else "",
        "corpus_path": str(corpus.resolve()),
        "corpus_sha256": sha256_file(corpus),
        "val_spans": writer.spans,
    }


def dates(year_period: Iterable[tuple[int | None, str]]) -> dict[str, Any]:
    """When the documents were written: `years` [first, last] of those with a year (None when
    none has one) and `periods`, documents per period label, most first."""
    years, periods = [], Counter()
    for year, period in year_period:
        if year is not None:
            years.append(year)
        periods[period or "unknown"] += 1
    return {
        "years": [min(years), max(years)] if years else None,
        "periods": dict(periods.most_common()),
    }


def check_replace(out_dir: str | Path, force: bool = False) -> None:
    """Refuse to replace token files in `out_dir` unless `force`: runs trained on them read them
    again to resume and to evaluate; and refuse a folder that holds anything else, which --force
    does not replace. The command line calls this before encoding; library callers that own
    their folder (the demo, the launcher's sample) replace their own files freely."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --out")
    # a tokenizer, a corpus, or what a killed tokenizer save left: --force replaces none
    if other := other_files(out, OUTPUTS) + others_temporary_files(out, OUTPUTS):
        raise UserError(
            f"{out} holds other files ({some_of(other)}); token files get a folder of their own: "
            "choose another --out"
        )
    found = [name for name in OUTPUTS if (out / name).exists()]
    if force or not found:
        return
    if "meta.json" not in found:
        raise UserError(
            f"{out} holds token files without their meta.json (a `prepare` stopped while "
            "writing them); add --force to make them again, or choose another --out"
        )
    try:
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    made = ""
    if isinstance(meta, dict) and meta.get("corpus_path"):
        fingerprint = str(meta.get("tokenizer_fingerprint", ""))[:12]
        made = f" (from {meta['corpus_path']} with tokenizer {fingerprint})"
    raise UserError(
        f"{out} already holds token files{made}: {', '.join(found)}; runs trained on them read "
        "these files to resume and to evaluate, and would no longer match them; choose another "
        "--out or add --force to replace them"
    )


def tokens_fingerprint(train_sha256: str, val_sha256: str) -> str:
    """One hash for the pair of token files, from the sha256 of each."""
    text = f"train.bin {train_sha256}\nval.bin {val_sha256}\n"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def token_file(data_dir: str | Path, split: str) -> Path:
    """The token file of `split` ("train" or "val") in a prepared folder."""
    return Path(data_dir) / f"{split}.bin"


def open_tokens(data_dir: str | Path, split: str) -> np.ndarray:
    """The token ids of `split`, mapped from its file (not read into memory)."""
    path = token_file(data_dir, split)
    if not path.is_file():
        raise UserError(f"token file {path} not found; run `hellolondon prepare` first")
    if path.stat().st_size == 0:  # numpy cannot map an empty file; the caller names it
        return np.zeros(0, dtype=DTYPE)
    return np.memmap(path, dtype=DTYPE, mode="r")


def is_prepared(data_dir: str | Path) -> bool:
    """Whether the folder holds the token files and their meta.json (unchecked: see load_meta)."""
    return all((Path(data_dir) / name).is_file() for name in OUTPUTS)


def hash_token_files(data_dir: str | Path) -> str:
    """`tokens_fingerprint` of the token files as they are now on disk (reads them whole)."""
    return tokens_fingerprint(*(sha256_file(token_file(data_dir, s)) for s in ("train", "val")))


def load_meta(data_dir: str | Path) -> dict:
    """Read meta.json of a prepared folder and check the token files match it."""
    data_dir = Path(data_dir)
    path = data_dir / "meta.json"
    if data_dir.is_file():
        raise UserError(
            f"{data_dir} is a file, not a folder of token files; make one with `hellolondon "
            "prepare --corpus FILE --tokenizer DIR --out FOLDER` and give that folder"
        )
    if not data_dir.exists():  # a typo, or data moved since a run recorded its folder
        raise UserError(
            f"data folder {data_dir} does not exist; give the folder `hellolondon prepare` "
            "wrote (--data DIR), or make it with `hellolondon prepare --out DIR`"
        )
    if not path.is_file():
        if other := other_files(data_dir, OUTPUTS):  # a tokenizer's folder, a run's, ...
            raise UserError(
                f"{data_dir} holds no token files ({some_of(other)}); give --data the folder "
                "that `hellolondon prepare` wrote"
            )
        raise UserError(
            f"{data_dir} has no meta.json; run `hellolondon prepare --out {data_dir}` first"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; run `hellolondon prepare` again") from None
    if not isinstance(meta, dict):
        raise UserError(
            f"{path} is not the meta.json of `hellolondon prepare` (a JSON object); run it again"
        )
    vocab = meta.get("vocab_size")
    if type(vocab) is not int or not 2 <= vocab <= MAX_VOCAB:
        raise UserError(
            f"{path} gives vocab_size {vocab!r}, not a whole number from 2 to {MAX_VOCAB:,} "
            "(uint16 token files); run `hellolondon prepare` again"
        )
    for split in ("train", "val"):
        bin_path = token_file(data_dir, split)
        count = meta.get(f"{split}_tokens")
        expected = count * np.dtype(DTYPE).itemsize if type(count) is int else -1
        if not bin_path.is_file() or bin_path.stat().st_size != expected:
            raise UserError(
                f"{bin_path} is missing or does not match meta.json; run `hellolondon prepare` again"
            )
    return meta


def check_token_ids(data_dir: str | Path, vocab_size: int, splits=("train", "val")) -> None:
    """Every id in the token files is below `vocab_size`: one beyond the model's vocabulary
    stops training with an IndexError (on a GPU, a device-side assert). One pass over each
    file at the disk's speed (a max over the mapped file)."""
    for split in splits:
        tokens = open_tokens(data_dir, split)
        top = int(tokens.max()) if len(tokens) else -1
        if top >= vocab_size:
            raise UserError(
                f"{token_file(data_dir, split)} holds token id {top:,}, beyond the vocabulary of "
                f"{vocab_size:,}: the file is damaged or was made with another tokenizer; run "
                "`hellolondon prepare` again"
            )


def check_tokenizer_matches(meta: dict, tokenizer: Tokenizer) -> None:
    """The token files must come from this very tokenizer; raise a UserError when they do not."""
    if meta.get("vocab_size") != tokenizer.vocab_size:
        raise UserError(
            f"token files have vocab size {meta.get('vocab_size')} but tokenizer {tokenizer.path} has "
            f"{tokenizer.vocab_size}; run `hellolondon prepare` with this tokenizer"
        )
    if meta.get("tokenizer_fingerprint") != tokenizer.fingerprint:
        raise UserError(
            f"token files were made with another tokenizer (fingerprint {str(meta.get('tokenizer_fingerprint'))[:12]}, "
            f"not {tokenizer.fingerprint[:12]}); run `hellolondon prepare` with tokenizer {tokenizer.path}"
        )
