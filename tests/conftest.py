"""Shared fixtures: a small real corpus, tokenizer and token files, made once per test session."""

from __future__ import annotations

import atexit
import fcntl
import os
import pickle
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Tests never reach W&B's servers or the user's settings, and stay on the CPU. Tiny models run
# faster on one thread, and a busy machine's spinning OpenMP threads would slow them down.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# W&B's saved settings (`wandb offline` writes a mode there) are the tests' own, not the user's.
os.environ["WANDB_CONFIG_DIR"] = tempfile.mkdtemp(prefix="wandb-config-")
atexit.register(shutil.rmtree, os.environ["WANDB_CONFIG_DIR"], ignore_errors=True)
# A shell starts a background job (`cmd &` in a script) with SIGINT ignored, and every process
# the tests start would inherit that: the tests of Ctrl-C need what a terminal gives.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items) -> None:
    """The slow end-to-end tests first (in their order, then the rest in theirs): on two workers
    a test of minutes started last keeps one worker busy long after the other has finished.
    scripts/test.sh hands the tests out one at a time (`--maxschedchunk 1`), so that they
    spread over both workers instead of going in one block to the first."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def made_once(tmp_path_factory) -> Callable[[str, Callable[[Path], Any]], Any]:
    """`made_once(name, make)`: what `make(folder)` returns, made once in the whole test run.
    pytest-xdist gives each test process module and session fixtures of its own, and hands a
    module's tests to both, so an expensive fixture would be made twice (the two-process
    reference run of tests/test_distributed.py took 33 s and 42 s). The first process to ask
    makes it, in a folder both see; the other waits for it and reads the result back. Treat
    the folder as read-only. `make` returns something pickle can save."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above the workers' own
    shared = base / "made-once"
    shared.mkdir(exist_ok=True)

    def made(name: str, make: Callable[[Path], Any]) -> Any:
        folder, saved = shared / name, shared / f"{name}.pickle"
        with open(shared / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed, or if this process dies
            if saved.exists():
                return pickle.loads(saved.read_bytes())
            shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
            folder.mkdir()
            value = make(folder)
            saved.write_bytes(pickle.dumps(value))
            return value

    return made


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared folder (train.bin, val.bin, meta.json) from 12 sample documents, vocab 512, without the historical terms (they need a larger vocabulary).
    Its tokenizer is `tiny_data.parent / "tokenizer"`, its corpus `tiny_data.parent / "documents.jsonl"`."""
    from hellolondon.corpus.documents import Document, write_documents
    from hellolondon.corpus.sample import sample_documents
    from hellolondon.prepare import prepare
    from hellolondon.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    docs = []
    for i, doc in enumerate(sample_documents()):
        if i >= 12:
            break
        docs.append(Document(**{**doc.__dict__, "text": doc.text[:20000]}))
    write_documents(root / "documents.jsonl", docs)
    train_tokenizer((d.text for d in docs), root / "tokenizer", vocab_size=512, historical=False)
    prepare(root / "documents.jsonl", root / "tokenizer", root / "data", workers=1)
    return root / "data"


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """A finished tiny training run folder (checkpoints, tokenizer, config.json) on `tiny_data`,
    for evaluation, generation and export tests. Treat it as read-only: copy it to change it."""
    from tinyrun import tiny_config

    from hellolondon.train.loop import train

    out = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(
        tiny_data,
        out,
        "tracking.run_name=trained",
        "train.max_iters=40",
        "train.lr=3e-3",
        "train.eval_interval=20",
        "train.ckpt_interval=20",
    )
    train(cfg, log=lambda *_: None)
    return out / "trained"
