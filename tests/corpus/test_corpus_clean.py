"""Per-document cleaning: normalisation, de-hyphenation, the language filter and quality score."""

from __future__ import annotations

import re
import unicodedata

import pytest
from corpus_server import FIXTURES

from hellolondon.corpus.clean import (
    CleanConfig,
    clean_text,
    dehyphenate,
    judge,
    load_clean_config,
    measure,
    normalise_unicode,
    normalise_whitespace,
)
from hellolondon.errors import UserError

ENGLISH = (
    "The Lord Mayor rode to Westminster with the aldermen in their scarlet, and the companies "
    "followed him in their barges upon the river, with music and banners, as the custom is. "
) * 30
LATIN = (
    "Gallia est omnis divisa in partes tres, quarum unam incolunt Belgae, aliam Aquitani, tertiam "
    "qui ipsorum lingua Celtae, nostra Galli appellantur. Hi omnes lingua, institutis, legibus "
    "inter se differunt. "
) * 30
GARBAGE = ("t1 ,;' .a .. ~~ 3i 1l| ;; ' ,, .1 I' -- .. ,' 4 , ' 1 i . " * 3 + "\n") * 60


def test_nfc_composes_and_keeps_accents():
    log: list = []
    out = normalise_unicode(
        unicodedata.normalize("NFD", "the café and the naïve youth"), False, log
    )
    assert out == "the café and the naïve youth" and unicodedata.is_normalized("NFC", out)
    assert log[0]["step"] == "unicode_nfc"


def test_long_s_is_an_option():
    assert normalise_unicode("Myſelf", True, []) == "Myself"
    assert normalise_unicode("Myſelf", False, []) == "Myſelf"
    log: list = []  # the long s inside a ligature or with a dot goes too
    assert normalise_unicode("ﬅreet, Cuſtom, ẛ", True, log) == "street, Custom, ṡ"
    assert log[-1]["count"] == 3
    assert normalise_unicode("ﬅreet ẛ", False, []) == "ﬅreet ẛ"


def test_invisible_characters_and_odd_spaces():
    log: list = []
    out = normalise_unicode("a\u00adb\u200bc\u00a0d\x07e", False, log)
    assert out == "abc de" and log[0]["count"] == 3


def test_dehyphenate_joins_breaks_and_keeps_compounds():
    text = (
        "the well-known street of Lon-\ndon and the com-\npanies, and a well-\nknown gate of London"
    )
    log: list = []
    out = dehyphenate(text, log)
    assert (
        out
        == "the well-known street of London\nand the companies,\nand a well-known\ngate of London"
    )
    found = {r["step"]: r for r in log}
    assert found["hyphenation_joined"]["examples"] == ["London", "companies"]
    assert found["hyphenation_kept"]["examples"] == ["well-known"]


@pytest.mark.parametrize(
    "text",
    [
        "a word--\nand a dash",  # an old-style dash at a line end
        "a word—\nand an em dash",
        "numbers 12-\n14 stay",
        "a name Smith-\nJones stays",  # a capital after the break: not a split word
        "a mid-line hyphen in well-known words",
    ],
)
def test_dehyphenate_leaves_good_text_alone(text):
    assert dehyphenate(text, []) == text


def test_whitespace_keeps_paragraphs_and_verse_lines():
    text = "  Of Man's first   disobedience,\t and the fruit\n  Of that forbidden tree  \n\n\n\nA new  paragraph. \n"
    out = normalise_whitespace(text, [])
    assert (
        out
        == "Of Man's first disobedience, and the fruit\nOf that forbidden tree\n\nA new paragraph."
    )


def test_gutenberg_lines_are_not_dehyphenated_by_default():
    text = "*** START OF THE PROJECT GUTENBERG EBOOK X ***\nthe fortune-\ntellers of the town\n*** END OF THE PROJECT GUTENBERG EBOOK X ***"
    out, _ = clean_text(text, "gutenberg", CleanConfig())
    assert "fortune-\ntellers" in out
    out, _ = clean_text(text, "gutenberg", CleanConfig(dehyphenate="all"))
    assert "fortunetellers" in out


def test_clean_text_on_gutenberg_fixture():
    raw = (FIXTURES / "pg376.txt").read_bytes().decode("utf-8")
    out, log = clean_text(raw, "gutenberg", CleanConfig())
    assert "\r" not in out and "Gutenberg" not in out and "café" in out and "Myself" in out
    assert "\n\n" in out and "\n\n\n" not in out
    assert out.startswith("A JOURNAL OF THE PLAGUE YEAR\n\nIt was about the beginning of September")
    assert {"gutenberg_header", "gutenberg_licence", "long_s", "unicode_nfc", "whitespace"} <= {
        r["step"] for r in log
    }


def test_measure_and_judge_english_latin_garbage():
    config = CleanConfig(min_chars=100)
    english, latin, garbage = measure(ENGLISH), measure(LATIN), measure(GARBAGE)
    assert english["english"] > 0.35 and english["quality"] > 0.9
    assert latin["english"] < 0.1
    assert garbage["quality"] < 0.5
    assert judge(1666, english, config) is None
    assert judge(1666, latin, config)[0] == "min_english"
    assert judge(1666, garbage, config)[0] in ("min_quality", "min_english")
    assert judge(1900, english, config) == ("period", "dated 1900, outside 1500-1850")
    assert judge(None, english, config) is None  # undated documents are kept
    assert judge(1666, measure("Too short."), config)[0] == "min_chars"


def test_quality_threshold_comes_from_config():
    m = measure(ENGLISH)
    assert judge(1700, m, CleanConfig(min_chars=0, min_quality=1.0)) is None or m["quality"] < 1.0
    assert judge(1700, {**m, "quality": 0.4}, CleanConfig(min_chars=0))[0] == "min_quality"


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "clean.toml"
    path.write_text("[clean]\nmin_quality = 0.7\nlong_s = false\n")
    config = load_clean_config(path, ["min_chars=50", "clean.dehyphenate=all"])
    assert (config.min_quality, config.long_s, config.min_chars, config.dehyphenate) == (
        0.7,
        False,
        50,
        "all",
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["min_qualty=0.5"], "expected key=value"),
        (["min_quality=high"], "expected a number"),
        (["min_quality=2"], "between 0 and 1"),
        (["num_perm=100"], "multiple of bands"),
        (["long_s=maybe"], "expected true or false"),
    ],
)
def test_bad_config_is_a_user_error(overrides, message):
    with pytest.raises(UserError, match=message):
        load_clean_config(None, overrides)


@pytest.mark.parametrize(
    "line, message",
    [
        ('long_s = "no"', "clean.long_s expected true or false, got 'no'"),  # read as true before
        ('min_chars = "abc"', "clean.min_chars expected a whole number, got 'abc'"),
        ("num_perm = 128.0", "clean.num_perm expected a whole number, got 128.0"),
        ("min_chars = true", "clean.min_chars expected a whole number, got True"),
    ],
)
def test_a_value_of_the_wrong_type_in_the_config_file_is_named(tmp_path, line, message):
    path = tmp_path / "clean.toml"
    path.write_text(f"[clean]\n{line}\n")
    with pytest.raises(UserError, match=re.escape(message)):
        load_clean_config(path)


def test_a_whole_number_where_a_share_is_meant_is_taken(tmp_path):
    path = tmp_path / "clean.toml"
    path.write_text("[clean]\nnear_dup = 1\n")
    assert load_clean_config(path).near_dup == 1.0


def test_unknown_key_in_config_file(tmp_path):
    path = tmp_path / "clean.toml"
    path.write_text("[clean]\nmin_qualty = 0.7\n")
    with pytest.raises(UserError, match="unknown clean setting 'min_qualty'"):
        load_clean_config(path)


@pytest.mark.parametrize(
    "name, fmt",
    [("pg376.txt", "gutenberg"), ("survey_djvu.txt", "djvu"), ("survey_unpaged_djvu.txt", "djvu")],
)
def test_the_log_accounts_for_every_character_removed(name, fmt):
    from hellolondon.corpus.formats import decode

    text = decode((FIXTURES / name).read_bytes())[0]
    text = text.replace("\n", "\r\n") if "\r\n" not in text else text
    cleaned, log = clean_text(text, fmt, CleanConfig())
    assert "line_endings" in {r["step"] for r in log}
    assert len(text) - sum(r["chars"] for r in log) == len(cleaned)
