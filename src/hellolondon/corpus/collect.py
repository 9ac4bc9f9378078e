"""`corpus collect`: download the catalog's sources into a folder that can be trusted and re-run
(its layout: `corpus/layout.py`).

A file reaches raw/ only by an atomic rename after it was downloaded in full, is not an HTML
page, and (for Project Gutenberg) its own header names the catalog's title and author; an
archive.org item's metadata is checked the same way before its text is fetched.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hellolondon.corpus.catalog import Source, check_header
from hellolondon.corpus.fetch import FetchConfig, Fetcher, FetchError, is_http_url
from hellolondon.corpus.formats import decode, gutenberg_header, has_gutenberg_end, looks_like_html
from hellolondon.corpus.layout import CorpusFolder
from hellolondon.errors import UserError
from hellolondon.files import atomic_write, exclusive_lock, sha256_file
from hellolondon.progress import progress_bar

GUTENBERG_URL = "https://www.gutenberg.org/cache/epub/{id}/pg{id}.txt"
ARCHIVE_BASE = "https://archive.org"
_HEAD = 1 << 16  # bytes read to find a book's header


@dataclass
class CollectOptions:
    out_dir: Path
    offline: bool = False  # use only what is already in out_dir; no network
    retry_failed: bool = False  # try again the sources that failed or were rejected before
    workers: int = 4  # sources downloaded at once (the per-host limit still applies)
    gutenberg: str = GUTENBERG_URL  # a URL template with {id} (and {path}), or a mirror's base URL
    archive_base: str = ARCHIVE_BASE
    progress: bool = True
    fetch: FetchConfig = field(default_factory=FetchConfig)


def gutenberg_urls(template: str, ebook: str) -> list[str]:
    """Candidate URLs of a book's plain text. A template may use {id} and {path} (the mirror
    folder: 1342 -> 1/3/4); a bare base URL is taken as a mirror of the Project Gutenberg
    tree, where the UTF-8 file is <id>-0.txt and older books have only <id>.txt."""
    path = "/".join(ebook[:-1]) if len(ebook) > 1 else "0"
    if "{id}" in template:
        return [template.format(id=ebook, path=path)]
    base = template.rstrip("/")
    return [f"{base}/{path}/{ebook}/{ebook}-0.txt", f"{base}/{path}/{ebook}/{ebook}.txt"]


def read_manifest(path: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        records = dict(data["sources"])
    except (ValueError, KeyError, TypeError):
        raise UserError(
            f"{path} is not a collection manifest; move it away and collect again"
        ) from None
    for source_id, record in records.items():
        if problem := _record_problem(record):
            raise UserError(
                f"{path}: the record of {source_id!r} {problem}; remove that record (the source "
                "is then collected again) or move the manifest away, and run the command again"
            )
    return records


def _record_problem(record: object) -> str:
    """What makes a manifest record unusable ("" when nothing does): `clean` and a rerun read
    an ok record's file path and catalog entry, and every record's status."""
    if not isinstance(record, dict):
        return "is not a JSON object"
    if not isinstance(record.get("status"), str):
        return "has no status"
    if record["status"] == "ok":
        if not isinstance(record.get("path"), str):
            return "is ok but names no file (path)"
        if not isinstance(record.get("source"), dict):
            return "is ok but holds no catalog entry (source)"
    return ""


class Manifest:
    """The manifest file, rewritten atomically after every source so a crash loses nothing."""

    def __init__(self, path: Path):
        self.path = path
        self.records = read_manifest(path)
        self._lock = threading.Lock()

    def put(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.records[record["id"]] = record
            body = {"version": 1, "sources": self.records}
            atomic_write(self.path, json.dumps(body, indent=1, ensure_ascii=False))


def _cached(out: CorpusFolder, source: Source, rec: dict[str, Any] | None) -> bool:
    """The source's complete file is in raw/, unchanged, for the entry as it is now."""
    if not rec or rec.get("status") != "ok" or rec.get("fingerprint") != source.fingerprint():
        return False
    path = out.recorded(rec["path"])
    return path.is_file() and sha256_file(path) == rec.get("sha256")


def _only_collector(out: CorpusFolder) -> contextlib.AbstractContextManager[None]:
    """Two collectors writing one folder would append to the same partial files and overwrite
    each other's manifest: the second is refused."""
    return exclusive_lock(
        out.lock,
        lambda pid: UserError(
            f"another `corpus collect` (process {pid}) is writing to {out}; wait for it to "
            "finish, or give this one another --out"
        ),
    )


def collect(
    sources: list[Source], options: CollectOptions, fetcher: Fetcher | None = None
) -> dict[str, Any]:
    """Fetch what is not complete yet; returns counts and the ids in each outcome."""
    _check_base_urls(options)
    out = CorpusFolder(options.out_dir)
    out.make()
    with _only_collector(out):
        return _collect(sources, options, fetcher, out)


def _check_base_urls(options: CollectOptions) -> None:
    """Refuse a mirror or base URL every download would fail on, once, before any is tried."""
    try:
        url = gutenberg_urls(options.gutenberg, "1342")[0]
        if "{" in options.gutenberg and "{id}" not in options.gutenberg:
            raise KeyError(options.gutenberg)  # a bare base URL takes no braces
    except (KeyError, IndexError, ValueError):
        raise UserError(
            f"--gutenberg-mirror {options.gutenberg}: a URL template may hold only {{id}} and "
            "{path} in braces (e.g. https://mirror.example/{path}/{id}/{id}-0.txt)"
        ) from None
    for flag, value, example in (
        ("--gutenberg-mirror", options.gutenberg, url),
        ("--archive-base", options.archive_base, options.archive_base),
    ):
        if not is_http_url(example):
            raise UserError(
                f"{flag} {value}: not an http:// or https:// address with a host name "
                "(e.g. https://mirror.example/gutenberg)"
            )


def _collect(
    sources: list[Source], options: CollectOptions, fetcher: Fetcher | None, out: CorpusFolder
) -> dict[str, Any]:
    manifest = Manifest(out.manifest)
    summary: dict[str, list[str]] = {
        "cached": [],
        "ok": [],
        "failed": [],
        "rejected": [],
        "skipped": [],
    }
    todo = []
    for source in sources:
        rec = manifest.records.get(source.id)
        if _cached(out, source, rec):
            summary["cached"].append(source.id)
            if rec["source"] != source.metadata():  # a fixed year or category needs no download
                manifest.put({**rec, "source": source.metadata()})
        elif options.offline:
            summary["skipped"].append(source.id)  # not in the cache; nothing is fetched offline
        elif rec and rec.get("status") in ("failed", "rejected") and not options.retry_failed \
                and rec.get("fingerprint") == source.fingerprint():  # fmt: skip
            summary["skipped"].append(source.id)
        else:
            todo.append(source)
    if todo:
        fetcher = fetcher or Fetcher(options.fetch)
        bar = progress_bar(
            total=len(todo), unit="source", desc="collect", disable=not options.progress
        )
        got = 0
        pool = ThreadPoolExecutor(max(1, options.workers))
        futures = [pool.submit(_collect_one, s, options, fetcher) for s in todo]
        done: set[Future] = set()

        def record(future: Future) -> None:
            nonlocal got
            done.add(future)
            rec = future.result()
            manifest.put(rec)
            summary[rec["status"]].append(rec["id"])
            got += rec.get("bytes") or 0
            bar.set_postfix_str(f"{got / 1e6:.1f} MB")
            bar.update(1)

        try:
            for future in as_completed(futures):
                record(future)
        except BaseException:  # Ctrl-C, or an error such as a full disk: stop every download now
            fetcher.cancel()
            pool.shutdown(cancel_futures=True)
            for future in futures:  # keep what finished meanwhile; interrupted ones stay partial
                if future not in done and not future.cancelled() and not future.exception():
                    record(future)
            raise
        finally:
            pool.shutdown(cancel_futures=True)
            bar.close()
    return {"counts": {k: len(v) for k, v in summary.items()}, **summary}


def _record(source: Source) -> dict[str, Any]:
    return {
        "id": source.id, "kind": source.kind, "ref": source.ref, "format": source.format,
        "fingerprint": source.fingerprint(), "source": source.metadata(), "status": "failed",
        "url": "", "path": "", "bytes": 0, "sha256": "", "attempts": 0, "http_status": None,
        "error": "", "header": {},
    }  # fmt: skip


def _collect_one(source: Source, options: CollectOptions, fetcher: Fetcher) -> dict[str, Any]:
    out = CorpusFolder(options.out_dir)
    rec = _record(source)
    part = out.partial(source.id)
    try:
        urls = _urls(source, options, fetcher, rec)
        if urls:
            fetched = _download(urls, part, fetcher, rec)
            _check_complete(source, part, fetched)
            _accept_or_reject(source, out, part, fetched.content_type, rec)
    except FetchError as exc:
        rec.update(status="failed", error=str(exc), http_status=exc.status)
        rec["attempts"] += exc.attempts
    earlier = out.raw(source.id)
    if rec["status"] == "rejected":
        earlier.unlink(missing_ok=True)  # the entry now names what was rejected: no stale copy
    elif rec["status"] == "failed" and earlier.is_file():
        # a download of a changed entry failed (the network, the server): the earlier checked
        # copy stays until one succeeds; `clean` reads only sources of status ok
        rec["error"] += f"; the earlier download stays in raw/{earlier.name}"
    rec["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return rec


def _urls(
    source: Source, options: CollectOptions, fetcher: Fetcher, rec: dict[str, Any]
) -> list[tuple[str, int | None]]:
    """The URLs to try in turn, each with the file's size where a listing gives it."""
    if source.kind == "gutenberg":
        return [(url, None) for url in gutenberg_urls(options.gutenberg, source.ref)]
    if source.kind == "url":
        return [(source.ref, None)]
    base = options.archive_base.rstrip("/")
    body, attempts = fetcher.get(f"{base}/metadata/{quote(source.ref)}")
    rec["attempts"] += attempts
    try:
        info = json.loads(body)
    except ValueError:
        return _reject(rec, "archive.org metadata is not JSON")
    meta = info.get("metadata") if isinstance(info, dict) else None
    if not meta:
        return _reject(rec, f"archive.org has no item {source.ref!r}")
    files = info.get("files")
    if not isinstance(meta, dict) or not isinstance(files, list):
        return _reject(
            rec, "archive.org metadata has an unexpected shape (no metadata object or file list)"
        )
    found = {k: "; ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in meta.items()}
    rec["header"] = {"title": found.get("title", ""), "author": found.get("creator", ""),
                     "language": found.get("language", "")}  # fmt: skip
    reason = check_header(source, rec["header"])
    if reason:
        return _reject(rec, f"archive.org metadata: {reason}")
    sizes = {str(f.get("name", "")): f.get("size") for f in files if isinstance(f, dict)}
    names = [n for n in sizes if n.endswith("_djvu.txt")]
    if not names:
        return _reject(rec, "the archive.org item has no OCR text (_djvu.txt) file")
    name = f"{source.ref}_djvu.txt" if f"{source.ref}_djvu.txt" in names else names[0]
    return [(f"{base}/download/{quote(source.ref)}/{quote(name)}", _listed_size(sizes[name]))]


def _listed_size(value: Any) -> int | None:
    """A file's size from archive.org's file list (a string of digits there), if it gives one."""
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    return int(text) if text.isdigit() else None


def _reject(rec: dict[str, Any], reason: str) -> list[tuple[str, int | None]]:
    rec.update(status="rejected", error=reason)
    return []


def _download(
    urls: list[tuple[str, int | None]], part: Path, fetcher: Fetcher, rec: dict[str, Any]
) -> Any:
    for i, (url, size) in enumerate(urls):
        rec["url"] = url
        try:
            fetched = fetcher.download(url, part, size)
        except FetchError as exc:
            if exc.status == 404 and i + 1 < len(urls):  # the next file name may exist
                rec["attempts"] += exc.attempts
                continue
            raise
        rec["attempts"] += fetched.attempts
        rec["url"] = fetched.url
        return fetched
    raise AssertionError("unreachable")


_TAIL = 256 * 1024  # the END marker and the licence after it are in a book's last part


def _check_complete(source: Source, part: Path, fetched: Any) -> None:
    """A Project Gutenberg book sent without a length (the server closes the connection at the
    end) must end with its END marker: else the connection may have closed early."""
    if fetched.length_known or source.format != "gutenberg":
        return
    with open(part, "rb") as f:
        f.seek(max(0, part.stat().st_size - _TAIL))
        tail = decode(f.read())[0]
    if not has_gutenberg_end(tail):
        part.unlink(missing_ok=True)  # no length to resume against: start again next time
        part.with_name(part.name + ".json").unlink(missing_ok=True)  # its resume record
        raise FetchError(
            "the server gave no length and the book has no END marker, so it may be cut short; "
            "run again with --retry-failed",
            False,
        )


def _accept_or_reject(
    source: Source, out: CorpusFolder, part: Path, content_type: str, rec: dict[str, Any]
) -> None:
    """Move a complete download to raw/ if it passes the checks, else to rejected/."""
    with open(part, "rb") as f:
        head = f.read(_HEAD)
    reason = None
    if looks_like_html(head) or "html" in content_type.lower():
        reason = (
            f"got an HTML page (Content-Type {content_type or 'not given'}), not the plain text"
        )
    elif source.format == "gutenberg":
        rec["header"] = gutenberg_header(decode(head)[0])
        reason = check_header(source, rec["header"])
    elif not head.strip():
        reason = "the download is empty"
    digest = sha256_file(part)
    rec.update(bytes=part.stat().st_size, sha256=digest)
    target = out.rejected(source.id) if reason else out.raw(source.id)
    os.replace(part, target)
    part.with_name(part.name + ".json").unlink(missing_ok=True)
    if reason:
        rec.update(status="rejected", error=reason, path=out.record(target))
    else:
        rec.update(status="ok", error="", path=out.record(target))
