"""An archive.org text sent without a Content-Length is checked against the size its item's
metadata lists: a cut is retried (and resumed where it can be), another size is refused."""

from __future__ import annotations

import json
import random
from pathlib import Path

from hellolondon.corpus.catalog import Source
from hellolondon.corpus.collect import CollectOptions, collect, read_manifest
from hellolondon.corpus.fetch import FetchConfig, Fetcher

TEXT = b"The survey of the wards of the City, as John Stow walked them in his old age. " * 60
ITEM = Source(id="ia-surveyoflondon", kind="archive", ref="surveyoflondon", title="A Survey of London",
              author="John Stow", year=1598, period="tudor", category="topography", licence="PD", format="djvu")  # fmt: skip
DOWNLOAD = "/download/surveyoflondon/surveyoflondon_djvu.txt"
NO_LENGTH = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"


def listed(server, size: object) -> None:
    """The item's metadata, listing its text file with `size` (a string, as archive.org has it)."""
    meta = {"metadata": {"title": "A survey of London", "creator": "Stow, John"},
            "files": [{"name": "surveyoflondon.pdf", "size": "999999"},
                      {"name": "surveyoflondon_djvu.txt", "size": size}]}  # fmt: skip
    server.routes["/metadata/surveyoflondon"] = [("ok", json.dumps(meta).encode())]


def no_length(body: bytes, etag: str = "") -> tuple:
    """A 200 without a Content-Length: the server closes the connection to end the body."""
    head = NO_LENGTH + (f"ETag: {etag}\r\n".encode() if etag else b"")
    return ("raw", head + b"\r\n" + body)


def run(
    server, tmp_path: Path, retries: int = 2, max_bytes: int = 1 << 20, again: bool = False
) -> dict:
    fetch = FetchConfig(connect_timeout=2, read_timeout=2, retries=retries, deadline=30,
                        backoff=0.1, host_delay=0, max_bytes=max_bytes)  # fmt: skip
    options = CollectOptions(tmp_path / "c", progress=False, fetch=fetch, retry_failed=again,
                             archive_base=server.base)  # fmt: skip
    collect([ITEM], options, Fetcher(fetch, sleep=lambda s: None, rng=random.Random(0)))
    return read_manifest(tmp_path / "c" / "manifest.json")[ITEM.id]


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "c" / "partial").iterdir())


def raw(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (tmp_path / "c" / "raw").iterdir()}


def test_a_whole_text_without_a_length_matches_its_listed_size(server, tmp_path):
    listed(server, str(len(TEXT)))
    server.routes[DOWNLOAD] = [no_length(TEXT)]
    rec = run(server, tmp_path)
    assert rec["status"] == "ok" and rec["bytes"] == len(TEXT)
    assert raw(tmp_path) == {"ia-surveyoflondon.txt": TEXT}


def test_a_cut_text_without_a_length_is_retried_then_fails_leaving_nothing(server, tmp_path):
    # Without the listed size a cut djvu text was taken as whole: nothing else marks its end.
    listed(server, str(len(TEXT)))
    server.routes[DOWNLOAD] = [no_length(TEXT[:1000])]
    rec = run(server, tmp_path, retries=2)
    assert rec["status"] == "failed" and len(server.hits(DOWNLOAD)) == 3
    assert rec["error"] == (
        f"cut short: the connection closed after 1000 of the {len(TEXT)} bytes the item's "
        "metadata lists (the server gave no Content-Length)"
    )
    assert raw(tmp_path) == {} and leftovers(tmp_path) == []  # no validator: not resumable
    server.routes[DOWNLOAD] = [no_length(TEXT)]
    assert run(server, tmp_path, again=True)["status"] == "ok"
    assert raw(tmp_path) == {"ia-surveyoflondon.txt": TEXT}


def test_a_cut_text_with_a_validator_is_resumed_against_the_listed_size(server, tmp_path):
    listed(server, str(len(TEXT)))
    server.routes[DOWNLOAD] = [no_length(TEXT[:1000], '"v1"')]
    run(server, tmp_path, retries=0)
    part = tmp_path / "c" / "partial" / "ia-surveyoflondon.part"
    assert part.read_bytes() == TEXT[:1000]
    # the rest, again without a length: its end is the listed size
    rest = (
        b'HTTP/1.0 206 Partial Content\r\nETag: "v1"\r\n'
        + f"Content-Range: bytes 1000-{len(TEXT) - 1}/{len(TEXT)}\r\n\r\n".encode()
        + TEXT[1000:]
    )
    server.routes[DOWNLOAD] = [("raw", rest)]
    assert run(server, tmp_path, retries=0, again=True)["status"] == "ok"
    assert server.hits(DOWNLOAD)[-1]["Range"] == "bytes=1000-"
    assert raw(tmp_path) == {"ia-surveyoflondon.txt": TEXT}


def test_a_text_longer_than_listed_is_one_clear_error_not_retried(server, tmp_path):
    listed(server, str(len(TEXT) - 10))
    server.routes[DOWNLOAD] = [no_length(TEXT, '"v1"')]
    rec = run(server, tmp_path, retries=2)
    assert rec["status"] == "failed" and len(server.hits(DOWNLOAD)) == 1
    assert rec["error"].startswith(
        f"size mismatch: the server sent {len(TEXT)} bytes, the item's metadata lists "
        f"{len(TEXT) - 10}; "
    )
    assert raw(tmp_path) == {} and leftovers(tmp_path) == []


def test_a_whole_chunked_text_shorter_than_listed_is_a_mismatch(server, tmp_path):
    # chunks mark the body's end, so fewer bytes than listed is not a cut: another file
    listed(server, str(len(TEXT) + 10))
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    body = f"{len(TEXT):x}\r\n".encode() + TEXT + b"\r\n0\r\n\r\n"
    server.routes[DOWNLOAD] = [("raw", chunked + body)]
    rec = run(server, tmp_path)
    assert rec["status"] == "failed" and rec["error"].startswith("size mismatch")
    assert len(server.hits(DOWNLOAD)) == 1 and leftovers(tmp_path) == []


def test_a_listed_size_over_the_limit_is_refused_before_any_byte_is_kept(server, tmp_path):
    listed(server, str(len(TEXT)))
    server.routes[DOWNLOAD] = [no_length(TEXT, '"v1"')]
    rec = run(server, tmp_path, max_bytes=1000)
    assert rec["error"] == (
        f"the file is {len(TEXT)} bytes, more than the limit of 1000 (raise --max-mb to take it)"
    )
    assert leftovers(tmp_path) == []


def test_a_content_length_stands_over_the_listed_size(server, tmp_path):
    """The listing is used only where the server gives no length of its own."""
    listed(server, "12")
    server.routes[DOWNLOAD] = [("ok", TEXT)]
    assert run(server, tmp_path)["status"] == "ok"


def test_an_item_listing_no_usable_size_is_fetched_as_before(server, tmp_path):
    listed(server, "about 4 kB")
    server.routes[DOWNLOAD] = [no_length(TEXT)]
    assert run(server, tmp_path)["status"] == "ok"
    assert raw(tmp_path) == {"ia-surveyoflondon.txt": TEXT}
