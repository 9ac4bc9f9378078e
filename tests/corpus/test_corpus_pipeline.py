"""`clean_corpus` end to end: parallel cleaning, duplicates, the per-document log, the report."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from corpus_server import FIXTURES, gutenberg_book

from hellolondon.corpus.catalog import Source
from hellolondon.corpus.clean import CleanConfig
from hellolondon.corpus.collect import CollectOptions, collect
from hellolondon.corpus.documents import read_documents
from hellolondon.corpus.fetch import FetchConfig, Fetcher
from hellolondon.corpus.pipeline import clean_corpus, items_from_collection, items_from_paths
from hellolondon.corpus.stats import build_report, format_report
from hellolondon.errors import UserError

CONFIG = CleanConfig(min_chars=300)
WORDS = ["the", "of", "and", "to", "a", "in", "that", "was", "he", "for", "it", "with", "as", "his", "on", "be", "at", "by", "city", "river", "street", "house", "merchant", "alderman", "watch", "church", "bridge", "tower", "market", "shop", "ward", "parish", "mayor", "king", "queen"]  # fmt: skip


def prose(seed: int, n: int = 1500) -> str:
    rng = random.Random(seed)
    lines = [" ".join(rng.choices(WORDS, k=12)) + "." for _ in range(n // 12)]
    return "\n".join(lines)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """The fixtures plus an exact and a near copy of one text, a scrap and a Latin text."""
    src = tmp_path / "in"
    shutil.copytree(FIXTURES, src)
    (src / "alpha.txt").write_text(prose(1))
    (src / "alpha_copy.txt").write_text(prose(1).upper().replace("\n", "  \n"))
    near = prose(1).split(" ")
    near[100:104] = ["x", "y", "z", "q"]  # shorter than the original, so the original is kept
    (src / "alpha_near.txt").write_text(" ".join(near))
    (src / "beta.txt").write_text(prose(2))
    (src / "scrap.txt").write_text("A scrap of a page.")
    (src / "latin.txt").write_text(
        "Gallia est omnis divisa in partes tres, quarum unam incolunt Belgae. " * 40
    )
    return src


def log_of(out: Path) -> dict[str, dict]:
    return {e["id"]: e for e in map(json.loads, (out / "clean_log.jsonl").read_text().splitlines())}


def test_clean_corpus_outputs_and_reasons(inputs, tmp_path):
    out = tmp_path / "out"
    result = clean_corpus(items_from_paths([inputs]), out, CONFIG, workers=1, progress=False)
    docs = {d.id: d for d in read_documents(out / "documents.jsonl")}
    log = log_of(out)
    kept = {k for k, e in log.items() if e["status"] == "kept"}
    assert kept == set(docs) and result["documents"] == len(docs)
    assert {
        "file-alpha",
        "file-beta",
        "file-pg376",
        "file-survey_djvu",
        "oldbailey-17800112",
    } <= kept
    # the two copies of alpha: one exact, one near; each names the document it repeats
    assert (
        log["file-alpha_copy"]["status"] == "duplicate"
        and log["file-alpha_copy"]["rule"] == "exact_duplicate"
    )
    assert (
        log["file-alpha_near"]["rule"] == "near_duplicate"
        and log["file-alpha_near"]["duplicate_of"] == "file-alpha"
    )
    # the paged and unpaged scans of one book are near duplicates too
    assert "file-survey_unpaged_djvu" not in kept or "file-survey_djvu" not in kept
    assert log["file-latin"]["rule"] == "min_english"
    assert log["file-scrap"]["rule"] == "min_chars"
    # every document says what was removed from it and why
    steps = {r["step"] for r in log["file-pg376"]["removed"]}
    assert {"gutenberg_header", "gutenberg_licence", "producer_credits"} <= steps
    assert all(r["why"] for e in log.values() for r in e["removed"])
    assert "running_heads" in {r["step"] for r in log["file-survey_djvu"]["removed"]}
    # TEI metadata carried into the document
    trial = docs["oldbailey-17800112"]
    assert (
        trial.year == 1780 and trial.period == "georgian" and trial.category == "trial_proceedings"
    )
    assert "Gutenberg" not in docs["file-pg376"].text
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*spool*"))
    assert (out / "report.md").is_file() and json.loads((out / "report.json").read_text())[
        "totals"
    ]["documents"] == len(docs)


def test_parallel_run_gives_the_same_output(inputs, tmp_path):
    clean_corpus(items_from_paths([inputs]), tmp_path / "one", CONFIG, workers=1, progress=False)
    clean_corpus(items_from_paths([inputs]), tmp_path / "two", CONFIG, workers=2, progress=False)
    assert (tmp_path / "one" / "documents.jsonl").read_bytes() == (
        tmp_path / "two" / "documents.jsonl"
    ).read_bytes()
    assert log_of(tmp_path / "one") == log_of(tmp_path / "two")


def test_dedup_can_be_turned_off(inputs, tmp_path):
    clean_corpus(
        items_from_paths([inputs]),
        tmp_path / "o",
        CleanConfig(min_chars=300, dedup=False),
        progress=False,
    )
    assert log_of(tmp_path / "o")["file-alpha_copy"]["status"] == "kept"


def test_collect_then_clean_then_report(server, tmp_path):
    book = gutenberg_book("A Journal of the Plague Year", "Daniel Defoe", paragraphs=60)
    server.routes["/pg/376.txt"] = [("ok", book)]
    source = Source(id="pg-376", kind="gutenberg", ref="376", title="A Journal of the Plague Year",
                    author="Daniel Defoe", year=1722, period="georgian", category="history", licence="PD")  # fmt: skip
    fetch = FetchConfig(backoff=0, host_delay=0)
    folder = tmp_path / "corpus"
    options = CollectOptions(
        folder, progress=False, gutenberg=f"{server.base}/pg/{{id}}.txt", fetch=fetch
    )
    collect([source], options, Fetcher(fetch))
    items = items_from_collection(folder)
    assert [i.meta["id"] for i in items] == ["pg-376"] and items[0].format == "gutenberg"
    clean_corpus(items, folder, CONFIG, progress=False)
    (doc,) = list(read_documents(folder / "documents.jsonl"))
    assert doc.title == "A Journal of the Plague Year" and doc.author == "Daniel Defoe"
    assert doc.year == 1722 and doc.period == "georgian" and doc.source.endswith("/pg/376.txt")
    assert doc.licence == "PD" and "licence text" not in doc.text and "START OF" not in doc.text
    report = build_report(folder)
    assert report["totals"]["documents"] == 1 and report["by_period"]["georgian"]["documents"] == 1
    assert report["collection"]["status"] == {"ok": 1}
    assert report["totals"]["tokens"] == len(doc.text.split())
    text = format_report(report)
    assert "| georgian | 1 |" in text and "## Collection" in text


def test_changed_raw_file_is_rejected(server, tmp_path):
    server.routes["/pg/376.txt"] = [
        ("ok", gutenberg_book("A Journal of the Plague Year", "Daniel Defoe"))
    ]
    source = Source(id="pg-376", kind="gutenberg", ref="376", title="A Journal of the Plague Year",
                    author="Daniel Defoe", year=1722, period="georgian", category="history", licence="PD")  # fmt: skip
    fetch = FetchConfig(backoff=0, host_delay=0)
    folder = tmp_path / "corpus"
    collect(
        [source],
        CollectOptions(
            folder, progress=False, gutenberg=f"{server.base}/pg/{{id}}.txt", fetch=fetch
        ),
        Fetcher(fetch),
    )
    (folder / "raw" / "pg-376.txt").write_text("something else")
    with pytest.raises(
        UserError, match=r"no document kept of 1 read \(changed 1; .*collect it again"
    ):
        clean_corpus(items_from_collection(folder), folder, CONFIG, progress=False)
    assert not (folder / "documents.jsonl").exists()


def test_report_lists_rejections_and_counts_tokens_with_a_tokenizer(inputs, tmp_path):
    from hellolondon.tokenizer import train_tokenizer

    out = tmp_path / "out"
    clean_corpus(items_from_paths([inputs]), out, CONFIG, progress=False)
    texts = [d.text for d in read_documents(out / "documents.jsonl")]
    train_tokenizer(texts, tmp_path / "tok", vocab_size=300, historical=False)
    words = build_report(out)
    tokens = build_report(out, tokenizer=str(tmp_path / "tok"))
    assert tokens["totals"]["tokens"] > words["totals"]["tokens"] > 0
    assert tokens["token_unit"].startswith("tokens")
    rules = words["cleaning"]["rejected_by_rule"]
    assert (
        rules["min_english"] == 1 and rules["exact_duplicate"] == 2
    )  # alpha_copy, the unpaged scan
    assert any(r["id"] == "file-latin" and "not English" in r["reason"] for r in words["rejected"])


def test_nothing_to_clean_and_missing_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="nothing to clean"):
        clean_corpus([], tmp_path, CONFIG)
    with pytest.raises(UserError, match="not found"):
        items_from_paths([tmp_path / "missing"])


def test_binary_compressed_and_html_files_are_rejected_as_not_text(tmp_path):
    import gzip

    src = tmp_path / "in"
    src.mkdir()
    (src / "book.txt").write_text(prose(3))
    (src / "bytes.txt").write_bytes(bytes(range(256)) * 40)
    (src / "book_gz.txt").write_bytes(gzip.compress(prose(4).encode()))
    (src / "page.txt").write_text(f"<!DOCTYPE html><html><body><p>{prose(5)}</p></body></html>")
    (src / "utf16.txt").write_text(prose(6), encoding="utf-16")  # NUL bytes, but text
    (src / "sub.txt").mkdir()  # a folder with a text file's name is searched, not read
    (src / "sub.txt" / "inner.txt").write_text(prose(7))
    out = tmp_path / "out"
    clean_corpus(items_from_paths([src]), out, CONFIG, workers=1, progress=False)
    log = log_of(out)
    assert log["file-bytes"]["reason"] == "not a text file (binary data: NUL bytes)"
    assert log["file-book_gz"]["reason"].startswith("not a text file (gzip-compressed)")
    assert log["file-page"]["reason"].startswith("an HTML page, not plain text")
    assert {log[k]["rule"] for k in ("file-bytes", "file-book_gz", "file-page")} == {"not_text"}
    assert "file-sub" not in log
    assert {k for k, e in log.items() if e["status"] == "kept"} == {
        "file-book",
        "file-utf16",
        "file-inner",
    }


def test_files_of_the_same_name_in_two_folders_are_both_kept(tmp_path):
    """A local file's id is `file-<name>`; a second file of that name gets its folder added, so
    neither is dropped as a duplicate id (and the first keeps the id, and split, it had)."""
    one, two = tmp_path / "e1", tmp_path / "e2"
    for folder, n in ((one, 1), (two, 5)):
        folder.mkdir()
        (folder / "a.txt").write_text(prose(n))
    items = items_from_paths([one, two, two / "a.txt"])  # the last: named twice, read once
    assert [i.meta["id"] for i in items] == ["file-a", "file-a-e2"]
    out = tmp_path / "out"
    clean_corpus(items, out, CONFIG, workers=1, progress=False)
    assert sorted(d.id for d in read_documents(out / "documents.jsonl")) == ["file-a", "file-a-e2"]
