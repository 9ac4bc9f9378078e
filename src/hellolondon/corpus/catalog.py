"""The catalog: the sources of the corpus as data (TOML), and the check of a book against it.

The built-in catalog is `hellolondon/data/catalog.toml`. Users add their own files of the same
shape; an entry with the same `id` as a built-in one replaces it (to fix an ID, say).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
import unicodedata
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hellolondon.corpus.documents import PERIODS, period_of
from hellolondon.errors import UserError

KINDS = ("gutenberg", "archive", "url")
STATUSES = ("believed", "unverified", "doubtful", "wrong")
DEFAULT_STATUSES = ("believed", "unverified")
FORMATS = ("gutenberg", "djvu", "tei", "text")
_FIELDS = {
    "id", "gutenberg", "archive", "url", "title", "author", "year", "period", "category",
    "licence", "status", "note", "format",
}  # fmt: skip


@dataclass(frozen=True)
class Source:
    id: str  # stable key: pg-<n>, ia-<identifier>, or the user's own
    kind: str  # gutenberg | archive | url
    ref: str  # the ebook number, the archive.org identifier or the URL
    title: str
    author: str
    year: int
    period: str
    category: str
    licence: str
    status: str = "unverified"
    note: str = ""
    format: str = "gutenberg"  # how `clean` reads the file: gutenberg | djvu | tei | text

    def fingerprint(self) -> str:
        """Changes when the entry changes, so a re-run fetches a source whose entry was fixed."""
        keys = ("kind", "ref", "title", "author", "format")
        blob = json.dumps([getattr(self, k) for k in keys], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def metadata(self) -> dict[str, Any]:
        return asdict(self)


def builtin_catalog_path() -> Path:
    return Path(str(resources.files("hellolondon") / "data" / "catalog.toml"))


def load_catalog(files: list[str | Path] | None = None, builtin: bool = True) -> list[Source]:
    """The built-in sources (unless `builtin` is False) followed by those of each user file."""
    paths = ([builtin_catalog_path()] if builtin else []) + [Path(f) for f in files or []]
    if not paths:
        raise UserError("no catalog to read; pass --catalog FILE or drop --no-builtin")
    merged: dict[str, Source] = {}
    for path in paths:
        for source in _read_file(path):
            merged.pop(source.id, None)  # a user entry replaces the built-in one in place of order
            merged[source.id] = source
    return list(merged.values())


def _read_file(path: Path) -> list[Source]:
    if not path.is_file():
        raise UserError(f"catalog file {path} not found")
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except UnicodeDecodeError:
        raise UserError(f"catalog file {path} is not UTF-8 text; save it as UTF-8") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"catalog file {path} is not valid {kind}: {exc}") from None
    entries = data.get("source") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        shape = 'an object with a "source" list' if kind == "JSON" else "[[source]] entries"
        raise UserError(f"catalog file {path} has no source entries: expected {shape}")
    extra = data.get("licences") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
        raise UserError(
            f'catalog file {path}: licences must be a table of kind = "licence text" '
            '(such as gutenberg = "Public domain in the USA")'
        )
    licences = {**_DEFAULT_LICENCES, **extra}
    sources, seen = [], set()
    for n, entry in enumerate(entries, 1):
        source = _parse_entry(entry, licences, f"{path}, source #{n}")
        if source.id in seen:
            raise UserError(f"{path}: id {source.id!r} appears twice; ids must be unique")
        seen.add(source.id)
        sources.append(source)
    return sources


_DEFAULT_LICENCES = {
    "gutenberg": "Public domain in the USA (Project Gutenberg eBook)",
    "archive": "Public domain scan (check the item's rights statement)",
    "url": "Unknown: check the source's terms",
}


def _parse_entry(entry: Any, licences: dict[str, str], where: str) -> Source:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a table of fields")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        hint = difflib.get_close_matches(unknown[0], _FIELDS, n=1)
        raise UserError(
            f"{where}: unknown field {unknown[0]!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
        )
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1:
        raise UserError(
            f'{where}: give exactly one of gutenberg = <number>, archive = "<identifier>", url = "..."'
        )
    kind = kinds[0]
    ref = str(entry[kind]).strip()
    if kind == "gutenberg" and not ref.isdigit():
        raise UserError(f"{where}: gutenberg must be an ebook number, not {ref!r}")
    if kind == "url" and not re.match(r"https?://", ref):
        raise UserError(f"{where}: url must start with http:// or https://")
    for name in ("title", "author", "year", "category"):
        if name not in entry or entry[name] in ("", None):
            raise UserError(f"{where} ({ref}): missing {name}")
    year = entry["year"]
    if not isinstance(year, int) or isinstance(year, bool):
        raise UserError(f"{where} ({ref}): year must be a whole number, not {year!r}")
    period = entry.get("period") or period_of(year)
    if period != period_of(year):
        names = ", ".join(f"{p} {a}-{b - 1}" for p, a, b in PERIODS)
        raise UserError(f"{where} ({ref}): period {period!r} does not fit year {year} ({names})")
    status = entry.get("status", "unverified")
    if status not in STATUSES:
        raise UserError(
            f"{where} ({ref}): status must be one of {', '.join(STATUSES)}, not {status!r}"
        )
    fmt = entry.get("format") or {"gutenberg": "gutenberg", "archive": "djvu", "url": "text"}[kind]
    if fmt not in FORMATS:
        raise UserError(f"{where} ({ref}): format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    default_id = {"gutenberg": f"pg-{ref}", "archive": f"ia-{ref}"}.get(kind)
    sid = str(entry.get("id") or default_id or "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}", sid):
        raise UserError(
            f"{where} ({ref}): id must be letters, digits, '.', '_' or '-' (a url entry needs one)"
        )
    return Source(
        id=sid, kind=kind, ref=ref, title=str(entry["title"]).strip(),
        author=str(entry["author"]).strip(), year=year, period=period,
        category=str(entry["category"]).strip(), licence=str(entry.get("licence") or licences[kind]),
        status=status, note=str(entry.get("note", "")), format=fmt,
    )  # fmt: skip


def select(
    sources: list[Source],
    statuses: tuple[str, ...] = DEFAULT_STATUSES,
    ids: list[str] | None = None,
    periods: list[str] | None = None,
    categories: list[str] | None = None,
) -> list[Source]:
    """The sources to collect: those named by id (whatever their status), else those whose
    status, period and category are among the ones asked for."""
    if ids:
        by_id = {s.id: s for s in sources}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UserError(
                f"no source with id {missing[0]!r} in the catalog (ids look like pg-376)"
            )
        return [by_id[i] for i in ids]
    return [
        s for s in sources
        if s.status in statuses
        and (not periods or s.period in periods)
        and (not categories or s.category in categories)
    ]  # fmt: skip


# ---- checking a downloaded book against its entry ----------------------------------------

_SMALL = {"the", "a", "an", "of", "and", "in", "on", "to", "or", "by", "with", "for", "its", "his"}
_TITLES = {"sir", "lord", "lady", "saint", "st", "mrs", "mr", "dr", "rev", "queen", "king", "baron"}
_ANON = {"various", "anonymous", "unknown", ""}


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower().replace("&", " and ")
    return re.findall(r"[a-z0-9]+", text.replace("'", ""))


def title_matches(expected: str, found: str) -> bool:
    """True when the header's title names the catalog's work: one contains the other, most of
    the catalog title's words are there, or the two are nearly the same string."""
    e, f = _words(expected), _words(found)
    if not e or not f:
        return False
    es, fs = " ".join(e), " ".join(f)
    if f" {es} " in f" {fs} " or f" {fs} " in f" {es} ":
        return True
    content = [w for w in e if w not in _SMALL] or e
    if sum(w in set(f) for w in content) / len(content) >= 0.8:
        return True
    return difflib.SequenceMatcher(None, es, fs).ratio() >= 0.85


def author_matches(expected: str, found: str) -> bool:
    """True when the surname of one of the catalog's authors is among the header's author
    words. An anonymous or 'Various' catalog author matches anything (the title still must)."""
    if " ".join(_words(expected)) in _ANON:
        return True
    found_words = set(_words(found))
    for person in re.split(r"\band\b|&|;", expected):
        words = [w for w in _words(person) if w not in _TITLES and not re.fullmatch(r"[ivx]+", w)]
        if words and words[-1] in found_words:
            return True
    return False


def check_header(source: Source, header: dict[str, str]) -> str | None:
    """Why the book's own header (title, author, language) does not fit the entry; None if it does."""
    title = header.get("title", "")
    if not title:
        return "no title found in the book's header, so it cannot be checked against the catalog"
    if not title_matches(source.title, title):
        return (
            f"title mismatch: the catalog says {source.title!r}, the book's header says {title!r}"
        )
    author = header.get("author", "")
    if author and not author_matches(source.author, author):
        return f"author mismatch: the catalog says {source.author!r}, the book's header says {author!r}"
    language = header.get("language", "")
    if language and not re.search(r"\b(english|eng|en)\b", language.lower()):
        return f"the book's header gives its language as {language!r}, not English"
    return None
