"""Shared by the W&B tests: a sealed environment (never the user's ~/.netrc, W&B settings or
servers), a scripted fake W&B server on localhost, the tracker driver, W&B's own log reader."""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DRIVER = Path(__file__).with_name("tracker_driver.py")
GUIDE_METRICS = {"train/loss", "train/lr", "train/mfu", "train/iter", "train/dt_ms"}
GUIDE_EVAL = {"eval/train_loss", "eval/val_loss", "eval/val_ppl", "eval/iter"}
FAKE_KEY = "0123456789abcdef" * 2 + "fedcba98"  # 40 characters: the shape of a W&B key


def sealed_env(root: Path, **extra: str) -> dict[str, str]:
    """os.environ without any WANDB_* setting, with HOME and every W&B folder inside `root`."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        HOME=str(home),
        NETRC=str(home / ".netrc"),
        WANDB_CONFIG_DIR=str(home / ".config" / "wandb"),
        WANDB_CACHE_DIR=str(home / ".cache" / "wandb"),
        WANDB_DATA_DIR=str(home / ".local" / "wandb"),
        WANDB_DIR=str(root / "wandb-default"),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Driven:
    returncode: int
    stdout: str
    stderr: str
    result: dict
    wall_s: float  # the whole process, exit included

    def lines(self, prefix: str = "wandb:") -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith(prefix)]


def drive(run_dir: Path, env: dict[str, str], timeout: float = 60, *argv: str, **opts) -> Driven:
    """Run one scenario of the tracker driver in a fresh process."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(DRIVER), str(run_dir), json.dumps(opts), *argv],
        env=env,
        cwd=run_dir.parent.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    return Driven(proc.returncode, proc.stdout, proc.stderr, result, time.monotonic() - t0)


def leet(path: Path, env: dict[str, str], summary: bool = False) -> list[dict] | dict:
    """W&B's own reader of its run files: records (or the run summary) of a run folder."""
    args = [
        sys.executable,
        "-m",
        "wandb",
        "leet",
        "inspect",
        "--json",
        *(["--summary"] if summary else []),
        str(path),
    ]
    out = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return (
        json.loads(out)
        if summary
        else [json.loads(line) for line in out.splitlines() if line.strip()]
    )


def history(path: Path, env: dict[str, str]) -> list[dict]:
    return [r["history"]["item"] for r in leet(path, env) if r["type"] == "history"]


def offline_dirs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


class FakeWandb:
    """A W&B API stand-in on localhost. Modes: 401/403/404 (every request), hang (accepts and
    never answers), badjson (200 with a cut-off JSON body), viewer-then-404 / viewer-then-500 /
    viewer-then-hang (the key check passes, the run start fails)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.requests: list[bytes] = []
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> bytes:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                while len(body) < int(line.split(b":")[1]):
                    body += conn.recv(65536)
        return body

    def _handle(self, conn: socket.socket) -> None:
        if self.mode == "hang":
            self.held.append(conn)
            return
        try:
            body = self._read(conn)
        except OSError:
            return
        self.requests.append(body)
        if self.mode.startswith("viewer-then") and b"query Viewer" in body:
            return self._reply(
                conn, "200 OK", {"data": {"viewer": {"id": "1", "username": "u", "entity": "u"}}}
            )
        if self.mode == "viewer-then-hang":
            self.held.append(conn)
            return
        if self.mode == "badjson":
            return self._reply(conn, "200 OK", b'{"data": {"viewer": ')
        statuses = {"401": "Unauthorized", "403": "Forbidden", "500": "Internal Server Error"}
        code = next((c for c in statuses if self.mode.endswith(c)), "404")
        status = f"{code} {statuses.get(code, 'Not Found')}"
        self._reply(
            conn,
            status,
            {"errors": [{"message": "project not found" if "404" in status else "denied"}]},
        )

    @staticmethod
    def _reply(conn: socket.socket, status: str, payload: dict | bytes) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        try:
            conn.sendall(head.encode() + body)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for conn in self.held:
            conn.close()


def refused_url() -> str:
    """A localhost address where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


class WorkingWandb:
    """A W&B server stand-in that accepts a run, as far as wandb's own client needs one: the key
    check, the run's start, config updates, alerts, file uploads and the file stream. It keeps
    every history row it received (`rows`, by step) and whether the run said it ended.
    `cut(seconds)` drops the network: every request is met with a reset connection for that
    long, or for good with None."""

    def __init__(self) -> None:
        self.rows: dict[int, dict] = {}
        self.down_until = 0.0  # time.monotonic() until which every connection is reset
        self.resets = 0  # requests met with a reset
        self.alerts: list[str] = []
        self.exitcode: int | None = None
        self.finished_at: float | None = None  # time.monotonic() of the file stream's last post
        self.lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.http.daemon_threads = True
        self.http.handle_error = lambda request, address: None  # resets are expected
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def handle_one_request(self) -> None:
                # checked once the request is read: a kept-alive connection waits in it
                self.raw_requestline = self.rfile.readline(65537)
                if not self.raw_requestline:
                    self.close_connection = True
                elif time.monotonic() < server.down_until:
                    server.resets += 1
                    # linger 0: close sends a TCP reset, as a dropped link or proxy does
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                elif self.parse_request():
                    getattr(self, f"do_{self.command}")()
                    self.wfile.flush()

            def do_PUT(self) -> None:  # an uploaded run file
                self._body()
                self._send({})

            def do_POST(self) -> None:
                body = json.loads(self._body() or b"{}")
                if self.path.endswith("/file_stream"):
                    server._stream(body)
                    return self._send({"exitcode": None, "limits": {}})
                self._send({"data": server._graphql(body, self.path)})

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def cut(self, seconds: float | None) -> None:
        """Reset every connection from now on, for `seconds`, or for good."""
        self.down_until = math.inf if seconds is None else time.monotonic() + seconds

    def steps(self) -> list[int]:
        with self.lock:
            return sorted(self.rows)

    def _stream(self, body: dict) -> None:
        history = body.get("files", {}).get("wandb-history.jsonl", {})
        with self.lock:
            for line in history.get("content", []):
                row = json.loads(line)
                self.rows[row["_step"]] = row
            if body.get("complete"):
                self.exitcode = body.get("exitcode")
                self.finished_at = time.monotonic()

    def _graphql(self, body: dict, path: str) -> dict:
        query, names = body.get("query", ""), body.get("variables") or {}
        entity = {"id": "e1", "name": names.get("entity") or "team"}
        project = {"id": "p1", "name": names.get("project") or "helloLondon", "entity": entity}
        if "viewer" in query:
            return {"viewer": {"id": "1", "username": "u", "entity": "team", "flags": "{}"}}
        if "RunResumeStatus" in query:
            return {"model": {**project, "bucket": None}}
        if "UpsertBucket" in query:
            bucket = {
                "id": "b1",
                "name": names.get("name"),
                "displayName": names.get("displayName") or names.get("name"),
                "description": "",
                "config": names.get("config") or "{}",
                "sweepName": None,
                "project": project,
                "historyLineCount": 0,
            }
            return {"upsertBucket": {"bucket": bucket, "inserted": True}}
        if "CreateRunFiles" in query:
            files = [{"name": f, "uploadUrl": f"{self.url}/upload/{f}"} for f in names["files"]]
            return {"createRunFiles": {"runID": "b1", "uploadHeaders": [], "files": files}}
        if "serverInfo" in query:
            return {"serverInfo": {"features": []}}
        if "Alert" in query:
            self.alerts.append(names.get("title", ""))
            return {"notifyScriptableRunAlert": {"success": True}}
        return {"entity": {"organization": None}}

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
