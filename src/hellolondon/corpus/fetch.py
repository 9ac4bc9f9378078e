"""HTTP downloads that can be trusted and re-run, on the standard library's http.client.

Separate connect and read timeouts; retries with exponential backoff and jitter; Retry-After
honoured on 429 and 503; partial files resumed with Range (and If-Range, so a changed file
starts over); a size limit; redirects followed; a per-host limit on concurrent requests and a
least delay between them; an overall deadline per request, so a server that sends a few bytes
at a time (each read within the read timeout) cannot hold a worker for ever. Bytes go to a `.part` file that the caller moves into place only
once it is complete and checked.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import socket
import ssl
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from hellolondon import __version__
from hellolondon.files import atomic_write, read_json

USER_AGENT = f"hellolondon/{__version__} (historical-English corpus collector; python http.client)"
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 16


@dataclass
class FetchConfig:
    connect_timeout: float = 10.0  # seconds to open the connection (and TLS)
    read_timeout: float = 60.0  # seconds any one read may wait for bytes
    retries: int = 4  # further attempts after the first, for errors that may pass
    backoff: float = 2.0  # wait before the first retry; doubles each time, with jitter
    backoff_max: float = 120.0  # longest wait between retries
    retry_after_max: float = 600.0  # a longer Retry-After fails the source instead of waiting
    max_bytes: int = 256 * 2**20  # larger downloads are abandoned
    per_host: int = 2  # concurrent requests to one host
    host_delay: float = 2.0  # least seconds between the starts of two requests to one host
    max_redirects: int = 5
    # Most seconds one download (or metadata request) may take in all: every attempt, and the
    # waits between them, from the moment its first request goes out (after any wait for a free
    # slot on the host). 0 means no deadline.
    deadline: float = 900.0
    user_agent: str = USER_AGENT


class FetchError(Exception):
    """A failed request. `retryable` errors may pass (timeouts, resets, 5xx, 429)."""

    def __init__(
        self,
        message: str,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1


class Interrupted(Exception):  # noqa: N818 (not an error of the download)
    """The collector is stopping (Ctrl-C): the download was cut short, its partial file kept."""


ERROR_CHARS = 300  # of a server's own words in an error: a bad status line may be 64 KB


def _one_line(exc: BaseException) -> str:
    """An error's text on one line: http.client quotes a server's bad status line with its line
    break, and each failure is one line of the console and the manifest. Characters that are not
    printable (a NUL, a terminal escape sent by whatever answered) are written as escapes, and a
    long text is cut, so the line shows what came without acting on the terminal."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in " ".join(str(exc).split()))
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + "..."


class _Clock:
    """The deadline of one download across its attempts; it starts at the first request."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end: float | None = None

    def start(self) -> None:
        if self.end is None and self.seconds > 0:
            self.end = time.monotonic() + self.seconds

    def left(self) -> float:
        """Seconds left (infinite with no deadline, or before the first request)."""
        return float("inf") if self.end is None else self.end - time.monotonic()

    def limit(self, timeout: float) -> float:
        """A socket timeout that does not run past the deadline (at least a millisecond)."""
        return max(0.001, min(timeout, self.left()))

    def expired(self, wait: float = 0.0) -> bool:
        return self.left() <= wait

    def error(self, received: int | None = None) -> FetchError:
        got = f" ({received} bytes received)" if received is not None else ""
        return FetchError(
            f"not finished within the deadline of {self.seconds:g}s for the whole download, "
            f"all attempts together{got}; the server is too slow: try again later or raise "
            "--deadline",
            False,
        )


@dataclass
class Fetched:
    url: str  # after redirects
    bytes: int
    attempts: int
    content_type: str
    resumed: bool = False  # the last attempt continued a partial file
    encoding: str = ""  # Content-Encoding of the bytes received (decoded before returning)
    length_known: bool = True  # a Content-Length or chunks: a transfer cut short is caught


class _HostGate:
    """Per host: at most `limit` requests at once, and starts at least `delay` seconds apart."""

    def __init__(self, limit: int, delay: float, sleep: Callable[[float], None]):
        self.limit, self.delay, self.sleep = max(1, limit), delay, sleep
        self._lock = threading.Lock()
        self._slots: dict[str, threading.Semaphore] = {}
        self._next: dict[str, float] = {}

    @contextmanager
    def __call__(self, host: str) -> Iterator[None]:
        with self._lock:
            slot = self._slots.setdefault(host, threading.Semaphore(self.limit))
        with slot:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next.get(host, now))
                self._next[host] = start + self.delay
            if start > now:
                self.sleep(start - now)
            yield


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Fetcher:
    """Downloads with retries. `sleep` and `rng` are injectable so tests need not wait.

    `cancel()` stops every download at once: waits end, open connections are shut, and the
    downloads raise `Interrupted` with their partial files kept."""

    def __init__(
        self,
        config: FetchConfig | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ):
        self.config = config or FetchConfig()
        self._stop = threading.Event()
        self._socks: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self.sleep = self._stop.wait if sleep is None else sleep  # cancel() ends the wait
        self.rng = rng or random.Random()
        self.gate = _HostGate(self.config.per_host, self.config.host_delay, self._pause)

    def cancel(self) -> None:
        self._stop.set()
        for sock in list(self._socks):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a read that is waiting for bytes

    def _pause(self, seconds: float) -> None:
        self.sleep(seconds)
        self._check_stop()

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise Interrupted("interrupted")

    def delay(self, failures: int, error: FetchError) -> float:
        """Retry-After when the server gave one; else backoff * 2^(n-1), capped, times a
        random factor in [0.5, 1) so that many clients do not retry in step."""
        if error.retry_after is not None:
            return error.retry_after
        base = min(self.config.backoff_max, self.config.backoff * 2 ** (failures - 1))
        return base * (0.5 + 0.5 * self.rng.random())

    def _retrying(
        self, attempt: Callable[[], Fetched | bytes], clock: _Clock
    ) -> tuple[Fetched | bytes, int]:
        failures = 0
        while True:
            self._check_stop()
            try:
                return attempt(), failures + 1
            except Interrupted:
                raise
            except FetchError as exc:
                error = exc
            except TimeoutError:
                error = clock.error() if clock.expired() else None
                error = error or FetchError("timed out waiting for the server", True)
            except ssl.SSLCertVerificationError as exc:
                error = FetchError(f"TLS certificate not trusted: {exc.verify_message}", False)
            except (OSError, http.client.HTTPException) as exc:
                error = FetchError(
                    f"connection failed: {type(exc).__name__}: {_one_line(exc)}".rstrip(": "), True
                )
            self._check_stop()  # a failure caused by cancel() is no failure of the server
            failures += 1
            if error.retry_after is not None and error.retry_after > self.config.retry_after_max:
                error = FetchError(f"{error}; the server asks to wait {error.retry_after:.0f}s "
                                   f"(more than retry_after_max {self.config.retry_after_max:.0f}s)", False, error.status)  # fmt: skip
            if not error.retryable or failures > self.config.retries:
                error.attempts = failures
                raise error
            wait = self.delay(failures, error)
            if clock.expired(wait):  # the wait alone would run past the deadline
                error = clock.error()
                error.attempts = failures
                raise error
            self._pause(wait)

    def get(self, url: str, limit: int = 16 * 2**20) -> tuple[bytes, int]:
        """A small whole body (metadata JSON) into memory, with the same retries."""

        clock = _Clock(self.config.deadline)

        def attempt() -> bytes:
            with self.gate(urlsplit(url).netloc):
                clock.start()
                conn, resp, _, sock = self._open(url, self._headers(), clock)
                try:
                    self._check_status(resp)
                    chunks: list[bytes] = []
                    size = 0
                    while size <= limit and (chunk := self._read(sock, resp, clock, size)):
                        chunks.append(chunk)
                        size += len(chunk)
                    body = b"".join(chunks)
                    length = resp.getheader("Content-Length") or ""
                finally:
                    conn.close()
            if len(body) > limit:
                raise FetchError(f"response larger than {limit} bytes", False)
            if length.isdigit() and len(body) < int(length):  # cut by the network: try again
                raise FetchError(_cut_short(len(body), int(length)), True)
            return body

        body, attempts = self._retrying(attempt, clock)
        return body, attempts  # type: ignore[return-value]

    def download(self, url: str, part: Path, size: int | None = None) -> Fetched:
        """Download `url` into `part`, continuing a partial file left by an earlier attempt.

        `size` is the file's length as listed elsewhere (archive.org's item metadata): a body
        the server sends without a Content-Length is checked against it."""
        part.parent.mkdir(parents=True, exist_ok=True)
        clock = _Clock(self.config.deadline)
        try:
            fetched, attempts = self._retrying(
                lambda: self._download_once(url, part, clock, size), clock
            )
            fetched.attempts = attempts  # type: ignore[union-attr]
            if fetched.encoding not in ("", "identity"):  # type: ignore[union-attr]
                try:
                    fetched.bytes = self._decode(part, fetched.encoding)  # type: ignore[union-attr]
                except FetchError as exc:
                    exc.attempts = attempts
                    raise
        except FetchError:
            # discarded (too large, undecodable), or cut short by a server that gave no ETag or
            # Last-Modified to resume it by: nothing partial stays behind
            if not _resumable(part, url):
                part.unlink(missing_ok=True)
                part.with_name(part.name + ".json").unlink(missing_ok=True)
            raise
        return fetched  # type: ignore[return-value]

    def _headers(self) -> dict[str, str]:
        return {
            "User-Agent": self.config.user_agent,
            "Accept-Encoding": "identity",
            "Accept": "*/*",
        }

    def _open(
        self, url: str, headers: dict[str, str], clock: _Clock
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str, socket.socket]:
        """The response after redirects, with its socket (kept: for a response that closes the
        connection, http.client drops `conn.sock` while the response still reads from it)."""
        for _ in range(self.config.max_redirects + 1):
            conn, resp, sock = self._request(url, headers, clock)
            location = resp.getheader("Location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                conn.close()
                url = urljoin(url, location)
                continue
            return conn, resp, url, sock
        raise FetchError(
            f"more than {self.config.max_redirects} redirects (a redirect loop?); give the "
            "file's final URL in the catalog",
            False,
        )

    def _request(
        self, url: str, headers: dict[str, str], clock: _Clock
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, socket.socket]:
        """One GET of `url` (a redirect is not followed); the connection is closed if it fails."""
        parts = urlsplit(url)
        if not is_http_url(url):
            raise FetchError(f"not an http(s) URL: {url}", False)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        if clock.expired():
            raise clock.error()
        conn = cls(parts.hostname, parts.port, timeout=clock.limit(self.config.connect_timeout))
        try:
            sock = self._connect(conn, parts.hostname, clock)
            sock.settimeout(clock.limit(self.config.read_timeout))
            conn.request(
                "GET",
                (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                headers=headers,
            )
            resp = self._response(conn, parts.hostname, clock)
        except BaseException:
            conn.close()
            raise
        return conn, resp, sock

    def _connect(
        self, conn: http.client.HTTPConnection, host: str | None, clock: _Clock
    ) -> socket.socket:
        """Connects within the connect timeout; the socket, known to cancel() so it can shut it."""
        try:
            conn.connect()
        except TimeoutError:
            if clock.expired():
                raise clock.error() from None
            raise FetchError(
                f"no connection to {host} within {self.config.connect_timeout}s", True
            ) from None
        sock = conn.sock
        self._socks.add(sock)
        self._check_stop()
        return sock

    def _response(
        self, conn: http.client.HTTPConnection, host: str | None, clock: _Clock
    ) -> http.client.HTTPResponse:
        """The response to the request sent, within the read timeout and the deadline."""
        try:
            return conn.getresponse()
        except TimeoutError:
            if clock.expired():
                raise clock.error() from None
            raise FetchError(
                f"no answer from {host} within the read timeout of "
                f"{self.config.read_timeout:g}s (the request was sent, no response "
                "came); the server is stalled: try again later or raise --read-timeout",
                True,
            ) from None

    def _check_status(self, resp: http.client.HTTPResponse) -> None:
        if resp.status in RETRY_STATUSES:
            wait = (
                parse_retry_after(resp.getheader("Retry-After"))
                if resp.status in (429, 503)
                else None
            )
            raise FetchError(f"HTTP {resp.status} {resp.reason}", True, resp.status, wait)
        if resp.status not in (200, 206):
            hint = (
                "; the file is not at this URL: check the catalog entry (its id or url)"
                if resp.status in (404, 410)
                else ""
            )
            raise FetchError(f"HTTP {resp.status} {resp.reason}{hint}", False, resp.status)

    def _download_once(self, url: str, part: Path, clock: _Clock, size: int | None) -> Fetched:
        meta_path = part.with_name(part.name + ".json")
        meta = read_json(meta_path)
        # a partial file of another URL, or one that cannot be checked: start again
        offset = part.stat().st_size if _resumable(part, url) else 0
        headers = self._resume_headers(offset, meta)
        with self.gate(urlsplit(url).netloc):
            clock.start()
            conn, resp, final, sock = self._open(url, headers, clock)
            try:
                resumed, validator = self._check_response(resp, part, offset, meta)
                start = offset if resumed else 0
                expected, listed, encoding = _body_size(resp, start, size)
                self._check_size_limit(part, expected if expected is not None else listed)
                _write_json(meta_path, {"url": url, "validator": validator})
                received = self._stream(sock, resp, part, start, clock)
                _check_not_longer(sock, resp, part, expected, received)
            finally:
                conn.close()
        chunked = bool(getattr(resp, "chunked", False))
        _check_complete(part, received, expected, listed, chunked)
        known = expected is not None or chunked or listed is not None
        ctype = resp.getheader("Content-Type") or ""
        return Fetched(final, received, 1, ctype, resumed, encoding, known)

    def _resume_headers(self, offset: int, meta: dict) -> dict[str, str]:
        """The request's headers, asking for the rest of a partial file of `offset` bytes."""
        headers = self._headers()
        if offset:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = meta["validator"]  # if the file changed, send it whole
        return headers

    def _check_response(
        self, resp: http.client.HTTPResponse, part: Path, offset: int, meta: dict
    ) -> tuple[bool, str]:
        """Whether the server sent only the rest of the partial file, and the file's validator
        (ETag or Last-Modified). A resume it refused or got wrong deletes the partial file."""
        if resp.status == 416 and offset:
            part.unlink(missing_ok=True)
            raise FetchError("server refused the resume range; starting again", True, 416)
        self._check_status(resp)
        resumed = resp.status == 206
        if resumed and _range_start(resp.getheader("Content-Range")) != offset:
            part.unlink(missing_ok=True)
            raise FetchError("server resumed at the wrong byte; starting again", True, 206)
        validator = resp.getheader("ETag") or resp.getheader("Last-Modified") or ""
        if resumed and validator != meta.get("validator"):
            part.unlink(missing_ok=True)  # the rest of another version of the file
            raise FetchError(
                f"the file changed on the server since the partial download "
                f"({meta.get('validator')} is now {validator or 'not given'}) but the "
                "server sent only the rest of it; starting again",
                True,
                206,
            )
        return resumed, validator

    def _check_size_limit(self, part: Path, total: int | None) -> None:
        """Refuses a file known to be larger than max_bytes before any of it is read."""
        if total is not None and total > self.config.max_bytes:
            part.unlink(missing_ok=True)
            raise FetchError(
                f"the file is {total} bytes, more than the limit of "
                f"{self.config.max_bytes} (raise --max-mb to take it)",
                False,
            )

    def _decode(self, part: Path, encoding: str) -> int:
        """Undo a gzip or deflate Content-Encoding (sent though identity was asked for) in
        place, streamed and within max_bytes; a body that does not decode is deleted."""
        if encoding not in ("gzip", "x-gzip", "deflate"):
            part.unlink(missing_ok=True)
            raise FetchError(f"the server sent the file as Content-Encoding: {encoding}, "
                             "which cannot be decoded", False)  # fmt: skip
        tmp = part.with_name(part.name + ".decoded")
        # gzip: a gzip header; deflate: a zlib header (what servers send), or raw deflate
        wbits = 31 if "gzip" in encoding else 15
        with open(part, "rb") as f:
            if wbits == 15 and (len(head := f.read(2)) < 2 or int.from_bytes(head) % 31):
                wbits = -15
        inflate, size = zlib.decompressobj(wbits), 0
        try:
            with open(part, "rb") as src, open(tmp, "wb") as dst:
                while block := src.read(_CHUNK):
                    while block:  # at most _CHUNK bytes out per call: a small bomb stays small
                        data = inflate.decompress(block, _CHUNK)
                        block = inflate.unconsumed_tail
                        size += len(data)
                        if size > self.config.max_bytes:
                            raise FetchError(f"more than the limit of {self.config.max_bytes} "
                                             "bytes once decompressed; abandoned (raise --max-mb "
                                             "to take it)", False)  # fmt: skip
                        dst.write(data)
                if not inflate.eof:
                    raise FetchError(f"the {encoding} body ends before its end", False)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, part)
        except zlib.error as exc:
            part.unlink(missing_ok=True)
            raise FetchError(f"the {encoding} body does not decode ({exc})", False) from None
        except FetchError:
            part.unlink(missing_ok=True)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return size

    def _read(
        self, sock: socket.socket, resp: http.client.HTTPResponse, clock: _Clock, received: int
    ) -> bytes:
        """The next bytes that have arrived (b"" at the end), within the read timeout and the
        deadline. read1 returns what has arrived, so the deadline is checked as bytes trickle
        in; read(n) would wait for all n bytes however long they take."""
        if clock.expired():
            raise clock.error(received)
        sock.settimeout(clock.limit(self.config.read_timeout))
        try:
            chunk = resp.read1(_CHUNK)
        except TimeoutError:
            self._check_stop()
            if clock.expired():
                raise clock.error(received) from None
            raise FetchError(
                f"no bytes for {self.config.read_timeout:g}s (the read timeout) after {received} "
                "bytes; the server stalled: try again later or raise --read-timeout",
                True,
            ) from None
        except (OSError, http.client.HTTPException):
            self._check_stop()
            raise
        self._check_stop()  # b"" from a connection that cancel() shut is not the end of the file
        return chunk

    def _stream(
        self,
        sock: socket.socket,
        resp: http.client.HTTPResponse,
        part: Path,
        start: int,
        clock: _Clock,
    ) -> int:
        received = start
        with open(part, "ab" if start else "wb") as f:
            while chunk := self._read(sock, resp, clock, received):
                received += len(chunk)
                if received > self.config.max_bytes:
                    f.close()
                    part.unlink(missing_ok=True)
                    raise FetchError(
                        f"more than the limit of {self.config.max_bytes} bytes; abandoned "
                        "(raise --max-mb to take it)",
                        False,
                    )
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        return received


def is_http_url(url: str) -> bool:
    """An http:// or https:// address with a host name: what the fetcher can download."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _more_waiting(sock: socket.socket, resp: http.client.HTTPResponse) -> bool:
    """Bytes that have already arrived after a body of Content-Length (the connection was not
    reused, so nothing may follow). Only what is there now is seen: bytes still on the way are
    not waited for."""
    try:
        sock.setblocking(False)
        return bool(resp.fp.peek(1)) if resp.fp else False
    except (OSError, ValueError):
        return False


def _body_size(
    resp: http.client.HTTPResponse, start: int, size: int | None
) -> tuple[int | None, int | None, str]:
    """Where the body should end by its Content-Length (None without one), the listed `size`
    that stands in for a missing length (else None), and the body's Content-Encoding."""
    length = resp.getheader("Content-Length")
    expected = start + int(length) if length and length.isdigit() else None
    encoding = (resp.getheader("Content-Encoding") or "").strip().lower()
    # the listed size stands in for a missing length; it is of the decoded file, so
    # not for an encoded body (whose own end the decoder checks)
    listed = size if expected is None and encoding in ("", "identity") else None
    return expected, listed, encoding


def _check_not_longer(
    sock: socket.socket,
    resp: http.client.HTTPResponse,
    part: Path,
    expected: int | None,
    received: int,
) -> None:
    """Refuses a body followed by more bytes than its Content-Length gave."""
    if expected is not None and received == expected and _more_waiting(sock, resp):
        part.unlink(missing_ok=True)  # Content-Length is wrong: the file is cut
        raise FetchError(
            f"the server sent more than its Content-Length of {resp.getheader('Content-Length')} "
            "bytes, so the length is wrong and the file may be cut short",
            False,
        )


def _check_complete(
    part: Path, received: int, expected: int | None, listed: int | None, chunked: bool
) -> None:
    """Refuses a body shorter than its Content-Length, or not of the listed size without one."""
    if expected is not None and received < expected:
        raise FetchError(_cut_short(received, expected), True)
    if listed is not None and received != listed:
        _check_listed_size(part, received, listed, chunked)


def _resumable(part: Path, url: str) -> bool:
    """A partial file a later attempt can continue: one of this URL, with the validator (ETag
    or Last-Modified) that tells whether the rest the server sends is of the same file."""
    meta = read_json(part.with_name(part.name + ".json"))
    return part.exists() and meta.get("url") == url and bool(meta.get("validator"))


def _cut_short(received: int, expected: int) -> str:
    return (
        f"cut short: the connection closed after {received} of the {expected} bytes its "
        "Content-Length gave"
    )


def _check_listed_size(part: Path, received: int, listed: int, chunked: bool) -> None:
    """A body sent without a Content-Length whose size is not the listed one. Fewer bytes on a
    connection that closed to end the body is a cut, retried (and resumed where it can be);
    else the server sent a whole file of another size: its bytes are not kept."""
    if received < listed and not chunked:
        raise FetchError(
            f"cut short: the connection closed after {received} of the {listed} bytes the "
            "item's metadata lists (the server gave no Content-Length)",
            True,
        )
    part.unlink(missing_ok=True)
    raise FetchError(
        f"size mismatch: the server sent {received} bytes, the item's metadata lists {listed}; "
        "the file may have changed since its metadata was read: run again with --retry-failed",
        False,
    )


def _range_start(value: str | None) -> int | None:
    found = re.match(r"bytes (\d+)-", value or "")
    return int(found.group(1)) if found else None


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data))
