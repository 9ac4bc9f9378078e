"""`corpus clean` end to end: clean every input in a pool of processes, drop duplicates, and
write `documents.jsonl`, `clean_log.jsonl` (what left each document and why) and the report.

Streamed: workers read and clean one file at a time and send back the cleaned document as a
JSON line, which the parent appends to a spool file at once; only small per-document facts
(scores, MinHash signatures) stay in memory. The final file is written from the spool, less
the duplicates, through `write_documents` (atomic).
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
import signal
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hellolondon.corpus.clean import TOKEN, CleanConfig, clean_text, judge, measure
from hellolondon.corpus.dedup import Deduplicator, Fingerprinter
from hellolondon.corpus.documents import Document, write_documents
from hellolondon.corpus.formats import decode, detect_format, not_text, read_old_bailey
from hellolondon.corpus.layout import CorpusFolder
from hellolondon.errors import UserError
from hellolondon.files import atomic_path, writing
from hellolondon.progress import progress_bar

DOC_FIELDS = ("title", "author", "year", "period", "category", "source", "licence")


@dataclass
class Item:
    """One input file and what is known of it before reading."""

    path: str
    format: str = "auto"  # gutenberg | djvu | tei | text | auto (from name and content)
    meta: dict[str, Any] = field(default_factory=dict)  # id and Document fields
    sha256: str = ""  # expected digest (from the collection manifest); checked when given


@dataclass
class Outcome:
    """One document after cleaning: its log entry and, when kept, its JSON line and fingerprint."""

    entry: dict[str, Any]
    line: str = ""
    key: str = ""
    sig: np.ndarray | None = None


def items_from_collection(folder: str | Path) -> list[Item]:
    """The sources a `corpus collect` run fetched and accepted (status ok in its manifest)."""
    from hellolondon.corpus.collect import read_manifest

    folder = CorpusFolder(folder)
    manifest = read_manifest(folder.manifest)
    items = []
    for sid, rec in manifest.items():
        if rec.get("status") != "ok":
            continue
        meta = {"id": sid, **{k: rec["source"].get(k) for k in DOC_FIELDS if k in rec["source"]}}
        meta["source"] = rec.get("url", "")
        items.append(
            Item(
                str(folder.recorded(rec["path"])),
                rec.get("format", "auto"),
                meta,
                rec.get("sha256", ""),
            )
        )
    return items


def items_from_paths(paths: Iterable[str | Path]) -> list[Item]:
    """Local files, or folders searched for *.txt and *.xml; the format is detected per file."""
    items = []
    used: dict[str, Path] = {}  # id -> file
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(
                f for f in p.rglob("*") if f.suffix.lower() in (".txt", ".xml") and not f.is_dir()
            )
            if not files:
                raise UserError(f"{p} holds no .txt or .xml files; give files or folders of them")
        elif p.is_file():
            files = [p]
        else:
            raise UserError(f"{p} not found; give files or folders of .txt / .xml sources")
        for f in files:
            real = _real(f)
            if real in used.values():  # the same file named twice: read once
                continue
            sid = _file_id(f, used)
            used[sid] = real
            items.append(Item(str(f), "auto", {"id": sid, "title": f.stem, "source": str(f)}))
    return items


def _real(f: Path) -> Path:
    """The file a path names, links followed; a link that loops names itself (reading it then
    fails, and the file is rejected as unreadable like any other)."""
    try:
        return f.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        return f.absolute()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def _file_id(f: Path, used: dict[str, Path]) -> str:
    """`file-<name>`, the id a local file has always had (the split depends on it); a second
    file of the same name (in another folder) adds its folders, nearest first, until unique."""
    sid = "file-" + _slug(f.stem)
    for parent in (_slug(p.name) for p in _real(f).parents if p.name):
        if sid not in used:
            break
        sid = f"{sid}-{parent}"
    return sid


_fingerprinter: Fingerprinter | None = None


def _fingerprints(config: CleanConfig) -> Fingerprinter:
    global _fingerprinter  # one per worker process: the random hash functions are built once
    fp = _fingerprinter
    if fp is None or len(fp.a) != config.num_perm or fp.shingle != config.shingle:
        fp = _fingerprinter = Fingerprinter(config.num_perm, config.shingle)
    return fp


def process_item(item: Item, config: CleanConfig) -> list[Outcome]:
    """Read, clean, measure and fingerprint the document(s) in one file. Never raises for a bad
    file: it becomes a rejected entry with the reason."""
    path = Path(item.path)
    base = {
        "id": item.meta.get("id", path.stem),
        "file": str(path),
        "title": item.meta.get("title", ""),
    }
    if path.exists() and not path.is_file():  # reading a pipe could wait for ever
        return [_rejected(base, "unreadable", "unreadable: not a regular file (a pipe or device)")]
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [_rejected(base, "unreadable", f"unreadable: {exc.strerror or exc}")]
    if item.sha256 and hashlib.sha256(data).hexdigest() != item.sha256:
        why = "file changed since it was collected (sha256 differs); collect it again"
        return [_rejected(base, "changed", why)]
    why = not_text(data)
    if why:
        return [_rejected(base, "not_text", why)]
    fmt = item.format if item.format != "auto" else detect_format(path, decode(data[:4096])[0])
    if fmt != "tei":
        text, encoding = decode(data)
        return [_one(item.meta, text, fmt, encoding, config, base, len(data))]
    try:
        parts = list(read_old_bailey(io.BytesIO(data), path.stem))
    except ValueError as exc:
        return [_rejected({**base, "format": "tei"}, "unreadable", f"unreadable TEI: {exc}")]
    if not parts:
        return [
            _rejected(
                {**base, "format": "tei"},
                "empty",
                "no trial accounts (div1 type=trialAccount) found",
            )
        ]
    outcomes = []
    for part in parts:
        meta = {"category": "trial_proceedings", "licence": "Old Bailey Proceedings Online: see its terms of use",
                **item.meta, "id": part["id"], "title": part["title"], "year": part["year"], "source": str(path)}  # fmt: skip
        entry = {**base, "id": part["id"], "title": part["title"]}
        outcome = _one(meta, part["text"], "tei", "xml", config, entry, len(part["text"]))
        outcome.entry["removed"] = part["removed"] + outcome.entry["removed"]
        outcomes.append(outcome)
    return outcomes


def _rejected(entry: dict[str, Any], rule: str, reason: str) -> Outcome:
    return Outcome(
        {**entry, "status": "rejected", "rule": rule, "reason": reason, "removed": [], "stats": {}}
    )


def _one(
    meta: dict, text: str, fmt: str, encoding: str, config: CleanConfig, entry: dict, size: int
) -> Outcome:
    cleaned, removed = clean_text(text, fmt, config)
    words = TOKEN.findall(cleaned.lower())  # counted once, for the filters and the fingerprint
    counts = Counter(words)
    stats = measure(cleaned, counts)
    stats["chars_in"] = len(text)
    entry = {
        **entry,
        "format": fmt,
        "encoding": encoding,
        "bytes": size,
        "removed": removed,
        "stats": stats,
    }
    verdict = judge(meta.get("year"), stats, config)
    if verdict:
        return Outcome({**entry, "status": "rejected", "rule": verdict[0], "reason": verdict[1]})
    doc = Document(
        id=str(meta["id"]),
        text=cleaned,
        **{k: meta[k] for k in DOC_FIELDS if meta.get(k) is not None},
    )
    fp = _fingerprints(config)
    key, sig = fp.fingerprint_words(words, counts.keys()) if config.dedup else ("", None)
    entry.update(status="kept", reason="", period=doc.period, category=doc.category)
    return Outcome(entry, doc.to_json(), key, sig)


def _pool(workers: int) -> Any:
    if workers <= 1:
        return None
    return multiprocessing.get_context().Pool(workers, initializer=_worker_signals)


def _worker_signals() -> None:
    """A worker ends on SIGTERM without a word, and leaves Ctrl-C to the main process, which
    stops the pool: the main process says what happened, once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def clean_corpus(
    items: list[Item],
    out_dir: str | Path,
    config: CleanConfig,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Clean `items` into `out_dir`: documents.jsonl, clean_log.jsonl, report.json, report.md."""
    if not items:
        raise UserError(
            "nothing to clean: no collected sources (status ok) and no local files given"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; give another --out")
    folder = CorpusFolder(out)
    # one at a time (they share the spool); the folders it makes go again if nothing is written
    with writing(out, folder.cleaned_names()):
        return _clean_into(items, folder, config, workers, progress)


def _clean_into(
    items: list[Item], folder: CorpusFolder, config: CleanConfig, workers: int, progress: bool
) -> dict[str, Any]:
    spool_path = folder.spool
    entries: list[dict[str, Any]] = []
    kept: list[tuple[int, Outcome]] = []
    kept_ids: dict[str, str] = {}  # id -> the file it was read from
    pool = _pool(workers)
    imap = partial(pool.imap, chunksize=1) if pool else map
    bar = progress_bar(
        total=sum(_size(i.path) for i in items),
        unit="B",
        unit_scale=True,
        desc="clean",
        disable=not progress,
    )
    try:
        with open(spool_path, "w", encoding="utf-8") as spool:
            for item, outcomes in zip(
                items, imap(partial(process_item, config=config), items), strict=True
            ):
                for o in outcomes:
                    _add(o, entries, kept, kept_ids, spool)
                bar.update(_size(item.path))
        if pool:
            pool.close()
        dropped = _deduplicate(kept, config) if config.dedup else {}
        for index, o in kept:
            if o.entry["id"] in dropped:
                entries[index].update(dropped[o.entry["id"]])
        if len(kept) == len(dropped):  # an empty corpus would only fail later, further away
            raise UserError(_nothing_kept(entries))  # and the folder's files stay as they were
        n = _write_outputs(folder, _read_spool(spool_path, set(dropped)), entries)
    finally:
        if pool:
            pool.terminate()
        bar.close()
        spool_path.unlink(missing_ok=True)
    from hellolondon.corpus.stats import build_report, write_report

    report = build_report(folder.path)
    write_report(report, folder.path)
    return {"documents": n, "entries": len(entries), "report": report}


def _write_outputs(folder: CorpusFolder, docs: Iterable[Document], entries: list) -> int:
    """documents.jsonl and clean_log.jsonl written whole under temporary names, then renamed
    one right after the other (the log last, so it is never older than the documents); the old
    report goes first, and the caller writes the new one. A stop at any point leaves no
    documents beside another run's log or report."""
    for stale in (folder.report_json, folder.report_md):
        stale.unlink(missing_ok=True)
    with atomic_path(folder.clean_log) as log_tmp, atomic_path(folder.documents) as docs_tmp:
        n = write_documents(docs_tmp, docs)
        _write_jsonl(log_tmp, entries)
    return n  # renamed on leaving: the documents (inner) first, then the log


def _nothing_kept(entries: list[dict[str, Any]]) -> str:
    """One line: every document was rejected, the commonest reasons, what to do."""
    rules = Counter(e.get("rule") or e.get("status", "?") for e in entries)
    top = rules.most_common(1)[0][0] if rules else ""
    example = next((e.get("reason", "") for e in entries if e.get("rule") == top), "")
    reasons = ", ".join(f"{rule} {n}" for rule, n in rules.most_common(3))
    return (
        f"no document kept of {len(entries)} read ({reasons}; {top}: {example}); nothing written; "
        "loosen a rule with --set KEY=VALUE (see `hellolondon corpus clean --help`) or add texts"
    )


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _add(o: Outcome, entries: list, kept: list, kept_ids: dict[str, str], spool: Any) -> None:
    if o.entry["status"] == "kept" and o.entry["id"] in kept_ids:
        o.entry.update(
            status="rejected",
            rule="duplicate_id",
            reason=f"the same id was already read from {kept_ids[o.entry['id']]}",
        )
    if o.entry["status"] == "kept":
        spool.write(o.line + "\n")
        o.line = ""  # the text now lives in the spool only
        kept.append((len(entries), o))
        kept_ids[o.entry["id"]] = o.entry.get("file", "another file")
    entries.append(o.entry)


def _deduplicate(kept: list[tuple[int, Outcome]], config: CleanConfig) -> dict[str, dict[str, Any]]:
    """Best copy first (quality, then length, then input order), so each group keeps its best."""
    dedup = Deduplicator(config.near_dup, config.bands)
    order = sorted(
        kept, key=lambda t: (-t[1].entry["stats"]["quality"], -t[1].entry["stats"]["chars"], t[0])
    )
    dropped = {}
    for _, o in order:
        found = dedup.check(o.entry["id"], o.key, o.sig)
        if found:
            kind, other, score = found
            what = (
                "exact duplicate"
                if kind == "exact"
                else f"near duplicate (estimated Jaccard {score:.2f})"
            )
            dropped[o.entry["id"]] = {"status": "duplicate", "rule": f"{kind}_duplicate",
                                      "reason": f"{what} of {other}", "duplicate_of": other}  # fmt: skip
    return dropped


def _read_spool(path: Path, skip: set[str]) -> Iterator[Document]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            data = json.loads(line)
            if data["id"] not in skip:
                yield Document(**data)


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
