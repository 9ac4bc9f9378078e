"""Generation quality on a fixed prompt set: distinct-n and repetition of sampled text.

distinct-n (Li et al., 2016) is the share of unique word n-grams among all n-grams of all
samples: low means the model says the same things whatever the prompt. The repetition rate is
the mean, over samples, of the share of word 4-grams that already occurred earlier in the same
sample (seq-rep-4, Welleck et al., 2019): high means loops. Both are measured on words, so
they do not depend on the tokenizer. Sampling uses no repetition penalty, which would hide the
very loops the rate is meant to catch.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hellolondon.generate import Sampling, generate_ids
from hellolondon.model import GPT
from hellolondon.progress import progress_bar
from hellolondon.tokenizer import Tokenizer

PROMPTS = (
    "In the year of our Lord 1666, the city of London",
    "The streets about Cheapside were",
    "Upon the River Thames, the watermen",
    "My Lord, I pray you",
    "It was ordered by the Lord Mayor and Aldermen that",
    "The merchants of the Royal Exchange",
    "On Sunday last, at St Paul's,",
    "Whereas divers persons",
)


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    grams = [g for t in texts for g in ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: list[str], n: int = 4) -> float:
    """Mean share of a sample's n-grams that repeat an earlier one of the same sample."""
    rates = []
    for t in texts:
        grams = ngrams(t.split(), n)
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def generation_quality(
    model: GPT,
    tok: Tokenizer,
    prompts: tuple[str, ...] = PROMPTS,
    max_new_tokens: int = 64,
    seed: int = 1337,
    keep_samples: int = 3,
    show_progress: bool = False,
) -> dict[str, Any]:
    s = Sampling(
        max_new_tokens=max_new_tokens,
        temperature=0.8,
        top_k=200,
        top_p=0.95,
        repetition_penalty=1.0,
        seed=seed,
    )
    texts, lengths, stopped = [], [], 0
    for i, prompt in enumerate(
        progress_bar(prompts, desc="samples", unit="prompt", disable=not show_progress)
    ):
        s.seed = seed + i  # one fixed seed per prompt: the same checkpoint gives the same text
        ids = generate_ids(model, tok.encode(prompt), s, tok.eot_id)
        texts.append(tok.decode(ids))
        lengths.append(len(ids))
        stopped += len(ids) < max_new_tokens
    s.seed = seed
    return {
        "prompts": len(prompts),
        "sampling": asdict(s),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "repetition_rate": repetition_rate(texts, 4),
        "mean_tokens": sum(lengths) / len(lengths) if lengths else 0.0,
        "ended_early": stopped,
        "samples": [
            {"prompt": p, "text": t} for p, t in zip(prompts[:keep_samples], texts, strict=False)
        ],
    }
