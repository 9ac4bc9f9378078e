"""Shared by the W&B tests: a sealed environment (never the user's ~/.netrc, W&B settings or
servers), a scripted fake W&B server on localhost, the tracker driver, W&B's own log reader."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
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
