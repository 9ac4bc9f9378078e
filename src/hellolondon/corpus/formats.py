"""Source formats: Project Gutenberg plain text, archive.org DjVu OCR text, Old Bailey TEI XML.

Each reader returns text plus a list of what it removed and why, so every document's log can
say exactly what left it. Removals are plain dicts: step, why, chars, count, examples.
"""

from __future__ import annotations

import codecs
import re
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

Removal = dict[str, Any]


def removal(step: str, why: str, removed: list[str]) -> Removal:
    """One log entry: how many pieces and characters a step took out, with a few examples."""
    examples = [r.strip()[:80] for r in removed if r.strip()][:3]
    return {
        "step": step,
        "why": why,
        "count": len(removed),
        "chars": sum(map(len, removed)),
        "examples": examples,
    }


# UTF-32 LE's BOM begins with UTF-16 LE's, so it is tried first.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_STRAY = re.compile(r"[\udc80-\udcff]+")  # bytes that were not UTF-8 (surrogateescape)


def decode(data: bytes) -> tuple[str, str]:
    """Bytes to text: UTF-16 or UTF-32 with a byte-order mark; UTF-8 (a BOM dropped); UTF-8 in
    which a few bytes are not UTF-8 (a stray Windows-1252 '£' in a UTF-8 file), those bytes read
    as Windows-1252 ("utf-8+cp1252"); else Windows-1252, else Latin-1 (never fails)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                break
    try:
        return data.decode("utf-8-sig"), "utf-8-sig"
    except UnicodeDecodeError:
        pass
    mixed = data.decode("utf-8", errors="surrogateescape")
    stray = sum(m.end() - m.start() for m in _STRAY.finditer(mixed))
    continuation = len(data) - len(mixed)  # bytes after the first of each UTF-8 sequence
    if continuation > stray:  # mostly UTF-8: keep it, read only the stray bytes otherwise
        return _STRAY.sub(_single_bytes, mixed).removeprefix("\ufeff"), "utf-8+cp1252"
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _single_bytes(m: re.Match) -> str:
    raw = bytes(ord(c) - 0xDC00 for c in m.group(0))
    return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in raw)


_MAGIC = {
    b"\x1f\x8b": "gzip-compressed",
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ\x00": "xz-compressed",
    b"PK\x03\x04": "a zip archive (or an EPUB or Word file)",
    b"7z\xbc\xaf\x27\x1c": "a 7z archive",
    b"%PDF-": "a PDF",
    b"{\\rtf": "RTF",
}


def not_text(data: bytes) -> str:
    """Why a file is not a plain-text or XML source ('' when it may be one): compressed,
    an archive, a PDF, binary data (NUL bytes, outside UTF-16/32 text) or an HTML page."""
    for magic, what in _MAGIC.items():
        if data.startswith(magic):
            return f"not a text file ({what}); give its plain text"
    head = data[:8192]
    if b"\x00" in head and not any(head.startswith(bom) for bom, _ in _BOMS):
        return "not a text file (binary data: NUL bytes)"
    if looks_like_html(head):
        return "an HTML page, not plain text; give the plain-text (.txt) edition"
    return ""


def looks_like_html(head: bytes) -> bool:
    """A landing page or error page served where plain text was expected."""
    start = head[:4096].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html")) or (
        start.startswith(b"<") and b"<html" in start
    )


def detect_format(path: Path, head: str) -> str:
    """gutenberg | djvu | tei | text, from the file name and its first characters."""
    name = path.name.lower()
    if name.endswith(".xml") or head.lstrip().startswith("<"):
        return "tei"
    if name.endswith("_djvu.txt"):
        return "djvu"
    if _START.search(head) or "project gutenberg" in head[:3000].lower():
        return "gutenberg"
    return "text"


# ---- Project Gutenberg -----------------------------------------------------------------------

_START = re.compile(
    r"^[ \t]*\*{3}[ \t]*START OF (?:THE |THIS )?PROJECT GUTENBERG[^\n]*$"
    r"|^[ \t]*\*END\*THE SMALL PRINT[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_END = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*)?END OF (?:THE |THIS )?PROJECT GUTENBERG[^\n]*$"
    r"|^[ \t]*End of (?:the |this )?Project Gutenberg[^\n]*$"
    r"|^[ \t]*\*{3}[ \t]*START: FULL LICEN[SC]E[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_FIELD = re.compile(r"^(Title|Author|Language|Translator|Editor)[ \t]*:[ \t]*(.*)$", re.IGNORECASE)
_EBOOK_OF = re.compile(
    r"Project Gutenberg(?:'s)? E-?(?:Book|text)(?: of)? (.+?)(?:,? by (.+?))?(?:\s*$)",
    re.IGNORECASE,
)
_PRODUCED = re.compile(
    r"^(?:Produced by|E-?text prepared by|This e-?(?:text|book) was (?:prepared|produced)|"
    r"Updated editions)",
    re.IGNORECASE,
)
# "Transcribed from the Originals in the Guildhall" may be the book's own words: such an opening
# is a modern credit only with a modern word in its paragraph.
_PREPARED = re.compile(r"^(?:Transcribed (?:from|by)|Prepared by)", re.IGNORECASE)
_MODERN = re.compile(
    r"e-?text|e-?book|proofread|pgdp|online|internet|https?:|www\.|html|scann|images? "
    r"(?:of|from|generously)|volunteer|gutenberg|@|\b(?:19|20)\d\d\b",
    re.IGNORECASE,
)
# "THE SMALL PRINT!" is the old licence's heading; "small print" alone is ordinary English.
_LICENCE_WORDS = re.compile(
    r"gutenberg-tm|gutenberg licen[sc]e|the small print!|gutenberg literary archive", re.IGNORECASE
)
_PG_MENTION = re.compile(r"project gutenberg|gutenberg\.(?:org|net)|pglaf", re.IGNORECASE)
# a tag on a line of its own goes with its line; one within a line, with the space before it
_ILLUSTRATION = re.compile(
    r"^[ \t]*\[Illustrations?\b[^\]]{0,500}\][ \t]*$|[ \t]?\[Illustrations?\b[^\]\n]{0,500}\]",
    re.MULTILINE | re.IGNORECASE,
)
# A bracketed note runs to its closing bracket; an unbracketed one is its own paragraph, and
# the next paragraph too when the first is the heading alone ("Transcriber's Notes:"). Only a
# note that opens with "[" may run past a blank line: a "]" further on belongs to the book.
_TRANSCRIBER = re.compile(
    r"^[ \t]*(?:\[Transcriber[’']?s? notes?\b[^\]]{0,3000}\]"
    r"|Transcriber[’']?s? notes?[ \t]*[:.]?[ \t]*\n[ \t]*\n.*?(?=\n[ \t]*\n|\Z)"
    r"|\[?Transcriber[’']?s? notes?\b.*?(?=\n[ \t]*\n|\Z))",
    re.MULTILINE | re.DOTALL | re.IGNORECASE,
)
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)((?:[^_\n]|\n(?![ \t]*\n)){1,400}?)(?<=\S)_(?![\w_])")


def has_gutenberg_end(text: str) -> bool:
    """Whether `text` (a book's last part will do) holds Project Gutenberg's END marker."""
    return _END.search(text) is not None


def gutenberg_header(text: str) -> dict[str, str]:
    """Title, author and language from the header before the START marker (the `Title:` lines,
    or else the 'Project Gutenberg EBook of X, by Y' line that older books open with)."""
    match = _START.search(text)
    head = text[: match.start()] if match else text[:6000]
    fields: dict[str, str] = {}
    current = None
    for line in head.splitlines():
        found = _FIELD.match(line)
        if found:
            current = found.group(1).lower()
            fields.setdefault(current, found.group(2).strip())
        elif current and line[:1] in (" ", "\t") and line.strip():
            fields[current] = (
                f"{fields[current]} {line.strip()}"  # a title wrapped onto the next line
            )
        else:
            current = None
    if "title" not in fields:
        first = re.split(
            r"\n[ \t]*\n|This e-?(?:book|text)", head.lstrip(), maxsplit=1, flags=re.I
        )[0]
        found = _EBOOK_OF.search(" ".join(first.split()))
        if found:
            fields["title"] = found.group(1).strip(" ,.")
            if found.group(2):
                fields["author"] = found.group(2).strip(" ,.")
    return fields


def _is_credit(para: str) -> bool:
    """A modern producer's or transcriber's credit at the start of a Gutenberg file."""
    return bool(_PRODUCED.match(para) or (_PREPARED.match(para) and _MODERN.search(para)))


def strip_gutenberg(text: str, italics: bool = True) -> tuple[str, list[Removal]]:
    """The body between the START and END markers, without the licence, producer credits,
    transcriber's notes and [Illustration] tags (and `_italic_` marks when `italics`)."""
    log: list[Removal] = []
    start = _START.search(text)
    if start:
        log.append(
            removal("gutenberg_header", "header up to the START marker", [text[: start.end()]])
        )
        text = text[start.end() :]
    end = _END.search(text)
    if end:
        why = "END marker and the Project Gutenberg licence after it"
        log.append(removal("gutenberg_licence", why, [text[end.start() :]]))
        text = text[: end.start()]
    if not start and not end:
        why = "no START/END markers found: only licence paragraphs caught below are removed"
        log.append(removal("gutenberg_markers_missing", why, []))
    parts = re.split(r"(\n[ \t]*\n)", text)  # paragraphs at even indices, blank lines between
    credits, mentions = [], []
    licence_words = bool(_LICENCE_WORDS.search(text))  # else only the edges need looking at
    for i in range(0, len(parts), 2):
        if not licence_words and 30 <= i <= len(parts) - 31:
            continue
        para = parts[i].strip()
        near_edge = i < 30 or i > len(parts) - 31  # the first or last 15 paragraphs
        if i < 30 and _is_credit(para):
            credits.append(parts[i])
            parts[i] = ""
        elif _LICENCE_WORDS.search(para) or (near_edge and _PG_MENTION.search(para)):
            mentions.append(parts[i])
            parts[i] = ""
    text = "".join(parts)
    if credits:
        log.append(
            removal("producer_credits", "modern 'Produced by' / transcription credits", credits)
        )
    if mentions:
        why = "licence paragraphs, or paragraphs naming Project Gutenberg near the start or end"
        log.append(removal("gutenberg_mentions", why, mentions))
    text = _sub_logged(_TRANSCRIBER, text, log, "transcriber_notes", "modern transcriber's notes")
    text = _sub_logged(_ILLUSTRATION, text, log, "illustration_tags", "[Illustration] placeholders")
    if italics:
        found = _ITALIC.findall(text)
        if found:
            text = _ITALIC.sub(r"\1", text)
            why = "underscores marking italics (the words are kept)"
            log.append({"step": "italic_marks", "why": why, "count": len(found), "chars": 2 * len(found),
                        "examples": found[:3]})  # fmt: skip
    return text, log


def _sub_logged(pattern: re.Pattern, text: str, log: list[Removal], step: str, why: str) -> str:
    found = [m.group(0) for m in pattern.finditer(text)]
    if found:
        log.append(removal(step, why, found))
        text = pattern.sub("", text)
    return text


# ---- archive.org DjVu OCR text ---------------------------------------------------------------

_PAGE_NO = re.compile(r"^[ \t]*[\[(\-–—]?[ \t]*(\d{1,4})[ \t]*[\])\-–—.]?[ \t]*$")
_ROMAN = re.compile(r"^[ \t]*[\[(]?[ \t]*[ivxlcdm]{1,7}[ \t]*[\]).]?[ \t]*$", re.IGNORECASE)
_NUMBERED_HEAD = re.compile(r"^[ \t]*(?:\d{1,4}[ \t]+(\S.*?)|(\S.*?)[ \t.,]+\d{1,4})[ \t]*$")
_HEADING_WORDS = re.compile(
    r"^\W*(chapter|chap|book|part|section|sect|canto|act|scene|letter|vol|volume|no|number|psalm|art)\b",
    re.I,
)
MIN_PAGE_LINES = 12  # lines of the shortest page a running head without page breaks tops
_PAGE_BREAK = "\x00"  # stands where furniture was removed, so a split paragraph can be re-joined


_LETTERS = re.compile(r"[^\W\d_]+")


def _key(line: str) -> str:
    return "".join(_LETTERS.findall(line.lower()))


def strip_page_furniture(text: str) -> tuple[str, list[Removal]]:
    """Remove page numbers and running heads from OCR text.

    With form feeds (page breaks) only the first and last lines of each page are candidates:
    a bare number (arabic or roman) is a page number; a short line whose letters repeat at the
    edge of three or more pages is a running head. Without form feeds, a bare arabic number with
    a blank line beside it is a page number, and a short line that carries a page number
    ('12 A SURVEY OF LONDON') is a running head when its words recur three or more times.
    Chapter, act and scene headings are never taken for running heads.
    """
    paged = "\f" in text
    lines = text.replace("\f", "\n\f\n").split("\n")
    numbers, keyed = _numbers_and_head_candidates(lines, paged)
    heads = _recurring_heads(keyed, paged)
    if not paged:  # the same head printed without its number, standing alone
        heads |= _unnumbered_heads(lines, heads)
    log = _furniture_log(lines, numbers, heads)
    out = _rejoin(lines, numbers | heads)
    breaks = len(text) - len(out) - sum(r["chars"] for r in log)
    if breaks > 0:
        why = "page breaks (form feeds) and the line breaks around the removed lines"
        log.append({"step": "page_breaks", "why": why, "count": text.count("\f"), "chars": breaks,
                    "examples": []})  # fmt: skip
    return out, log


def _numbers_and_head_candidates(
    lines: list[str], paged: bool
) -> tuple[set[int], dict[str, list[int]]]:
    """The page-number lines, and the lines that may be running heads grouped by their letters
    (with page breaks only the lines at page edges are looked at)."""
    candidates = _edge_lines(lines) if paged else range(len(lines))
    numbers: set[int] = set()
    keyed: dict[str, list[int]] = {}
    for i in candidates:
        line = lines[i]
        if _PAGE_NO.match(line) or (paged and _ROMAN.match(line)):
            if paged or _blank(lines, i - 1) or _blank(lines, i + 1):
                numbers.add(i)
            continue
        key = _head_key(lines, i, paged)
        if len(key) >= 4:
            keyed.setdefault(key, []).append(i)
    return numbers, keyed


def _head_key(lines: list[str], i: int, paged: bool) -> str:
    """The letters of line `i` when it may be a running head, else ''."""
    line = lines[i]
    if len(line.strip()) > 70 or len(line.split()) > 10 or _HEADING_WORDS.match(line):
        return ""
    numbered = _NUMBERED_HEAD.match(line)
    if not paged and numbered and not (_blank(lines, i - 1) or _blank(lines, i + 1)):
        return ""  # a running head stands apart from the text
    if paged or numbered:
        return _key((numbered.group(1) or numbered.group(2)) if numbered else line)
    return ""


def _recurring_heads(keyed: dict[str, list[int]], paged: bool) -> set[int]:
    """The candidate lines whose letters recur at three or more pages."""
    heads: set[int] = set()
    for where in keyed.values():
        gaps = [b - a for a, b in zip(where, where[1:], strict=False)]
        # without page breaks, a head recurs a page or more apart; "1 Shew", "2 Shew", "3 Shew"
        # a line or two apart are a play's speakers (the witches' show in Macbeth)
        if len(where) >= 3 and (paged or statistics.median(gaps) >= MIN_PAGE_LINES):
            heads.update(where)
    return heads


def _unnumbered_heads(lines: list[str], heads: set[int]) -> set[int]:
    """Lines standing alone with the letters of a running head found with its page number."""
    repeated = {_key(lines[i]) for i in heads}
    found: set[int] = set()
    for i, line in enumerate(lines):
        alone = line.strip() and _blank(lines, i - 1) and _blank(lines, i + 1)
        if alone and i not in heads and len(line) <= 80 and _key(line) in repeated:
            found.add(i)
    return found


def _furniture_log(lines: list[str], numbers: set[int], heads: set[int]) -> list[Removal]:
    """The log entries for the page numbers and the running heads removed."""
    log: list[Removal] = []
    if numbers:
        log.append(removal("page_numbers", "OCR page numbers", [lines[i] for i in sorted(numbers)]))
    if heads:
        log.append(
            removal(
                "running_heads",
                "OCR running heads repeated at page edges",
                [lines[i] for i in sorted(heads)],
            )
        )
    return log


def _blank(lines: list[str], i: int) -> bool:
    return i < 0 or i >= len(lines) or not lines[i].strip() or lines[i] == "\f"


def _edge_lines(lines: list[str]) -> list[int]:
    """Indices of the first and last lines of each page (two when the outer one is a number)."""
    edges: list[int] = []
    page: list[int] = []
    for i, line in enumerate([*lines, "\f"]):
        if line != "\f":
            page.append(i)
            continue
        filled = [j for j in page if lines[j].strip()]
        for side in (filled[:2], filled[::-1][:2]):
            if side:
                edges.append(side[0])
                if len(side) > 1 and (
                    _PAGE_NO.match(lines[side[0]]) or _ROMAN.match(lines[side[0]])
                ):
                    edges.append(side[1])
        page = []
    return sorted(set(edges))


def _rejoin(lines: list[str], removed: set[int]) -> str:
    """Drop the removed lines and page breaks. Where they stood between two halves of one
    paragraph (no sentence end before, a lower-case word after) close the gap; elsewhere
    leave one paragraph break."""
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        if i not in removed and lines[i] != "\f":
            out.append(lines[i])
            i += 1
            continue
        j = i
        while j < n and (j in removed or lines[j] == "\f" or not lines[j].strip()):
            j += 1
        while out and not out[-1].strip():
            out.pop()
        before, after = (out[-1] if out else ""), (lines[j] if j < n else "")
        same_paragraph = bool(
            before and _OPEN_END.search(before) and re.match(r"[ \t]*[a-z]", after)
        )
        if out and j < n and not same_paragraph:
            out.append("")
        i = j
    return "\n".join(out)


_OPEN_END = re.compile(r"[^.!?:;\"”’)\]\s][ \t]*$")


# ---- Old Bailey Proceedings TEI XML ----------------------------------------------------------


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _paragraphs(elem: ET.Element) -> list[str]:
    paras = [p for p in elem.iter() if _local(p.tag) == "p"]
    blocks = paras or [elem]
    return [t for t in (" ".join("".join(b.itertext()).split()) for b in blocks) if t]


_OTHER_SECTIONS = {
    "step": "tei_other_sections", "why": "front matter, punishment summaries, advertisements",
    "count": 0, "chars": 0, "examples": [],
}  # fmt: skip


def read_old_bailey(source: Path | IO[bytes], name: str = "") -> Iterator[dict[str, Any]]:
    """Old Bailey Proceedings TEI XML (a path or a binary file): one document per sessions
    paper, made of its trial accounts (div1 type="trialAccount"), one paragraph per <p>. Front
    matter, punishment summaries and advertisements are left out. Streamed with iterparse.
    `name` stands in for a session id that the trial ids do not give."""
    sessions: dict[str, list[str]] = {}
    order: list[str] = []
    skipped = 0
    try:
        for _event, elem in ET.iterparse(source, events=("end",)):
            if _local(elem.tag) != "div1":
                continue
            if elem.get("type") == "trialAccount":
                trial_id = (
                    elem.get("id") or elem.get("{http://www.w3.org/XML/1998/namespace}id") or ""
                )
                session = re.sub(r"^[a-z]", "", trial_id).split("-")[0] or name or "tei"
                if session not in sessions:
                    sessions[session] = []
                    order.append(session)
                sessions[session].append("\n\n".join(_paragraphs(elem)))
            else:
                skipped += 1
            elem.clear()
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from None
    for session in order:
        year = int(session[:4]) if session[:4].isdigit() else None
        date = f"{session[:4]}-{session[4:6]}-{session[6:8]}" if len(session) >= 8 else session
        yield {
            "id": f"oldbailey-{session}",
            "title": f"Old Bailey Proceedings, sessions of {date}",
            "year": year,
            "text": "\n\n".join(sessions[session]),
            "removed": [_OTHER_SECTIONS | {"count": skipped}] if skipped else [],
        }
