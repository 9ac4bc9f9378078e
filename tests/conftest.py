"""Shared fixtures: a small real corpus, tokenizer and token files, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach W&B's servers or the user's settings, and stay on the CPU. Tiny models run
# faster on one thread, and a busy machine's spinning OpenMP threads would slow them down.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")


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
