"""`documents.jsonl`: one JSON object per line, one document per object.

This is the hand-over between the corpus stages (sample, collect, clean) and `prepare`.
Required keys: `id` (unique, stable) and `text`. Optional metadata: `title`, `author`, `year`
(int), `period` (tudor|stuart|georgian|early_victorian), `category`, `source`, `licence`.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from hellolondon.corpus.layout import CorpusFolder
from hellolondon.errors import UserError
from hellolondon.files import atomic_path, made_folder

PERIODS = (
    ("tudor", 1485, 1603),
    ("stuart", 1603, 1714),
    ("georgian", 1714, 1837),
    ("early_victorian", 1837, 1851),
)


def period_of(year: int | None) -> str:
    """The period label of a year (Tudor 1485-1603, Stuart 1603-1714, Georgian 1714-1837,
    early Victorian 1837-1850); an empty string when the year is unknown or out of range."""
    if year is None:
        return ""
    for name, start, end in PERIODS:
        if start <= year < end:
            return name
    return ""


@dataclass
class Document:
    id: str
    text: str
    title: str = ""
    author: str = ""
    year: int | None = None
    period: str = ""
    category: str = ""
    source: str = ""
    licence: str = ""

    def __post_init__(self) -> None:
        if not self.period:
            self.period = period_of(self.year)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def is_validation(doc_id: str, val_fraction: float = 0.05) -> bool:
    """Deterministic split by document: a document goes to validation when the hash of its id
    falls in the first `val_fraction` of the hash space. Never the tail of one text."""
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def check_corpus_file(
    path: Path, missing: str = "run `hellolondon corpus sample` or `corpus clean` first"
) -> None:
    """A corpus file that exists; a folder in its place is named, with the file it may hold."""
    if path.is_dir():
        inside = CorpusFolder(path).documents
        what = f"give {inside}" if inside.is_file() else "give the documents file (JSONL)"
        raise UserError(f"{path} is a folder, not a corpus file; {what}")
    if not path.is_file():
        raise UserError(f"corpus file {path} not found; {missing}")


def read_documents(path: str | Path) -> Iterator[Document]:
    """Stream documents from a JSONL file; a bad line is a clear error naming file and line."""
    path = Path(path)
    check_corpus_file(path)
    lineno = 0  # counted by hand: enumerate() would keep the last line alive in its result tuple
    with open(path, "rb") as f:
        for raw in f:
            lineno += 1
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):  # a file saved by a Windows editor
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(
                    f"{path}:{lineno} is not UTF-8 text; is this a binary file?"
                ) from None
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{path}:{lineno} is not a JSON object ({exc.msg}); expected documents.jsonl"
                ) from None
            _check_shape(path, lineno, data)
            # null stands for a missing title, year, ...; `id` and `text` must be there
            known = {
                k: data[k]
                for k in Document.__dataclass_fields__
                if k in data and (data[k] is not None or k in ("id", "text"))
            }
            for key, value in known.items():
                whole = isinstance(value, int) and not isinstance(value, bool)
                if not (whole if key == "year" else isinstance(value, str)):
                    kind = "a whole number" if key == "year" else "a string"
                    raise UserError(
                        f"{path}:{lineno}: {key!r} must be {kind}, not {json.dumps(value)[:40]}"
                    )
            # JSON escapes can spell half a UTF-16 pair, which is not text ("\\u" is lower case in
            # JSON, its hex digits are not); no lower-cased copy: a line can be a whole book.
            if "\\ud" in line or "\\uD" in line:
                for key, value in known.items():
                    if isinstance(value, str) and not is_text(value):
                        raise UserError(
                            f"{path}:{lineno}: {key!r} holds an unpaired surrogate escape "
                            "(\\ud800-\\udfff), which is not a character; fix or remove it"
                        )
            del raw, line, data  # only the fields are kept while the caller works on them
            yield Document(**known)


JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number"}
JSON_KINDS |= {bool: "true or false", type(None): "null"}


def _check_shape(path: Path, lineno: int, data: object) -> None:
    """A document is a JSON object with the keys `id` and `text`; say which part is wrong."""
    if not isinstance(data, dict):
        raise UserError(
            f"{path}:{lineno} is {JSON_KINDS.get(type(data), 'a JSON value')}, not a JSON object; "
            "expected documents.jsonl, one object with 'id' and 'text' per line"
        )
    missing = [key for key in ("id", "text") if key not in data]
    if missing:
        raise UserError(
            f"{path}:{lineno} has no {' and no '.join(repr(k) for k in missing)}; every document "
            "needs the keys 'id' and 'text'"
        )


def is_text(value: str) -> bool:
    """Whether a string is characters only: no lone surrogates (from a JSON escape, or from
    bytes that were not UTF-8 on the command line), which no UTF-8 text can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_documents(path: str | Path, docs: Iterable[Document]) -> int:
    """Write atomically (a temporary file, then rename); returns how many were written."""
    path = Path(path)
    count = 0
    with made_folder(path.parent), atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(doc.to_json() + "\n")
            count += 1
    return count
