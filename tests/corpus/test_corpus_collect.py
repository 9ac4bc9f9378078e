"""The collector against a local server with injected faults: retries, resume, checks, manifest."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import signal
import threading
import time
import zlib
from pathlib import Path

import pytest
from corpus_server import FIXTURES, gutenberg_book

from hellolondon.corpus.catalog import Source
from hellolondon.corpus.collect import CollectOptions, collect, gutenberg_urls, read_manifest
from hellolondon.corpus.fetch import FetchConfig, Fetcher, FetchError, parse_retry_after
from hellolondon.errors import UserError

PLAGUE = gutenberg_book("A Journal of the Plague Year", "Daniel Defoe")


def book(
    n: int, title: str = "A Journal of the Plague Year", author: str = "Daniel Defoe"
) -> Source:
    return Source(id=f"pg-{n}", kind="gutenberg", ref=str(n), title=title, author=author, year=1722,
                  period="georgian", category="history", licence="PD")  # fmt: skip


class Sleeps(list):
    """Records the waits instead of sleeping, so backoff costs the tests nothing."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def run(server, tmp_path: Path, sources: list[Source], sleeps: Sleeps | None = None, **kw) -> dict:
    fetch = FetchConfig(connect_timeout=2, read_timeout=kw.pop("read_timeout", 2), retries=kw.pop("retries", 3),
                        deadline=kw.pop("deadline", 30), backoff=0.5, host_delay=0, max_bytes=kw.pop("max_bytes", 1 << 20), per_host=kw.pop("per_host", 4))  # fmt: skip
    options = CollectOptions(tmp_path / "c", workers=kw.pop("workers", 2), progress=False, fetch=fetch,
                             gutenberg=f"{server.base}/pg/{{id}}.txt", archive_base=server.base, **kw)  # fmt: skip
    fetcher = Fetcher(fetch, sleep=sleeps if sleeps is not None else Sleeps(), rng=random.Random(0))
    return collect(sources, options, fetcher)


def manifest(tmp_path: Path) -> dict:
    return read_manifest(tmp_path / "c" / "manifest.json")


def raw_files(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (tmp_path / "c" / "raw").iterdir()}


def test_500_then_success_retries_and_records(server, tmp_path):
    server.routes["/pg/376.txt"] = [("status", 500, {}), ("ok", PLAGUE)]
    sleeps = Sleeps()
    result = run(server, tmp_path, [book(376)], sleeps)
    rec = manifest(tmp_path)["pg-376"]
    assert result["ok"] == ["pg-376"]
    assert rec["status"] == "ok" and rec["attempts"] == 2 and rec["error"] == ""
    assert rec["bytes"] == len(PLAGUE) and rec["sha256"] == hashlib.sha256(PLAGUE).hexdigest()
    assert rec["header"]["title"] == "A Journal of the Plague Year"
    assert raw_files(tmp_path) == {"pg-376.txt": PLAGUE}
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] < 0.5  # backoff 0.5 s times a jitter in [0.5, 1)


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured(server, tmp_path, code):
    server.routes["/pg/376.txt"] = [("status", code, {"Retry-After": "7"}), ("ok", PLAGUE)]
    sleeps = Sleeps()
    run(server, tmp_path, [book(376)], sleeps)
    assert sleeps == [7.0]
    assert manifest(tmp_path)["pg-376"]["attempts"] == 2


def test_retry_after_longer_than_the_limit_fails_at_once(server, tmp_path):
    server.routes["/pg/376.txt"] = [("status", 429, {"Retry-After": "99999"})]
    run(server, tmp_path, [book(376)])
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "failed" and rec["attempts"] == 1 and "retry_after_max" in rec["error"]


@pytest.mark.parametrize("fault", ["reset", "short"])
def test_broken_body_is_resumed_with_range(server, tmp_path, fault):
    cut = len(PLAGUE) // 3
    server.routes["/pg/376.txt"] = [(fault, PLAGUE, cut), ("ok", PLAGUE)]
    run(server, tmp_path, [book(376)])
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "ok" and rec["attempts"] == 2
    assert server.hits("/pg/376.txt")[1]["Range"] == f"bytes={cut}-"
    assert server.hits("/pg/376.txt")[1]["If-Range"] == '"v1"'
    assert raw_files(tmp_path) == {"pg-376.txt": PLAGUE}
    assert not list((tmp_path / "c" / "partial").iterdir())


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.routes["/pg/376.txt"] = [("short", PLAGUE, 100), ("ok-ignore-range", PLAGUE)]
    run(server, tmp_path, [book(376)])
    assert raw_files(tmp_path) == {"pg-376.txt": PLAGUE}


def test_slow_server_times_out_and_nothing_reaches_the_corpus(server, tmp_path):
    server.routes["/pg/376.txt"] = [("slow", PLAGUE, 0.6)]
    sleeps = Sleeps()
    run(server, tmp_path, [book(376)], sleeps, read_timeout=0.15, retries=2)
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "failed" and rec["attempts"] == 3
    assert "no answer from 127.0.0.1 within the read timeout of 0.15s" in rec["error"]
    assert (
        len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9
    )  # exponential: 0.5*[.5,1) then 1.0*[.5,1)
    assert raw_files(tmp_path) == {}


def test_server_stalling_mid_body_fails_on_the_read_timeout_with_what_it_got(server, tmp_path):
    server.routes["/pg/376.txt"] = [("drip", PLAGUE, 1000, 1.0)]
    run(server, tmp_path, [book(376)], read_timeout=0.2, retries=0)
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "failed"
    assert rec["error"].startswith("no bytes for 0.2s (the read timeout) after 1000 bytes")
    assert (tmp_path / "c" / "partial" / "pg-376.part").stat().st_size == 1000


def test_server_dripping_bytes_fails_at_the_deadline(server, tmp_path):
    # 40 bytes every 50 ms: each read is well within the read timeout, but the whole book would
    # take many seconds. The deadline ends it after about one second, with a reason.
    server.routes["/pg/376.txt"] = [("drip", PLAGUE, 40, 0.05)]
    t0 = time.monotonic()
    run(server, tmp_path, [book(376)], read_timeout=2, deadline=1.0)
    elapsed = time.monotonic() - t0
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "failed" and rec["attempts"] == 1
    assert "deadline of 1s" in rec["error"] and "bytes received" in rec["error"]
    assert 0.9 < elapsed < 5  # the whole book would take about ten seconds
    assert raw_files(tmp_path) == {}
    # What arrived is kept, so a later run with retry_failed continues from there.
    kept = (tmp_path / "c" / "partial" / "pg-376.part").stat().st_size
    assert kept > 0
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]
    run(server, tmp_path, [book(376)], retry_failed=True)
    assert manifest(tmp_path)["pg-376"]["status"] == "ok"
    assert server.hits("/pg/376.txt")[-1]["Range"] == f"bytes={kept}-"
    assert raw_files(tmp_path) == {"pg-376.txt": PLAGUE}


def test_wait_past_the_deadline_fails_at_once(server, tmp_path):
    server.routes["/pg/376.txt"] = [("status", 503, {"Retry-After": "30"}), ("ok", PLAGUE)]
    sleeps = Sleeps()
    run(server, tmp_path, [book(376)], sleeps, deadline=5)
    rec = manifest(tmp_path)["pg-376"]
    assert sleeps == [] and len(server.hits("/pg/376.txt")) == 1
    assert rec["status"] == "failed" and "deadline of 5s" in rec["error"]


def test_slow_metadata_is_bounded_by_the_deadline(server):
    server.routes["/meta"] = [("drip", b"{" + b" " * 4000 + b"}", 40, 0.05)]
    fetcher = Fetcher(FetchConfig(read_timeout=2, deadline=0.5, host_delay=0), sleep=Sleeps())
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="deadline of 0.5s"):
        fetcher.get(f"{server.base}/meta")
    assert time.monotonic() - t0 < 1.5


def test_html_landing_page_is_rejected_not_retried(server, tmp_path):
    page = b"<!DOCTYPE html><html><head><title>Project Gutenberg</title></head><body>Read online</body></html>"
    server.routes["/pg/376.txt"] = [("html", page)]
    run(server, tmp_path, [book(376)])
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "rejected" and rec["attempts"] == 1 and "HTML" in rec["error"]
    assert raw_files(tmp_path) == {}
    assert (tmp_path / "c" / "rejected" / "pg-376.txt").read_bytes() == page


def test_wrong_book_is_rejected_with_both_titles(server, tmp_path):
    server.routes["/pg/203.txt"] = [
        ("ok", gutenberg_book("Uncle Tom's Cabin", "Harriet Beecher Stowe"))
    ]
    run(server, tmp_path, [book(203, "Roxburghe Ballads", "Various")])
    rec = manifest(tmp_path)["pg-203"]
    assert rec["status"] == "rejected"
    assert "Roxburghe Ballads" in rec["error"] and "Uncle Tom's Cabin" in rec["error"]
    assert raw_files(tmp_path) == {}


def test_wrong_author_is_rejected(server, tmp_path):
    server.routes["/pg/418.txt"] = [("ok", gutenberg_book("Essays", "Michel de Montaigne"))]
    run(server, tmp_path, [book(418, "Essays", "Francis Bacon")])
    rec = manifest(tmp_path)["pg-418"]
    assert rec["status"] == "rejected" and "author mismatch" in rec["error"]


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),
    ],
)
def test_compressed_body_sent_anyway_is_decoded(server, tmp_path, encoding, encode):
    server.routes["/pg/376.txt"] = [("encoded", encode(PLAGUE), encoding)]
    run(server, tmp_path, [book(376)])
    assert manifest(tmp_path)["pg-376"]["status"] == "ok"
    assert raw_files(tmp_path) == {"pg-376.txt": PLAGUE}


@pytest.mark.parametrize(
    ("data", "reason"),
    [(gzip.compress(PLAGUE)[:-100], "ends before its end"), (b"not gzip at all", "does not decode"),
     (gzip.compress(PLAGUE * 100), "more than the limit of 100000 bytes once decompressed")],
)  # fmt: skip
def test_broken_or_too_big_compressed_body_fails(server, tmp_path, data, reason):
    server.routes["/pg/376.txt"] = [("encoded", data, "gzip")]
    run(server, tmp_path, [book(376)], max_bytes=100_000)
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "failed" and reason in rec["error"]
    assert raw_files(tmp_path) == {}
    assert not list((tmp_path / "c" / "partial").iterdir())  # nothing to resume, nothing left


def test_body_longer_than_its_content_length_is_not_taken_as_whole(server, tmp_path):
    server.routes["/pg/376.txt"] = [("long", PLAGUE, 500)]
    run(server, tmp_path, [book(376)])
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "failed" and "more than its Content-Length" in rec["error"]
    assert raw_files(tmp_path) == {}


def test_an_answer_that_is_not_http_fails_in_one_line(server, tmp_path):
    server.routes["/pg/376.txt"] = [("raw", b"SSH-2.0-OpenSSH_9.6\r\n")]
    result = run(server, tmp_path, [book(376)], retries=1)
    error = manifest(tmp_path)["pg-376"]["error"]
    assert result["failed"] == ["pg-376"] and "SSH-2.0-OpenSSH_9.6" in error
    assert error == " ".join(error.split())  # printed as one line of the failure list


def test_an_answer_of_control_characters_is_shown_escaped_and_cut(server, tmp_path):
    server.routes["/pg/376.txt"] = [("raw", b"\x00\x1b[2J" + b"x" * 5000 + b"\r\n")]
    run(server, tmp_path, [book(376)], retries=0)
    error = manifest(tmp_path)["pg-376"]["error"]
    assert "\\x00\\x1b[2J" in error and error.isprintable()  # no NUL, no terminal escape
    assert len(error) < 400


def test_not_found_fails_without_retrying(server, tmp_path):
    sleeps = Sleeps()
    run(server, tmp_path, [book(99999)], sleeps)
    rec = manifest(tmp_path)["pg-99999"]
    assert rec["status"] == "failed" and rec["attempts"] == 1 and rec["http_status"] == 404
    assert sleeps == []


def test_too_large_is_abandoned_and_not_retried(server, tmp_path):
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]
    run(server, tmp_path, [book(376)], max_bytes=1000)
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "failed" and rec["attempts"] == 1
    assert "more than the limit of 1000" in rec["error"] and "--max-mb" in rec["error"]
    assert raw_files(tmp_path) == {} and not list((tmp_path / "c" / "partial").glob("*.part"))


def test_too_large_without_a_content_length_leaves_nothing_behind(server, tmp_path):
    """Abandoned as it streams in, the body used to leave its small resume record behind."""
    no_length = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
    server.routes["/pg/376.txt"] = [("raw", no_length + PLAGUE)]
    run(server, tmp_path, [book(376)], max_bytes=1000)
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "failed" and "more than the limit of 1000" in rec["error"]
    assert not list((tmp_path / "c" / "partial").iterdir())


def test_rerun_skips_complete_and_retries_failed_only_when_asked(server, tmp_path):
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]
    server.routes["/pg/370.txt"] = [("status", 404, {})]
    moll = book(370, "Moll Flanders")
    first = run(server, tmp_path, [book(376), moll])
    assert first["counts"]["ok"] == 1 and first["counts"]["failed"] == 1
    n = len(server.requests)
    again = run(server, tmp_path, [book(376), moll])
    assert again["cached"] == ["pg-376"] and again["skipped"] == ["pg-370"]
    assert len(server.requests) == n  # nothing fetched
    server.routes["/pg/370.txt"] = [("ok", gutenberg_book("Moll Flanders", "Daniel Defoe"))]
    retried = run(server, tmp_path, [book(376), moll], retry_failed=True)
    assert retried["ok"] == ["pg-370"] and retried["cached"] == ["pg-376"]
    assert manifest(tmp_path)["pg-370"]["status"] == "ok"


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    cut = 500
    server.routes["/pg/376.txt"] = [("reset", PLAGUE, cut)]
    run(server, tmp_path, [book(376)], retries=0)
    assert manifest(tmp_path)["pg-376"]["status"] == "failed"
    assert (tmp_path / "c" / "partial" / "pg-376.part").stat().st_size == cut
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]
    run(server, tmp_path, [book(376)], retry_failed=True)
    assert server.hits("/pg/376.txt")[-1]["Range"] == f"bytes={cut}-"
    assert raw_files(tmp_path) == {"pg-376.txt": PLAGUE}


def test_resume_of_a_file_that_changed_on_the_server_starts_over(server, tmp_path):
    # A server that ignores If-Range sends the rest of the new version: its ETag gives it away.
    new = gutenberg_book("A Journal of the Plague Year", "Daniel Defoe", paragraphs=50)
    server.routes["/pg/376.txt"] = [("short", PLAGUE, 500), ("ok", new, '"v2"')]
    run(server, tmp_path, [book(376)])
    assert raw_files(tmp_path) == {"pg-376.txt": new}
    assert [h.get("Range") for h in server.hits("/pg/376.txt")] == [None, "bytes=500-", None]


def test_partial_file_without_a_validator_is_not_resumed(server, tmp_path):
    # Without an ETag or Last-Modified nothing tells the old part from a new version's rest.
    server.routes["/pg/376.txt"] = [("short", PLAGUE, 500, ""), ("ok", PLAGUE)]
    run(server, tmp_path, [book(376)])
    assert raw_files(tmp_path) == {"pg-376.txt": PLAGUE}
    assert [h.get("Range") for h in server.hits("/pg/376.txt")] == [None, None]


BROADSIDE = b"The text of a broadside, as it was cried in the streets of London. " * 80


def _survey_item(server) -> tuple[Source, str]:
    """An archive.org item whose metadata matches, and the path of its text."""
    meta = {"metadata": {"title": "A survey of London", "creator": "Stow, John"},
            "files": [{"name": "surveyoflondon_djvu.txt"}]}  # fmt: skip
    server.routes["/metadata/surveyoflondon"] = [("ok", json.dumps(meta).encode())]
    item = Source(id="ia-surveyoflondon", kind="archive", ref="surveyoflondon", title="A Survey of London",
                  author="John Stow", year=1598, period="tudor", category="topography", licence="PD", format="djvu")  # fmt: skip
    return item, "/download/surveyoflondon/surveyoflondon_djvu.txt"


def _broadside(server) -> tuple[Source, str]:
    item = Source(id="bs-fire", kind="url", ref=f"{server.base}/broadside.txt", title="The Fire",
                  author="Anon", year=1666, period="stuart", category="news", licence="PD", format="text")  # fmt: skip
    return item, "/broadside.txt"


@pytest.mark.parametrize("source", [_survey_item, _broadside])
def test_a_body_shorter_than_its_content_length_fails_every_kind_of_source(
    server, tmp_path, source
):
    # Each attempt sends 100 bytes of the 5,360 its Content-Length gives, then closes cleanly,
    # without an ETag or Last-Modified: no later run could resume the part, so none is kept.
    item, path = source(server)
    server.routes[path] = [("short", BROADSIDE, 100, "")]
    run(server, tmp_path, [item], retries=2)
    rec = manifest(tmp_path)[item.id]
    assert rec["status"] == "failed" and len(server.hits(path)) == 3  # retried, then refused
    assert rec["error"] == (
        f"cut short: the connection closed after 100 of the {len(BROADSIDE)} bytes its "
        "Content-Length gave"
    )
    assert raw_files(tmp_path) == {} and not list((tmp_path / "c" / "rejected").iterdir())
    assert not list((tmp_path / "c" / "partial").iterdir())
    server.routes[path] = [("ok", BROADSIDE)]
    run(server, tmp_path, [item], retry_failed=True)
    assert raw_files(tmp_path) == {f"{item.id}.txt": BROADSIDE}


def test_a_cut_body_with_a_validator_keeps_its_part_to_resume(server, tmp_path):
    item, path = _broadside(server)
    server.routes[path] = [("short", BROADSIDE, 100)]  # with an ETag
    run(server, tmp_path, [item], retries=0)
    assert manifest(tmp_path)[item.id]["error"].startswith("cut short: the connection closed")
    assert (tmp_path / "c" / "partial" / f"{item.id}.part").read_bytes() == BROADSIDE[:100]
    server.routes[path] = [("ok", BROADSIDE)]
    run(server, tmp_path, [item], retry_failed=True)
    assert server.hits(path)[-1]["Range"] == "bytes=100-"
    assert raw_files(tmp_path) == {f"{item.id}.txt": BROADSIDE}


def test_offline_uses_only_the_cache(server, tmp_path):
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]
    run(server, tmp_path, [book(376)])
    n = len(server.requests)
    result = run(server, tmp_path, [book(376), book(370, "Moll Flanders")], offline=True)
    assert result["cached"] == ["pg-376"] and result["skipped"] == ["pg-370"]
    assert len(server.requests) == n


def test_changed_cached_file_is_fetched_again(server, tmp_path):
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]
    run(server, tmp_path, [book(376)])
    (tmp_path / "c" / "raw" / "pg-376.txt").write_bytes(b"tampered")
    result = run(server, tmp_path, [book(376)])
    assert result["ok"] == ["pg-376"] and raw_files(tmp_path) == {"pg-376.txt": PLAGUE}


def test_changed_metadata_updates_the_manifest_without_fetching(server, tmp_path):
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]
    run(server, tmp_path, [book(376)])
    n = len(server.requests)
    fixed = Source(**{**book(376).metadata(), "year": 1665, "period": "stuart"})
    result = run(server, tmp_path, [fixed])
    assert result["cached"] == ["pg-376"] and len(server.requests) == n
    assert manifest(tmp_path)["pg-376"]["source"]["year"] == 1665


def test_a_changed_entry_whose_download_fails_keeps_the_earlier_copy(server, tmp_path):
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]
    run(server, tmp_path, [book(376)])
    server.routes["/pg/376.txt"] = [("status", 404, {})]  # the server is down or moved for now
    retitled = book(376, "A Journal of the Plague Year, Being Observations")
    result = run(server, tmp_path, [retitled], retries=0)
    assert result["failed"] == ["pg-376"] and raw_files(tmp_path) == {"pg-376.txt": PLAGUE}
    assert "the earlier download stays in raw/pg-376.txt" in manifest(tmp_path)["pg-376"]["error"]
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]
    result = run(server, tmp_path, [retitled], retry_failed=True)
    assert result["ok"] == ["pg-376"] and raw_files(tmp_path) == {"pg-376.txt": PLAGUE}


def test_fixed_catalog_entry_is_fetched_again(server, tmp_path):
    server.routes["/pg/203.txt"] = [
        ("ok", gutenberg_book("Uncle Tom's Cabin", "Harriet Beecher Stowe"))
    ]
    run(server, tmp_path, [book(203, "Roxburghe Ballads", "Various")])
    fixed = book(203, "Uncle Tom's Cabin", "Harriet Beecher Stowe")
    result = run(server, tmp_path, [fixed])
    assert result["ok"] == ["pg-203"]


def test_redirect_is_followed(server, tmp_path):
    server.routes["/pg/376.txt"] = [("redirect", "/files/376-0.txt")]
    server.routes["/files/376-0.txt"] = [("ok", PLAGUE)]
    run(server, tmp_path, [book(376)])
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "ok" and rec["url"].endswith("/files/376-0.txt")


def test_mirror_layout_and_fallback_name(server, tmp_path):
    assert gutenberg_urls("https://m.example/pg", "1342") == [
        "https://m.example/pg/1/3/4/1342/1342-0.txt", "https://m.example/pg/1/3/4/1342/1342.txt"]  # fmt: skip
    assert gutenberg_urls("https://m.example", "5")[0] == "https://m.example/0/5/5-0.txt"
    server.routes["/3/7/376/376.txt"] = [("ok", PLAGUE)]  # no -0.txt on this mirror
    fetch = FetchConfig(backoff=0, host_delay=0)
    options = CollectOptions(tmp_path / "c", progress=False, gutenberg=server.base, fetch=fetch)
    collect([book(376)], options, Fetcher(fetch, sleep=Sleeps()))
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "ok" and rec["attempts"] == 2 and rec["url"].endswith("/376.txt")


def test_per_host_limit_is_kept(server, tmp_path):
    for n in range(1, 7):
        server.routes[f"/pg/{n}.txt"] = [("slow", gutenberg_book(f"Book {n}", "Defoe"), 0.15)]
    sources = [book(n, f"Book {n}", "Defoe") for n in range(1, 7)]
    result = run(server, tmp_path, sources, workers=6, per_host=2)
    assert result["counts"]["ok"] == 6
    assert server.max_active == 2


def test_host_delay_spaces_request_starts():
    sleeps = Sleeps()
    fetcher = Fetcher(FetchConfig(host_delay=5.0), sleep=sleeps)
    for _ in range(3):
        with fetcher.gate("example.org"):
            pass
    assert len(sleeps) == 2 and all(4.0 < s <= 10.0 for s in sleeps)


def test_archive_item_checked_against_metadata_before_download(server, tmp_path):
    item = Source(id="ia-surveyoflondon", kind="archive", ref="surveyoflondon", title="A Survey of London",
                  author="John Stow", year=1598, period="tudor", category="topography", licence="PD", format="djvu")  # fmt: skip
    meta = {"metadata": {"title": "A survey of London", "creator": ["Stow, John, 1525?-1605"], "language": "eng"},
            "files": [{"name": "surveyoflondon.pdf"}, {"name": "surveyoflondon_djvu.txt"}]}  # fmt: skip
    text = (FIXTURES / "survey_djvu.txt").read_bytes()
    server.routes["/metadata/surveyoflondon"] = [("ok", json.dumps(meta).encode())]
    server.routes["/download/surveyoflondon/surveyoflondon_djvu.txt"] = [("ok", text)]
    run(server, tmp_path, [item])
    rec = manifest(tmp_path)["ia-surveyoflondon"]
    assert rec["status"] == "ok" and rec["format"] == "djvu" and rec["attempts"] == 2
    assert raw_files(tmp_path) == {"ia-surveyoflondon.txt": text}


def test_archive_item_with_other_metadata_is_rejected_unfetched(server, tmp_path):
    item = Source(id="ia-cookery", kind="archive", ref="cookery", title="A Survey of London",
                  author="John Stow", year=1598, period="tudor", category="topography", licence="PD", format="djvu")  # fmt: skip
    wrong = {"metadata": {"title": "Cookery for the million", "creator": "Anon"},
             "files": [{"name": "cookery_djvu.txt"}]}  # fmt: skip
    server.routes["/metadata/cookery"] = [("ok", json.dumps(wrong).encode())]
    server.routes["/download/cookery/cookery_djvu.txt"] = [("ok", b"text")]
    run(server, tmp_path, [item])
    rec = manifest(tmp_path)["ia-cookery"]
    assert rec["status"] == "rejected" and "title mismatch" in rec["error"]
    assert server.hits("/download/cookery/cookery_djvu.txt") == []  # the text is never fetched
    assert raw_files(tmp_path) == {}
    server.routes["/metadata/cookery"] = [("ok", b"{}")]  # archive.org's answer for no such item
    run(server, tmp_path, [item], retry_failed=True)
    assert "no item" in manifest(tmp_path)["ia-cookery"]["error"]


@pytest.mark.parametrize(
    "meta",
    [
        {"metadata": ["x"], "files": []},
        {"metadata": {"title": "A Survey of London", "creator": "John Stow"}, "files": ["x"]},
        {"metadata": {"title": [1, 2], "creator": "John Stow"}, "files": None},
    ],
)
def test_archive_metadata_of_another_shape_rejects_that_item_alone(server, tmp_path, meta):
    item = Source(id="ia-odd", kind="archive", ref="odd", title="A Survey of London",
                  author="John Stow", year=1598, period="tudor", category="topography", licence="PD", format="djvu")  # fmt: skip
    server.routes["/metadata/odd"] = [("ok", json.dumps(meta).encode())]
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]
    run(server, tmp_path, [item, book(376)])
    records = manifest(tmp_path)
    assert records["ia-odd"]["status"] == "rejected", records["ia-odd"]
    assert records["pg-376"]["status"] == "ok"  # the other download goes on


def test_metadata_cut_short_by_the_network_is_retried_not_rejected(server, tmp_path):
    item = Source(id="ia-surveyoflondon", kind="archive", ref="surveyoflondon", title="A Survey of London",
                  author="John Stow", year=1598, period="tudor", category="topography", licence="PD", format="djvu")  # fmt: skip
    meta = json.dumps({"metadata": {"title": "A survey of London", "creator": "Stow, John"},
                       "files": [{"name": "surveyoflondon_djvu.txt"}]}).encode()  # fmt: skip
    server.routes["/metadata/surveyoflondon"] = [("short", meta, 40), ("ok", meta)]
    server.routes["/download/surveyoflondon/surveyoflondon_djvu.txt"] = [("ok", b"The text. " * 50)]
    run(server, tmp_path, [item])
    rec = manifest(tmp_path)["ia-surveyoflondon"]
    assert rec["status"] == "ok" and len(server.hits("/metadata/surveyoflondon")) == 2


def test_a_book_without_a_length_must_end_with_its_end_marker(server, tmp_path):
    """A server that closes the connection to end the body: a cut is seen only by the marker."""
    no_length = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    server.routes["/pg/376.txt"] = [("raw", no_length + PLAGUE[: len(PLAGUE) // 2])]
    run(server, tmp_path, [book(376)])
    rec = manifest(tmp_path)["pg-376"]
    assert rec["status"] == "failed" and "no END marker" in rec["error"]
    assert raw_files(tmp_path) == {} and not list((tmp_path / "c" / "partial").iterdir())
    server.routes["/pg/376.txt"] = [("raw", no_length + PLAGUE)]  # the whole book, no length
    run(server, tmp_path, [book(376)], retry_failed=True)
    assert manifest(tmp_path)["pg-376"]["status"] == "ok"
    assert raw_files(tmp_path) == {"pg-376.txt": PLAGUE}


def test_concurrent_sources_all_recorded(server, tmp_path):
    for n in range(10, 20):
        server.routes[f"/pg/{n}.txt"] = [
            ("status", 502, {}),
            ("ok", gutenberg_book(f"Book {n}", "Defoe")),
        ]
    result = run(
        server, tmp_path, [book(n, f"Book {n}", "Defoe") for n in range(10, 20)], workers=4
    )
    records = manifest(tmp_path)
    assert result["counts"]["ok"] == 10 and all(
        records[f"pg-{n}"]["attempts"] == 2 for n in range(10, 20)
    )


def test_retry_after_parsing_and_backoff_bounds():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    fetcher = Fetcher(FetchConfig(backoff=1.0, backoff_max=8.0), rng=random.Random(1))
    err = FetchError("HTTP 500", True)
    for n, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)]:
        assert cap / 2 <= fetcher.delay(n, err) < cap


def test_connection_refused_is_retried_then_failed(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens there
    sleeps = Sleeps()
    fetcher = Fetcher(FetchConfig(retries=2, backoff=0.1, host_delay=0), sleep=sleeps)
    with pytest.raises(FetchError) as info:
        fetcher.download(f"http://127.0.0.1:{port}/x.txt", tmp_path / "x.part")
    assert info.value.attempts == 3 and "connection failed" in str(info.value) and len(sleeps) == 2


def test_manifest_survives_threads(tmp_path):
    from hellolondon.corpus.collect import Manifest

    m = Manifest(tmp_path / "manifest.json")
    records = [
        {"id": f"s{i}", "status": "ok", "path": f"raw/s{i}.txt", "source": {}} for i in range(20)
    ]
    threads = [threading.Thread(target=m.put, args=(record,)) for record in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_manifest(tmp_path / "manifest.json")) == 20


def test_second_collector_on_the_same_folder_is_refused(server, tmp_path):
    server.routes["/pg/376.txt"] = [("drip", PLAGUE, 2000, 0.05)]
    first = threading.Thread(target=run, args=(server, tmp_path, [book(376)]))
    first.start()
    try:
        deadline = time.monotonic() + 5
        while not server.hits("/pg/376.txt") and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(UserError, match="another `corpus collect`"):
            run(server, tmp_path, [book(376)])
    finally:
        first.join()
    assert raw_files(tmp_path) == {"pg-376.txt": PLAGUE}
    run(server, tmp_path, [book(376)])  # the lock went with the first run


def test_ctrl_c_stops_downloads_at_once_and_keeps_what_finished(server, tmp_path):
    main = threading.main_thread().ident
    server.routes["/pg/1.txt"] = [("ok", PLAGUE)]
    server.routes["/pg/376.txt"] = [("drip", PLAGUE, 20, 0.05)]  # about 20 s in all
    part = tmp_path / "c" / "partial" / "pg-376.part"

    def press_ctrl_c() -> None:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if "pg-1" in manifest(tmp_path) and server.hits("/pg/376.txt"):
                break
            time.sleep(0.01)
        time.sleep(0.3)  # some bytes of pg-376 arrive
        signal.pthread_kill(main, signal.SIGINT)  # what Ctrl-C does

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(server, tmp_path, [book(1), book(376)], read_timeout=30, deadline=60)
    assert time.monotonic() - t0 < 5  # not when the slow download would have ended
    assert {k: r["status"] for k, r in manifest(tmp_path).items()} == {"pg-1": "ok"}
    assert raw_files(tmp_path) == {"pg-1.txt": PLAGUE}
    kept = part.stat().st_size
    assert 0 < kept < len(PLAGUE)
    server.routes["/pg/376.txt"] = [("ok", PLAGUE)]  # the rerun continues the partial file
    result = run(server, tmp_path, [book(1), book(376)])
    assert result["cached"] == ["pg-1"] and result["ok"] == ["pg-376"]
    assert server.hits("/pg/376.txt")[-1]["Range"] == f"bytes={kept}-"
    assert raw_files(tmp_path) == {"pg-1.txt": PLAGUE, "pg-376.txt": PLAGUE}
