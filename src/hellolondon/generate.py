"""Text generation with a KV cache: temperature, top-k, top-p, repetition penalty, a seed,
a stop at `<|endoftext|>`, and a view that shifts along a text longer than the context."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hellolondon.errors import UserError
from hellolondon.model import GPT, KVCache


@dataclass
class Sampling:
    max_new_tokens: int = 200  # tokens to add at most
    temperature: float = 0.8  # < 1 sharper, > 1 more varied; 0 is greedy over the penalised scores
    top_k: int = 200  # keep the k most likely tokens; 0 keeps all
    top_p: float = 0.95  # keep the smallest set with this much probability; 1 keeps all
    repetition_penalty: float = 1.1  # > 1 makes tokens already present less likely
    seed: int = 1337  # same seed, same text

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError("--max-new-tokens must be at least 1")
        # each bad setting is named with its flag; nan fails every comparison below
        problems = {
            "--temperature": (
                not 0 <= self.temperature < math.inf,
                "a finite number >= 0 (0 is greedy)",
            ),
            "--top-k": (self.top_k < 0, "an integer >= 0 (0 keeps every token)"),
            "--top-p": (
                not 0 < self.top_p <= 1,
                "a finite number above 0 and at most 1 (1 keeps every token)",
            ),
            "--repetition-penalty": (
                not 0 < self.repetition_penalty < math.inf,
                "a finite number > 0 (1 turns it off)",
            ),
            "--seed": (  # the range torch's generator takes
                not -(2**63) <= self.seed < 2**64,
                "an integer from -2**63 to 2**64 - 1",
            ),
        }
        for flag, (bad, rule) in problems.items():
            if bad:
                value = getattr(self, flag[2:].replace("-", "_"))
                raise UserError(f"{flag} must be {rule}, not {value}")


def _filter(logits: torch.Tensor, s: Sampling, seen: torch.Tensor) -> torch.Tensor:
    """logits (B, V) -> filtered logits; seen (B, V) bool marks tokens already in the text."""
    if s.repetition_penalty != 1.0:
        logits = _penalize(logits, seen, s.repetition_penalty)
    logits = logits / max(s.temperature, 1e-8)
    if s.top_k:
        kth = torch.topk(logits, min(s.top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) > s.top_p  # keep the token that crosses p
        sorted_logits = sorted_logits.masked_fill(drop, -float("inf"))
        logits = torch.full_like(logits, -float("inf")).scatter(-1, order, sorted_logits)
    return logits


def _penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    # CTRL's penalty: divide positive logits, multiply negative ones
    penal = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penal, logits)


def _project(model: GPT) -> Callable[[torch.Tensor], torch.Tensor]:
    """The output projection for one position. On the CPU it multiplies by a contiguous (C, V)
    copy of the tied matrix: for a single row that is a plain row-times-matrix product, 2-4x
    faster than nn.Linear's (V, C) layout, and it is the largest matrix of a small model."""
    w = model.lm_head.weight
    if w.device.type != "cpu":
        return lambda h: F.linear(h, w)
    wt = w.detach().t().contiguous()  # (C, V)
    return lambda h: h @ wt


def _next_token(logits: torch.Tensor, s: Sampling, seen: torch.Tensor | None, gen) -> torch.Tensor:
    """logits (1, V) -> the next token id (1, 1)."""
    if not bool(torch.isfinite(logits).all()):  # multinomial would fail (a GPU: assert) on them
        raise UserError(
            "the model's next-token scores are not finite (NaN or inf): its weights have "
            "diverged; generate from an earlier checkpoint"
        )
    if s.temperature == 0:
        if seen is not None:
            logits = _penalize(logits, seen, s.repetition_penalty)
        return torch.argmax(logits, dim=-1, keepdim=True)
    probs = torch.softmax(_filter(logits, s, seen), dim=-1)
    return torch.multinomial(probs, 1, generator=gen)


def kept_on_shift(context: int) -> int:
    """Tokens the window keeps when the text passes the context: the newest three quarters,
    whose keys and values are computed again at their new positions (llama.cpp's context
    shift; nanoGPT instead recomputes the last `context` tokens for every new one)."""
    return max(1, context - context // 4)


def window_start(n_tokens: int, context: int) -> int:
    """Where the model's view of a text of `n_tokens` starts: at 0 while it fits the context,
    else at the newest `kept_on_shift` tokens."""
    return 0 if n_tokens <= context else n_tokens - kept_on_shift(context)


@torch.inference_mode()
def generate_ids(
    model: GPT, prompt: list[int], s: Sampling, eot_id: int | None = None, on_token=None
) -> list[int]:
    """New token ids after `prompt`, decoded one at a time from the KV cache. Past the
    model's context the view shifts: it keeps the newest three quarters (`window_start`), so
    each new token is predicted from between 3/4 of the context and all of it."""
    device = next(model.parameters()).device
    ctx = model.config.block_size
    text = list(prompt) or [eot_id if eot_id is not None else 0]  # empty: a new document
    start = window_start(len(text), ctx)
    gen = torch.Generator(device=device).manual_seed(s.seed)
    # the last new token is sampled, never fed back: the cache holds one token fewer
    size = min(ctx, len(text) - start + s.max_new_tokens - 1)
    cache = KVCache(model.config, 1, size, device, next(model.parameters()).dtype)
    was_training = model.training
    model.eval()
    seen = None
    if s.repetition_penalty != 1.0:  # only the penalty needs to know which tokens were used
        seen = torch.zeros(1, model.config.vocab_size, dtype=torch.bool, device=device)
        seen[0, torch.tensor(text, device=device)] = True
    out: list[int] = []
    project = _project(model)
    try:
        h = model.hidden(torch.tensor([text[start:]], device=device), cache)  # (1, T, C)
        for _ in range(s.max_new_tokens):
            nxt = _next_token(project(h[:, -1, :]).float(), s, seen, gen)
            token = int(nxt)
            if token == eot_id:
                break
            out.append(token)
            text.append(token)
            if on_token is not None:
                on_token(token)
            if seen is not None:
                seen[0, token] = True
            if len(out) == s.max_new_tokens:
                break
            if cache.pos < ctx:
                h = model.hidden(nxt, cache)
            else:  # the context is full: shift the view and compute it again
                start = window_start(len(text), ctx)
                cache.pos = 0
                h = model.hidden(torch.tensor([text[start:]], device=device), cache)
    finally:
        model.train(was_training)
    return out


def sample_text(
    model: GPT, tokenizer_dir: str | Path, prompt: str, max_new_tokens: int = 64, seed: int = 1337
) -> str:
    from hellolondon.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    ids = generate_ids(
        model, tok.encode(prompt), Sampling(max_new_tokens=max_new_tokens, seed=seed), tok.eot_id
    )
    return prompt + tok.decode(ids)
