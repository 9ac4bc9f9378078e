"""Cleaning one document: format-specific stripping, Unicode and whitespace normalisation,
OCR de-hyphenation, the English-language filter and the quality score.

Every step that removes or changes text appends an entry (step, why, count, chars, examples)
to the document's log, so the clean log can say what left each document and why.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hellolondon.config import expected
from hellolondon.corpus.formats import Removal, removal, strip_gutenberg, strip_page_furniture
from hellolondon.errors import UserError


@dataclass
class CleanConfig:
    long_s: bool = True  # replace the long s (ſ) with s, as modern editions print it
    italics: bool = True  # drop Project Gutenberg's _underscore_ italics marks (words kept)
    dehyphenate: str = "ocr"  # join words split at line ends: ocr (DjVu text only) | all | off
    min_chars: int = 2000  # shorter documents (after cleaning) are rejected
    min_english: float = 0.25  # least share of words that are common English function words
    min_quality: float = 0.5  # least quality score (0..1, see quality())
    year_min: int = 1500  # documents dated before this are rejected (undated ones are kept)
    year_max: int = 1850  # documents dated after this are rejected
    dedup: bool = True  # remove exact and near duplicates across documents
    near_dup: float = 0.8  # estimated Jaccard similarity of word shingles that makes a duplicate
    shingle: int = 5  # words per shingle
    num_perm: int = 128  # MinHash permutations (signature length)
    bands: int = 16  # LSH bands; num_perm / bands rows each

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise UserError(f"clean.{message}")

        check(self.dehyphenate in ("ocr", "all", "off"), "dehyphenate must be ocr, all or off")
        check(self.min_chars >= 0, "min_chars must be >= 0")
        for name in ("min_english", "min_quality", "near_dup"):
            check(0.0 <= getattr(self, name) <= 1.0, f"{name} must be between 0 and 1")
        check(self.year_min <= self.year_max, "year_min must not be after year_max")
        check(self.shingle >= 1, "shingle must be >= 1")
        check(self.num_perm >= 1 and self.bands >= 1, "num_perm and bands must be >= 1")
        check(self.num_perm % self.bands == 0, "num_perm must be a multiple of bands")


def load_clean_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> CleanConfig:
    """Defaults, then a TOML file (a [clean] table or top-level keys), then `key=value` items."""
    values: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(CleanConfig)}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"clean config {path} not found")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"clean config {path} is not UTF-8 text; give a TOML file") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"clean config {path} is not valid TOML: {exc}") from None
        table = data.get("clean", data)
        if not isinstance(table, dict):
            raise UserError(f"clean config {path}: [clean] must be a table of settings")
        for key, value in table.items():
            if key in fields:
                value = _typed(value, getattr(CleanConfig(), key), key, path)
            values[key] = value
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        key = key.strip().removeprefix("clean.")
        if not sep or key not in fields:
            raise UserError(
                f"--set {item!r}: expected key=value with key one of {', '.join(fields)}"
            )
        values[key] = _parse(raw.strip(), getattr(CleanConfig(), key), key)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown clean setting {unknown[0]!r}; settings: {', '.join(fields)}")
    return CleanConfig(**values)


def _typed(value: Any, current: Any, key: str, path: Path) -> Any:
    """A value from the settings file, of the setting's type (TOML's own types: no strings
    read as numbers or switches, whole numbers only where a count is meant)."""
    kind = type(current)
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise UserError(
            f"clean config {path}: clean.{key} expected {expected(current)}, got {value!r}"
        )
    return value


def _parse(raw: str, current: Any, key: str) -> Any:
    try:
        if isinstance(current, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes", "on")
        return type(current)(raw)
    except ValueError:
        raise UserError(f"clean.{key}: expected {expected(current)}, got {raw!r}") from None


# ---- text normalisation ---------------------------------------------------------------------

_SPACES = dict.fromkeys([0x00A0, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000], " ")
_DROP = dict.fromkeys([0x00AD, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF])
_CONTROL = dict.fromkeys([c for c in range(32) if c not in (9, 10, 12)] + [127])
_TRANSLATE = str.maketrans({**_SPACES, **_DROP, **_CONTROL})


def normalise_unicode(text: str, long_s: bool, log: list[Removal]) -> str:
    """NFC (composed accents, never stripped), odd spaces to plain ones, invisible characters
    and control codes out, and the long s to s when asked."""
    composed = unicodedata.normalize("NFC", text)
    if len(composed) != len(text):
        log.append({"step": "unicode_nfc", "why": "combining accents composed (NFC); accents kept",
                    "count": len(text) - len(composed), "chars": len(text) - len(composed), "examples": []})  # fmt: skip
    cleaned = composed.translate(_TRANSLATE)
    if len(cleaned) != len(composed):
        n = len(composed) - len(cleaned)
        log.append({"step": "invisible_characters", "why": "soft hyphens, zero-width and control characters",
                    "count": n, "chars": n, "examples": []})  # fmt: skip
    if long_s and ("\ufb05" in cleaned or "\u1e9b" in cleaned):  # ﬅ (long s + t), ẛ
        cleaned = cleaned.replace("\ufb05", "ſt").replace("\u1e9b", "ſ\u0307")
    if long_s and "ſ" in cleaned:
        n = cleaned.count("ſ")
        log.append(
            {
                "step": "long_s",
                "why": "long s (ſ) written as s (text kept)",
                "count": n,
                "chars": 0,
                "examples": [],
            }
        )
        cleaned = cleaned.replace("ſ", "s")
        if "\u0307" in cleaned:
            cleaned = unicodedata.normalize("NFC", cleaned)  # s + combining dot above: ṡ
    return cleaned


_HYPHEN_BREAK = re.compile(r"\b([^\W\d_]+)-[ \t]*\n[ \t]*([a-z][^\W\d_]*)(\S*)([ \t]+|(?=\n)|$)")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")


def dehyphenate(text: str, log: list[Removal]) -> str:
    """Join a word that OCR text breaks across lines with a hyphen ('Lon-' / 'don').

    A broken word is joined without the hyphen when the joined form occurs elsewhere in the
    document, kept with the hyphen when the hyphenated form does ('well-known'), and otherwise
    joined (most line-end hyphens in print are syllable breaks). The rest of the second line
    stays on its own line, so line structure and paragraph breaks do not move.
    """
    if not _HYPHEN_BREAK.search(text):
        return text
    seen = set(_WORD.findall(text.lower()))
    joined: list[str] = []
    kept: list[str] = []
    removed = {"joined": 0, "kept": 0}  # characters: the hyphen, and the line break and spaces

    def fix(m: re.Match) -> str:
        left, right, rest, space = m.groups()
        if (f"{left}-{right}".lower() in seen) and (left + right).lower() not in seen:
            kept.append(f"{left}-{right}")
            word, kind = f"{left}-{right}", "kept"
        else:
            joined.append(left + right)
            word, kind = left + right, "joined"
        new = f"{word}{rest}\n" if space else f"{word}{rest}"
        removed[kind] += len(m.group(0)) - len(new)
        return new

    text = _HYPHEN_BREAK.sub(fix, text)
    if joined:
        log.append({"step": "hyphenation_joined", "why": "words split across lines by the printer (hyphen removed)",
                    "count": len(joined), "chars": removed["joined"], "examples": joined[:3]})  # fmt: skip
    if kept:
        log.append({"step": "hyphenation_kept", "why": "compounds split at a line end, rejoined with their hyphen",
                    "count": len(kept), "chars": removed["kept"], "examples": kept[:3]})  # fmt: skip
    return text


def normalise_whitespace(text: str, log: list[Removal]) -> str:
    """Spaces and tabs collapsed, lines trimmed, at most one blank line between paragraphs.
    Line breaks inside paragraphs (verse, letters) are kept."""
    before = len(text)
    text = re.sub(r"[ \t]{2,}|\t", " ", text.replace("\f", "\n"))
    text = "\n".join(line.strip(" ") for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if before != len(text):
        log.append(
            removal(
                "whitespace", "extra spaces, tabs and blank lines", [" " * (before - len(text))]
            )
        )
    return text


def clean_text(text: str, fmt: str, config: CleanConfig) -> tuple[str, list[Removal]]:
    """Run the cleaning steps that fit the format (gutenberg | djvu | tei | text)."""
    log: list[Removal] = []
    crlf = text.count("\r\n")
    if crlf:
        why = "Windows line ends (\\r\\n) written as \\n"
        log.append(
            {"step": "line_endings", "why": why, "count": crlf, "chars": crlf, "examples": []}
        )
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if fmt == "gutenberg":
        text, removed = strip_gutenberg(text, italics=config.italics)
        log += removed
    text = normalise_unicode(text, config.long_s, log)
    if fmt == "djvu":
        text, removed = strip_page_furniture(text)
        log += removed
    if config.dehyphenate == "all" or (config.dehyphenate == "ocr" and fmt == "djvu"):
        text = dehyphenate(text, log)
    return normalise_whitespace(text, log), log


# ---- language and quality -------------------------------------------------------------------

# Common English function words, with the early modern forms (thou, hath, doth, unto) that a
# 1500-1850 text uses. Other languages of the period (Latin, French) score far below 0.25.
STOPWORDS = frozenset(
    """the of and to a in that is was he for it with as his on be at by i this had not are but
    from or have an they which one you were her all she there would their we him been has when
    who will more no if out so said what up its about into than them can only other some could
    these may then do first any my now such like our over me most made after also did many
    before must through where much your well should because each those how too very make still
    own see men here never same another know while might us upon unto thou thee thy thine hath
    doth ye shall whom art hast dost nor yet o thus whilst amongst hither thither wherefore
    therefore whereof thereof herein being both every again against itself""".split()  # noqa: SIM905
)
TOKEN = re.compile(r"\w+")  # the words that the language filter and the fingerprints count
_LETTER_RUNS = re.compile(r"[^\W\d_]+")
_ODD = re.compile(r"[^\s\w'’\-.,;:!?\"“”‘()\[\]]|\d+|_")  # symbols and numbers: rare in prose
_LINE_SAMPLE = 4000


def _clamp(x: float) -> float:
    return max(0.0, min(1.0, x))


def measure(text: str, counts: Counter | None = None) -> dict[str, float]:
    """The numbers behind the language filter and the quality score.

    english:  share of words (TOKEN, lower-cased) that are common English function words
    letters:  share of non-space characters that are letters
    wordlike: 1 - (symbols and numbers per space-separated token), at least 0
    lines:    share of non-empty lines that are at least half letters (on up to 4000 lines
              spread evenly through the text)
    quality:  the score made of these (see quality())
    `counts` are the word counts when the caller has them already.
    """
    counts = counts if counts is not None else Counter(TOKEN.findall(text.lower()))
    total = sum(counts.values())
    english = sum(counts[w] for w in STOPWORDS if w in counts) / (total or 1)
    nonspace = (len(text) - sum(text.count(c) for c in " \n\t\r\f\v")) or 1
    # letters from the word counts: a pass over the distinct words, not the whole text
    letters = (
        sum(n * (len(w) if w.isalpha() else _letters(w)) for w, n in counts.items()) / nonspace
    )
    tokens = len(text.split())
    wordlike = max(0.0, 1.0 - len(_ODD.findall(text)) / (tokens or 1))
    lines = [ln for ln in text.split("\n") if ln.strip()]
    sample = lines[:: max(1, len(lines) // _LINE_SAMPLE)]
    good = sum(1 for ln in sample if 2 * _letters(ln) >= len(ln) - ln.count(" "))
    m = {
        "chars": len(text), "words": tokens, "english": round(english, 4),
        "letters": round(letters, 4), "wordlike": round(wordlike, 4),
        "lines": round(good / (len(sample) or 1), 4),
    }  # fmt: skip
    m["quality"] = quality(m)
    return m


def _letters(text: str) -> int:
    return len(text) - len(_LETTER_RUNS.sub("", text))


def quality(m: dict[str, float]) -> float:
    """A score in [0, 1]: 0.3 letters + 0.3 wordlike + 0.2 english + 0.2 lines, each part
    scaled so clean printed English scores 1 (letters >= 0.90, wordlike >= 0.90, english >= 0.40,
    lines >= 0.95) and falling linearly to 0 (at 0.70, 0.60, 0 and 0.60). OCR garbage, tables of
    figures and indexes score low."""
    parts = (
        0.3 * _clamp((m["letters"] - 0.70) / 0.20),
        0.3 * _clamp((m["wordlike"] - 0.60) / 0.30),
        0.2 * _clamp(m["english"] / 0.40),
        0.2 * _clamp((m["lines"] - 0.60) / 0.35),
    )
    return round(sum(parts), 4)


def judge(year: int | None, m: dict[str, float], config: CleanConfig) -> tuple[str, str] | None:
    """(rule, reason) when a cleaned document is rejected; None when it is kept."""
    if year is not None and not config.year_min <= year <= config.year_max:
        return "period", f"dated {year}, outside {config.year_min}-{config.year_max}"
    if m["chars"] < config.min_chars:
        return (
            "min_chars",
            f"too short after cleaning ({m['chars']} characters < {config.min_chars})",
        )
    if m["english"] < config.min_english:
        return (
            "min_english",
            f"not English (function-word share {m['english']:.2f} < {config.min_english})",
        )
    if m["quality"] < config.min_quality:
        return "min_quality", f"low quality (score {m['quality']:.2f} < {config.min_quality})"
    return None
