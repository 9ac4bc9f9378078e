"""Tracking costs: how long the tracker takes to open in each W&B situation (including the
fallbacks, against a local stand-in server), and what one logged row costs. With
--network-drop instead: an online run whose network drops once the server holds its first rows,
for 10 s, 60 s or for good (the tests' working W&B stand-in), and what that costs the loop and
`finish` and what reaches the server. About 5 minutes.

    python benchmarks/tracking_bench.py [--rows 2000] [--network-drop]

Each case runs in a fresh process with a sealed HOME, so W&B state never carries over and the
user's login is never read.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tracking"))
from wandb_testkit import FAKE_KEY, WorkingWandb, drive, sealed_env  # noqa: E402

CASE = r"""
import json, sys, time
from pathlib import Path
t0 = time.monotonic()
from hellolondon.config import build_config
from hellolondon.tracking.setup import open_tracker
cfg = build_config("tiny", overrides=sys.argv[3:])
cfg.tracking.run_name = "bench"
t1 = time.monotonic()
tracker = open_tracker(cfg, Path(sys.argv[1]), console=lambda line: None)
t2 = time.monotonic()
rows = int(sys.argv[2])
row = {"train/loss": 3.0, "train/lr": 1e-4, "train/mfu": 40.0, "train/iter": 0, "train/dt_ms": 120.0,
       "train/tokens_per_sec": 1e5, "train/samples_per_sec": 100.0, "train/tokens_seen": 0,
       "train/epoch": 0.0, "train/grad_norm": 1.0}
for step in range(rows):
    tracker.log({**row, "train/iter": step}, step)
t3 = time.monotonic()
tracker.finish()
t4 = time.monotonic()
print(json.dumps({"open_s": t2 - t1, "per_row_us": 1e6 * (t3 - t2) / max(1, rows), "finish_s": t4 - t3}))
"""


class Stand_in:  # noqa: N801 -- a tiny HTTP stand-in for the W&B API
    def __init__(self, mode: str) -> None:
        self.mode, self.sock = mode, socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        try:
            conn.settimeout(5)
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = [
                int(h.split(b":")[1])
                for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length:")
            ]
            while length and len(body) < length[0]:
                body += conn.recv(65536)
            data = head + body
        except OSError:
            return
        viewer = b"query Viewer" in data or self.mode == "401"
        if self.mode == "hang" or (self.mode == "viewer-then-hang" and not viewer):
            self.held.append(conn)
            return
        status, body = (
            ("401 Unauthorized", b"{}")
            if self.mode == "401"
            else ("200 OK", b'{"data":{"viewer":{"id":"1","username":"u","entity":"u"}}}')
        )
        conn.sendall(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def free_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    return url


def run_case(name: str, rows: int, env_extra: dict[str, str], overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
        env.update(
            HOME=str(home),
            NETRC=str(home / ".netrc"),
            WANDB_CONFIG_DIR=str(home / "cfg"),
            WANDB_DATA_DIR=str(home / "data"),
            WANDB_CACHE_DIR=str(home / "cache"),
            **env_extra,
        )
        t0 = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", CASE, str(Path(tmp) / "runs" / "bench"), str(rows), *overrides],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        wall = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"{name}: {out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def network_drop(down_s: float | None) -> dict:
    """21 rows, one a second (W&B's file stream sends every 15 s); the drop starts once the
    server holds the first ones."""
    server = WorkingWandb()
    with tempfile.TemporaryDirectory() as tmp:
        env = sealed_env(Path(tmp), WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=server.url)
        (Path(tmp) / "runs").mkdir()
        done: dict = {}
        opts = {"stop": 40, "every": 2, "pause_s": 1.0}
        loop = threading.Thread(
            target=lambda: done.update(out=drive(Path(tmp) / "runs" / "n", env, 300, **opts))
        )
        loop.start()
        while not server.steps() and loop.is_alive():
            time.sleep(0.05)
        held, cut_at = len(server.steps()), time.monotonic()
        server.cut(down_s)
        loop.join()
    server.close()
    out = done["out"]
    if out.returncode != 0:
        raise SystemExit(f"network drop {down_s}: {out.stderr}")
    arrived = server.finished_at - cut_at if server.finished_at else None
    return {**out.result, "held": held, "got": len(server.steps()), "arrived_s": arrived}


def network_drops() -> None:
    print(
        f"{'drop':10} {'slowest call s':>14} {'finish s':>9} {'rows at drop':>12} {'rows got':>9} {'all in, s after drop':>21}"
    )
    for down_s in (10.0, 60.0, None):
        r = network_drop(down_s)
        arrived = f"{r['arrived_s']:.1f}" if r["arrived_s"] is not None else "never"
        print(
            f"{f'{down_s:.0f} s' if down_s else 'for good':10} {r['slowest_call_s']:14.3f} {r['finish_s']:9.1f} {r['held']:12d} {r['got']:6d}/21 {arrived:>21}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=2000, help="rows logged per case (default 2000)"
    )
    parser.add_argument(
        "--network-drop", action="store_true", help="the network-drop cases instead (~5 min)"
    )
    args = parser.parse_args()
    if args.network_drop:
        return network_drops()
    key = "0123456789abcdef" * 2 + "fedcba98"
    cases: list[tuple[str, dict[str, str], list[str], str | None]] = [
        ("disabled (JSONL only)", {}, ["tracking.wandb_mode=disabled"], None),
        ("offline, asked for", {}, ["tracking.wandb_mode=offline"], None),
        ("offline, no API key", {}, [], None),
        ("key, connection refused", {"WANDB_API_KEY": key}, [], "refused"),
        ("key, 401 from server", {"WANDB_API_KEY": key}, [], "401"),
        ("key, server silent", {"WANDB_API_KEY": key}, [], "hang"),
        ("key, silent after key check", {"WANDB_API_KEY": key}, [], "viewer-then-hang"),
    ]
    print(f"{'case':32} {'open s':>7} {'per row us':>11} {'finish s':>9} {'process s':>10}")
    for name, env_extra, overrides, server_mode in cases:
        server = Stand_in(server_mode) if server_mode not in (None, "refused") else None
        if server_mode:
            env_extra = {**env_extra, "WANDB_BASE_URL": server.url if server else free_url()}
        try:
            r = run_case(name, args.rows, env_extra, overrides)
        finally:
            if server:
                server.close()
        print(
            f"{name:32} {r['open_s']:7.2f} {r['per_row_us']:11.0f} {r['finish_s']:9.2f} {r['process_s']:10.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
