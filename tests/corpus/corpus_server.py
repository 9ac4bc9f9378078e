"""A local HTTP server with scripted faults, for the collector's tests (no network)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def gutenberg_book(title: str, author: str, paragraphs: int = 40) -> bytes:
    """A small book in Project Gutenberg's layout, with a header the collector can check."""
    body = "\n\n".join(
        f"Paragraph {i} of {title}. The citizens walked by the river in the evening, and the "
        "watch was set at the gates of the city as the custom was in those days."
        for i in range(paragraphs)
    )
    return (
        f"The Project Gutenberg eBook of {title}\r\n\r\nTitle: {title}\r\n\r\nAuthor: {author}\r\n\r\n"
        f"Language: English\r\n\r\n*** START OF THE PROJECT GUTENBERG EBOOK {title.upper()} ***\r\n\r\n"
        f"{body}\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK {title.upper()} ***\r\n\r\nlicence text\r\n"
    ).encode()


class Server:
    """Routes map a path to a list of behaviours, used one per request (the last one repeats):

    ("ok", body[, etag])          200 with Content-Length; a Range request gets 206 from there
                                  (If-Range is not looked at: the body may be another version)
    ("ok-ignore-range", body)     200 with the whole body even when a range was asked for
    ("status", code, headers)     that status with a short body and the given headers
    ("reset", body, n)            headers for the whole body, n bytes, then a TCP reset
    ("short", body, n[, etag])    headers for the whole body, n bytes, then a clean close
                                  (etag "" sends no ETag)
    ("slow", body, seconds)       wait before answering at all
    ("drip", body, n, seconds)    headers for the whole body, then n bytes every `seconds`
    ("redirect", location)        302 to location
    ("html", page)                200 text/html
    ("encoded", data, encoding)   200 with data as it is and that Content-Encoding
    ("long", body, n)             Content-Length n bytes short of the body, then the whole body
    ("raw", data)                 data as it is, in place of an HTTP answer, then close
    """

    def __init__(self) -> None:
        self.routes: dict[str, list[tuple]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                with server.lock:
                    server.requests.append((self.path, dict(self.headers)))
                    script = server.routes.get(self.path, [("status", 404, {})])
                    action = script.pop(0) if len(script) > 1 else script[0]
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    server.serve(self, action)
                finally:
                    with server.lock:
                        server.active -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def hits(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p == path]

    def serve(self, h: BaseHTTPRequestHandler, action: tuple) -> None:
        kind = action[0]
        if kind == "status":
            h.send_response(action[1])
            for k, v in action[2].items():
                h.send_header(k, v)
            h.send_header("Content-Length", "5")
            h.end_headers()
            h.wfile.write(b"error")
        elif kind == "redirect":
            h.send_response(302)
            h.send_header("Location", action[1])
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif kind == "long":
            h.send_response(200)
            h.send_header("Content-Length", str(len(action[1]) - action[2]))
            h.end_headers()
            h.wfile.write(action[1])
            h.close_connection = True
        elif kind == "raw":
            h.wfile.write(action[1])
            h.close_connection = True
        elif kind == "encoded":
            h.send_response(200)
            h.send_header("Content-Encoding", action[2])
            h.send_header("Content-Length", str(len(action[1])))
            h.end_headers()
            h.wfile.write(action[1])
        elif kind == "html":
            self._send(h, 200, action[1], "text/html; charset=utf-8")
        elif kind == "slow":
            time.sleep(action[2])
            self._send(h, 200, action[1])
        elif kind == "drip":
            body, n, every = action[1], action[2], action[3]
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.send_header("ETag", '"v1"')
            h.end_headers()
            try:
                for i in range(0, len(body), n):
                    h.wfile.write(body[i : i + n])
                    h.wfile.flush()
                    time.sleep(every)
            except OSError:  # the client gave up
                pass
            h.close_connection = True
        elif kind in ("reset", "short"):
            body, n = action[1], action[2]
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            etag = action[3] if len(action) > 3 else '"v1"'
            if etag:
                h.send_header("ETag", etag)
            h.end_headers()
            h.wfile.write(body[:n])
            h.wfile.flush()
            if kind == "reset":  # SO_LINGER 0: close() sends RST instead of FIN
                h.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            h.close_connection = True
        elif kind in ("ok", "ok-ignore-range"):
            body = action[1]
            rng = h.headers.get("Range")
            if rng and kind == "ok":
                start = int(rng.split("=")[1].split("-")[0])
                h.send_response(206)
                h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                h.send_header("Content-Length", str(len(body) - start))
                h.send_header("ETag", action[2] if len(action) > 2 else '"v1"')
                h.end_headers()
                h.wfile.write(body[start:])
            else:
                self._send(h, 200, body)

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"
    ) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("ETag", '"v1"')
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
