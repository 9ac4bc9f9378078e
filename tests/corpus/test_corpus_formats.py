"""Format readers on hand-written fixtures: Gutenberg text, DjVu OCR text, Old Bailey TEI XML."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_server import FIXTURES

from hellolondon.corpus.formats import (
    decode,
    detect_format,
    gutenberg_header,
    looks_like_html,
    read_old_bailey,
    strip_gutenberg,
    strip_page_furniture,
)


def pg376() -> str:
    return decode((FIXTURES / "pg376.txt").read_bytes())[0].replace("\r\n", "\n")


def steps(log: list[dict]) -> dict[str, dict]:
    return {r["step"]: r for r in log}


def test_gutenberg_header_fields_with_wrapped_title():
    header = gutenberg_header(pg376())
    assert (
        header["title"]
        == "A Journal of the Plague Year Written by a Citizen Who Continued All the While in London"
    )
    assert header["author"] == "Daniel Defoe" and header["language"] == "English"


def test_illustration_tags_go_on_their_own_line_and_within_one():
    from hellolondon.corpus.formats import _ILLUSTRATION

    text = "Before.\n[Illustration: The Tower]\nitalic words here [Illustration] and on.\n"
    assert _ILLUSTRATION.sub("", text) == "Before.\n\nitalic words here and on.\n"


def test_old_style_header_falls_back_to_the_ebook_of_line():
    text, encoding = decode((FIXTURES / "pg_oldstyle.txt").read_bytes())
    assert encoding == "cp1252"  # not UTF-8: decoded without failing
    assert "£5 a yeare" in text
    assert gutenberg_header(text) == {"title": "The Scholemaster", "author": "Roger Ascham"}


def test_strip_gutenberg_removes_header_licence_credits_and_tags():
    body, log = strip_gutenberg(pg376())
    for gone in ("Project Gutenberg", "PROJECT GUTENBERG", "Produced by", "Transcriber", "[Illustration",
                 "FULL LICENSE", "Release date", "Gutenberg-tm"):  # fmt: skip
        assert gone not in body
    assert body.strip().startswith("A JOURNAL OF THE PLAGUE YEAR")
    assert body.rstrip().endswith("hastening out of the town with their goods and their families.")
    assert "Note well, said my brother" in body  # _italics_ marks gone, the words kept
    found = steps(log)
    assert {"gutenberg_header", "gutenberg_licence", "producer_credits", "transcriber_notes",
            "illustration_tags", "italic_marks"} <= set(found)  # fmt: skip
    assert (
        "START marker" in found["gutenberg_header"]["why"]
        and found["gutenberg_licence"]["chars"] > 300
    )


def test_strip_gutenberg_old_small_print_layout():
    text = decode((FIXTURES / "pg_oldstyle.txt").read_bytes())[0]
    body, _ = strip_gutenberg(text)
    assert (
        "SMALL PRINT" not in body and "Volunteers" not in body and "End of the Project" not in body
    )
    assert "feare of beating" in body and body.strip().startswith("THE SCHOLEMASTER")


def test_text_without_markers_keeps_body_but_drops_licence_paragraphs():
    text = "Chapter I.\n\nThe body of the book.\n\nThis file is under the Project Gutenberg-tm License.\n"
    body, log = strip_gutenberg(text)
    assert "The body of the book." in body and "License" not in body
    assert "gutenberg_markers_missing" in steps(log)


def test_italics_left_alone_when_asked_and_in_identifiers():
    body, _ = strip_gutenberg("a snake_case_name and _this_ here", italics=False)
    assert body == "a snake_case_name and _this_ here"
    body, _ = strip_gutenberg("a snake_case_name and _this_ here")
    assert body == "a snake_case_name and this here"


@pytest.mark.parametrize("name", ["survey_djvu.txt", "survey_unpaged_djvu.txt"])
def test_page_numbers_and_running_heads_removed(name):
    text = (FIXTURES / name).read_text(encoding="utf-8")
    out, log = strip_page_furniture(text)
    assert "SURVEY OF LONDON." not in out and "PORTSOKEN WARD." not in out
    assert "\n8\n" not in f"\n{out}\n"
    found = steps(log)
    assert found["running_heads"]["count"] >= 6 and found["page_numbers"]["count"] >= 1
    # text that only looks like furniture stays: a repeated line inside a page, headings, years
    assert out.count("Amen.") == 3
    assert "CHAPTER II." in out and "OF THE WARD OF ALDGATE." in out and "in the year 1215" in out
    # a paragraph broken by a page turn is joined again, without a blank line
    assert "each man according to\nhis substance" in out


def test_standalone_number_inside_text_is_kept_without_page_breaks():
    text = "The sum was\n12\nshillings and no more, as the clerk wrote it down in the book."
    out, log = strip_page_furniture(text)
    assert out == text and log == []


def test_numbered_speakers_of_a_play_are_not_running_heads():
    # the Folio's Macbeth (IV.i) as OCR gives it, without page breaks: numbered speakers a
    # line or two apart look like '12 A SURVEY OF LONDON', but no page is that short
    text = (
        "Macb. What is this, that rises like the issue of a King?\n\n"
        "1 Shew.\n\nAnd hath vpon his Baby-brow, the round\nAnd top of Soueraignty?\n\n"
        "2 Shew.\n\nListen, but speake not too't.\n\n"
        "3 Shew.\n\nBe Lyon metled, proud, and take no care\n"
    )
    out, log = strip_page_furniture(text)
    assert out == text and log == []


def test_old_bailey_trials_become_one_session_document():
    docs = list(read_old_bailey(FIXTURES / "oldbailey_17800112.xml"))
    assert len(docs) == 1
    doc = docs[0]
    assert (
        doc["id"] == "oldbailey-17800112" and doc["year"] == 1780 and "1780-01-12" in doc["title"]
    )
    assert doc["text"].startswith(
        "1. JOHN HARRIS was indicted for stealing a silver watch, value forty shillings"
    )
    assert (
        "Fleet Street; the\nprisoner" not in doc["text"]
        and "in Fleet Street; the prisoner came in" in doc["text"]
    )
    assert "MARY JONES" in doc["text"] and "ACQUITTED" in doc["text"]
    assert (
        "KING'S COMMISSION" not in doc["text"] and "proceeded to give judgment" not in doc["text"]
    )
    assert doc["text"].count("\n\n") == 4  # five paragraphs
    assert doc["removed"][0]["count"] == 2  # front matter and punishment summary


def test_malformed_tei_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<TEI.2><text><div1 type='trialAccount'><p>unclosed</text>")
    with pytest.raises(ValueError, match="not well-formed"):
        list(read_old_bailey(bad))


def test_detect_format_and_html_sniffing():
    assert detect_format(Path("x.xml"), "<?xml version='1.0'?>") == "tei"
    assert detect_format(Path("book_djvu.txt"), "A SURVEY") == "djvu"
    assert (
        detect_format(Path("pg.txt"), "*** START OF THE PROJECT GUTENBERG EBOOK X ***")
        == "gutenberg"
    )
    assert detect_format(Path("notes.txt"), "Plain words.") == "text"
    assert looks_like_html(b"  <!DOCTYPE html><html><body>x</body></html>")
    assert looks_like_html(b"<HTML><HEAD></HEAD>")
    assert not looks_like_html(b"The Project Gutenberg eBook of <Title>")


def test_unbracketed_transcriber_note_takes_only_its_own_paragraphs():
    book = "CHAPTER I.\n\nThe wall was old [see p. 12] and the gate older.\n\nThe end of it."
    text = (
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\nTranscriber's Notes:\n\n"
        "Spelling of the original kept.\n\n" + book + "\n\nTranscriber's note: one more.\n\n"
        "[Transcriber's Note: a bracketed note\n\nover two paragraphs.]\n\nFINIS."
    )
    body, log = strip_gutenberg(text)
    assert "Transcriber" not in body and "Spelling" not in body and "bracketed" not in body
    assert book in body and "FINIS." in body  # a "]" in the book does not end a note
    assert steps(log)["transcriber_notes"]["count"] == 3


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_a_byte_order_mark(codec):
    text = "The Cuſtoms of London, yᵉ Maior; þe fee of £5."
    data = text.encode(codec) if codec != "utf-16-be" else b"\xfe\xff" + text.encode(codec)
    assert decode(data) == (text, codec.removesuffix("-be"))


def test_utf8_with_a_stray_windows_1252_byte_keeps_its_utf8():
    data = "The Cuſtoms of Londōn, æ, yᵉ Maior; ".encode() + b"the fee of \xa35 \x93a yeare\x94."
    assert decode(data) == (
        "The Cuſtoms of Londōn, æ, yᵉ Maior; the fee of £5 “a yeare”.",
        "utf-8+cp1252",
    )
    assert decode("Café £5 naïve".encode("cp1252")) == ("Café £5 naïve", "cp1252")  # no UTF-8


def test_small_print_in_the_book_is_not_licence_text():
    book = "\n\n".join(f"Paragraph {i} of the history." for i in range(40))
    said = "The bill was writ in small print, which the merchant could not read."
    text = (
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n" + book + "\n\n" + said + "\n\n" + book
        + "\n\n**START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***\n\n" + book
    )  # fmt: skip
    body, log = strip_gutenberg(text)
    assert said in body and "THE SMALL PRINT!" not in body
    assert steps(log)["gutenberg_mentions"]["count"] == 1


def test_a_book_opening_with_transcribed_from_is_kept_and_a_modern_credit_is_not():
    book = "Transcribed from the Originals in the Guildhall, by order of the Court of Aldermen."
    credits = [
        "Transcribed from the 1722 edition by Jane Doe. HTML version by J. Smith.",
        "Prepared by volunteers of Distributed Proofreaders, from page images.",
        "Transcribed from the 1845 edition by David Price, email ccx074@example.org",
    ]
    text = "\n\n".join(
        ["*** START OF THE PROJECT GUTENBERG EBOOK LONDON ***", *credits, book, "The body.",
         "*** END OF THE PROJECT GUTENBERG EBOOK LONDON ***"]
    )  # fmt: skip
    body, log = strip_gutenberg(text)
    assert book in body and "The body." in body
    assert not any(c in body for c in credits)
    assert steps(log)["producer_credits"]["chars"] == sum(len(c) for c in credits)
