"""Loss, perplexity and bits-per-byte over the whole held-out split.

Every token of `val.bin` after the first is scored exactly once. Windows of the model's context
length slide over the token stream with a stride: the first window scores all its tokens, each
later one only its last `stride` tokens, so every scored token sees at least
`context - stride` tokens before it (the usual sliding-window perplexity). The stream is scored
as training saw it, documents separated by `<|endoftext|>`.

Bits-per-byte compares models with different tokenizers: the summed negative log-likelihood in
nats divided by ln 2 times the UTF-8 bytes of the text scored. Control tokens (the document
separator) have no bytes, so they are left out of bits-per-byte (as nanochat does) but kept in
the per-token loss and perplexity, which then match the training loop's val loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import pre_tokenizers

from hellolondon.errors import UserError
from hellolondon.hardware import has_bf16_units
from hellolondon.model import GPT
from hellolondon.prepare import check_token_ids, open_tokens, token_file
from hellolondon.progress import progress_bar
from hellolondon.tokenizer import Tokenizer
from hellolondon.units import perplexity

GROUPS = ("period", "source", "category")
LOGITS_BUDGET = 1 << 24  # floats of logits per batch (64 MB), whatever the model size


def token_bytes(tok: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each token stands for; 0 for control tokens. A byte-level token's string
    has one character per byte, so its length is its byte count."""
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    special = {i for i, t in tok.hf.get_added_tokens_decoder().items() if t.special}
    out = np.zeros(tok.vocab_size, dtype=np.int64)
    for i in range(tok.vocab_size):
        s = tok.id_to_token(i)
        if i in special or s is None:
            continue
        out[i] = len(s) if set(s) <= alphabet else len(tok.decode([i]).encode("utf-8"))
    return out


def windows(n_tokens: int, context: int, stride: int) -> Iterator[tuple[int, int]]:
    """(start, first scored target) for each window over a stream of `n_tokens`. A window's
    inputs are tokens[start : start + context] and its targets the tokens one further on; the
    last window is moved back to end at the stream's end, so every window is full length."""
    if n_tokens < 2:
        return
    span = min(context, n_tokens - 1)
    done = 1  # targets below this index are scored (index 0 has no context)
    start = 0
    while done < n_tokens:
        start = min(start, n_tokens - 1 - span)
        yield start, done
        done = start + span + 1
        start += stride


class Tally:
    """Sums per document (nats, nats over text tokens, tokens, bytes); the last slot holds
    tokens outside every document span."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray, tbytes: np.ndarray) -> None:
        self.starts, self.ends, self.tbytes = starts, ends, tbytes
        n = len(starts) + 1
        self.nats, self.text_nats = np.zeros(n), np.zeros(n)
        self.tokens, self.bytes = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)

    def add(self, pos: np.ndarray, targets: np.ndarray, nll: np.ndarray) -> None:
        doc = np.searchsorted(self.starts, pos, side="right") - 1
        outside = (doc < 0) | (pos >= self.ends[np.maximum(doc, 0)]) if len(self.starts) else True
        doc = np.where(outside, len(self.starts), doc)
        b = self.tbytes[targets]
        n = len(self.starts) + 1
        self.nats += np.bincount(doc, weights=nll, minlength=n)
        self.text_nats += np.bincount(doc, weights=np.where(b > 0, nll, 0.0), minlength=n)
        self.tokens += np.bincount(doc, minlength=n)
        self.bytes += np.bincount(doc, weights=b, minlength=n).astype(np.int64)


def _stats(nats: float, text_nats: float, tokens: int, nbytes: int) -> dict[str, Any]:
    loss = nats / tokens if tokens else float("nan")
    return {
        "tokens": int(tokens),
        "bytes": int(nbytes),
        "loss": loss,
        "ppl": perplexity(loss) if tokens else float("nan"),
        "bpb": text_nats / (math.log(2) * nbytes) if nbytes else float("nan"),
    }


def _by_group(t: Tally, spans: list[dict]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for key in GROUPS:
        labels = [str(s.get(key) or "unknown") for s in spans]
        if not any(label != "unknown" for label in labels):
            continue  # no metadata of this kind: no breakdown
        groups: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            if t.tokens[i]:  # a document past --max-tokens was not scored: no row for it alone
                groups.setdefault(label, []).append(i)
        out[f"by_{key}"] = {
            label: _stats(
                t.nats[idx].sum(), t.text_nats[idx].sum(), t.tokens[idx].sum(), t.bytes[idx].sum()
            )
            | {"documents": len(idx)}
            for label, idx in sorted(groups.items())
        }
    return out


def _batch_size(context: int, vocab: int) -> int:
    return max(1, LOGITS_BUDGET // (context * vocab))


@torch.inference_mode()
def score_heldout(
    model: GPT,
    tok: Tokenizer,
    data_dir: str | Path,
    meta: dict[str, Any],
    stride: int | None = None,
    max_tokens: int = 0,
    device="cpu",
    show_progress: bool = False,
) -> dict[str, Any]:
    """Score every token of `val.bin` (or its first `max_tokens + 1` tokens); see the module doc."""
    context = model.config.block_size
    stride = _check_stride(context, stride)
    tokens, total = _val_tokens(data_dir, model.config.vocab_size, max_tokens)
    spans = sorted(meta.get("val_spans") or [], key=lambda s: s["start"])
    tally = Tally(
        np.array([s["start"] for s in spans], dtype=np.int64),
        np.array([s["end"] for s in spans], dtype=np.int64),
        token_bytes(tok),
    )
    was_training = model.training
    model.eval()
    _score_windows(model, tokens, tally, stride, device, show_progress)
    model.train(was_training)
    result = _stats(tally.nats.sum(), tally.text_nats.sum(), tally.tokens.sum(), tally.bytes.sum())
    return result | {
        "context": context,
        "stride": stride,
        "split_tokens": int(total),
        "complete": len(tokens) == total,
        "documents": len(spans),
        **_by_group(tally, spans),
    }


def _check_stride(context: int, stride: int | None) -> int:
    """The stride asked for, or half the context when none was; refused outside 1..context."""
    stride = max(1, context // 2) if stride is None else stride
    if not 0 < stride <= context:
        raise UserError(
            f"--stride must be between 1 and the model's context ({context}), not {stride}"
        )
    return stride


def _val_tokens(data_dir: str | Path, vocab_size: int, max_tokens: int) -> tuple[np.ndarray, int]:
    """The val split's tokens (its first `max_tokens + 1` when `max_tokens`) and its length."""
    val_bin = token_file(data_dir, "val")
    check_token_ids(data_dir, vocab_size, splits=("val",))
    tokens = open_tokens(data_dir, "val")
    total = len(tokens)
    if max_tokens:
        tokens = tokens[: max_tokens + 1]
    if len(tokens) < 2:
        raise UserError(f"{val_bin} has fewer than 2 tokens; nothing to evaluate")
    return tokens, total


def _score_windows(
    model: GPT,
    tokens: np.ndarray,
    tally: Tally,
    stride: int,
    device,
    show_progress: bool,
) -> None:
    """Adds each target's loss to `tally`, scoring the sliding windows in batches."""
    context = model.config.block_size
    plan = list(windows(len(tokens), context, stride))
    span = min(context, len(tokens) - 1)
    bs = _batch_size(span, model.config.vocab_size)
    autocast = _autocast(device)
    for i in progress_bar(
        range(0, len(plan), bs), desc="held-out", unit="batch", disable=not show_progress
    ):
        batch = plan[i : i + bs]
        idx = np.stack([tokens[s : s + span + 1] for s, _ in batch]).astype(np.int64)
        nll = _nll(model, idx, device, autocast)
        for row, (s, first) in enumerate(batch):
            keep = slice(first - s - 1, span)  # target j sits at column j - s - 1
            pos = np.arange(first, s + span + 1)
            tally.add(pos, idx[row, 1:][keep], nll[row, keep].astype(np.float64))


def _nll(model: GPT, idx: np.ndarray, device, autocast) -> np.ndarray:
    """Each target's negative log-likelihood in nats, for a batch of windows (rows of `idx`)."""
    x = torch.from_numpy(idx[:, :-1]).to(device)
    y = torch.from_numpy(idx[:, 1:]).to(device)
    with autocast:
        logits, _ = model(x)
    return F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").cpu().numpy()


def _autocast(device):
    dev = torch.device(device)
    if dev.type == "cuda" and has_bf16_units(dev):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(dev.type, enabled=False)
