"""The bundled sample corpus: Shakespeare's First Folio plays (1623) and the King James Bible
(1611), one document per play or book, public domain, shipped xz-compressed in the package.

`scripts/build_sample_corpus.py` rebuilds it from the registry packages; the provenance file
next to it records the sources, licences and the sha256 of every text.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from hellolondon.corpus.documents import Document, write_documents
from hellolondon.files import sha256_file

SAMPLE_FILE = "sample_corpus.jsonl.xz"
PROVENANCE_FILE = "sample_corpus.provenance.json"


def sample_documents() -> Iterator[Document]:
    """Stream the sample documents from the packaged .xz file, in a fixed order."""
    packed = resources.files("hellolondon").joinpath("data", SAMPLE_FILE)
    with packed.open("rb") as raw, lzma.open(raw, "rt", encoding="utf-8") as f:
        for line in f:
            yield Document(**json.loads(line))


def sample_provenance() -> dict:
    """Sources, editions, licences and per-document sha256 of the sample corpus."""
    text = resources.files("hellolondon").joinpath("data", PROVENANCE_FILE).read_text("utf-8")
    return json.loads(text)


def write_sample(path: str | Path) -> int:
    """Write the sample as documents.jsonl at `path` (atomically); returns the document count."""
    return write_documents(path, sample_documents())


def holds_sample(path: str | Path) -> bool:
    """Whether the file at `path` is byte for byte what `write_sample` writes."""
    digest = hashlib.sha256()
    for doc in sample_documents():
        digest.update((doc.to_json() + "\n").encode("utf-8"))
    return sha256_file(Path(path)) == digest.hexdigest()
