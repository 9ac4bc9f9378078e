"""Shared fixtures: a small real corpus, tokenizer and token files, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach W&B's servers or the user's settings, and stay on the CPU.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

TINY_MODEL = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32"]
TINY_TRAIN = [
    "train.batch_size=4", "train.max_iters=12", "train.warmup_iters=2", "train.eval_interval=6",
    "train.eval_iters=2", "train.log_interval=1", "train.ckpt_interval=6", "train.sample_interval=0",
    "tracking.wandb_mode=disabled", "monitor.enabled=false",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared folder (train.bin, val.bin, meta.json) from 12 sample documents, vocab 512.
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
    train_tokenizer((d.text for d in docs), root / "tokenizer", vocab_size=512)
    prepare(root / "documents.jsonl", root / "tokenizer", root / "data", workers=1)
    return root / "data"


def tiny_config(data: Path, out: Path, *extra: str):
    from hellolondon.config import build_config

    return build_config("tiny", overrides=[*TINY_MODEL, *TINY_TRAIN, f"data.data_dir={data}", f"out_dir={out}", *extra])
