"""Historical knowledge probes: cloze items about London and England 1500-1850.

Each item is a prompt, the right completion and a few plausible wrong ones. The model "answers"
an item when the right completion gets a strictly higher log-likelihood than every distractor
(a tie counts as wrong, so a model that knows nothing scores chance or below, never above).
Accuracy is reported beside chance (the mean of 1 / options), per category.

The packaged items live in `data/probes.jsonl`, one JSON object per line:
    {"id": "date-01", "category": "dates", "prompt": "...", "answer": " 1666",
     "distractors": [" 1665", ...], "source": "where the fact comes from"}
Completions start with a space, so the prompt/completion boundary is a word boundary and the
tokens of a completion are the ones the model would see in running text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hellolondon.errors import UserError
from hellolondon.model import GPT
from hellolondon.progress import progress_bar
from hellolondon.tokenizer import Tokenizer

PROBES_FILE = "probes.jsonl"
KEYS = ("id", "category", "prompt", "answer", "distractors", "source")


@dataclass(frozen=True)
class Probe:
    id: str
    category: str
    prompt: str
    answer: str
    distractors: tuple[str, ...]
    source: str

    @property
    def options(self) -> tuple[str, ...]:
        return (self.answer, *self.distractors)


def _item_error(where: str, name: str, problem: str) -> UserError:
    return UserError(f"{where}: probe {name}: {problem}; fix or remove this item")


def _completion_ok(text: Any) -> bool:
    return isinstance(text, str) and len(text) > 1 and text[0] == " " and not text[1].isspace()


def parse_probe(data: Any, where: str) -> Probe:
    """One item, checked; any problem is a UserError naming the file, line and item."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: a probe must be a JSON object, not {type(data).__name__}")
    name = repr(data.get("id", "(no id)"))
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise _item_error(where, name, f"missing key(s) {', '.join(missing)}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise _item_error(where, name, f"unknown key(s) {', '.join(unknown)}")
    for key in ("id", "category", "prompt", "source"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise _item_error(where, name, f"{key} must be a non-empty string")
    if data["prompt"] != data["prompt"].rstrip():
        raise _item_error(
            where, name, "the prompt must not end with whitespace (completions start with a space)"
        )
    distractors = data["distractors"]
    if not isinstance(distractors, list) or not distractors:
        raise _item_error(where, name, "distractors must be a non-empty list of strings")
    for text in [data["answer"], *distractors]:
        if not _completion_ok(text):
            raise _item_error(
                where,
                name,
                f"completion {text!r} must be a string that starts with one space, then text",
            )
    if data["answer"] in distractors or len(set(distractors)) != len(distractors):
        raise _item_error(where, name, "the answer and distractors must all be different")
    return Probe(
        data["id"],
        data["category"],
        data["prompt"],
        data["answer"],
        tuple(distractors),
        data["source"],
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once (else the last one would win silently)."""
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise KeyError(k)
    return dict(pairs)


def load_probes(path: str | Path | None = None) -> list[Probe]:
    """Read and validate a probe file (default: the packaged one)."""
    if path is None:
        text = resources.files("hellolondon").joinpath("data", PROBES_FILE).read_text("utf-8")
        label = PROBES_FILE
    else:
        p = Path(path)
        if not p.is_file():
            what = (
                "is a folder; give a .jsonl file"
                if p.is_dir()
                else "is not a regular file; give a .jsonl file"
                if p.exists()
                else "not found"
            )
            raise UserError(f"probe file {p} {what}")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"probe file {p} is not UTF-8 text") from None
        label = str(p)
    probes: list[Probe] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{label}:{lineno}"
        try:
            data = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{where}: not valid JSON ({exc.msg}); each line must be one probe object"
            ) from None
        except KeyError as exc:
            raise UserError(f"{where}: the key {exc.args[0]!r} is given twice") from None
        probe = parse_probe(data, where)
        if probe.id in seen:
            raise _item_error(where, repr(probe.id), "this id is used twice")
        seen.add(probe.id)
        probes.append(probe)
    if not probes:
        raise UserError(f"probe file {label} has no items")
    return probes


@torch.inference_mode()
def option_logprobs(model: GPT, tok: Tokenizer, probe: Probe, device) -> list[float]:
    """Sum of log-probabilities of each option's tokens after the prompt, in one padded batch."""
    ctx = tok.encode(probe.prompt)
    conts = [tok.encode(o) for o in probe.options]
    limit = model.config.block_size + 1  # inputs are one token shorter than the sequence
    seqs = [(ctx + c)[-limit:] for c in conts]
    width = max(len(s) for s in seqs) - 1
    x = torch.zeros(len(seqs), width, dtype=torch.long)
    y = torch.full((len(seqs), width), -1, dtype=torch.long)  # -1: not part of the completion
    for i, (s, c) in enumerate(zip(seqs, conts, strict=True)):
        n = len(s) - 1
        x[i, :n] = torch.tensor(s[:-1])
        y[i, n - len(c) : n] = torch.tensor(s[-len(c) :])
    logits, _ = model(x.to(device))
    nll = F.cross_entropy(
        logits.float().transpose(1, 2), y.to(device), ignore_index=-1, reduction="none"
    )
    return (-nll.sum(dim=1)).tolist()


def _rate(correct: int, chance: float, n: int) -> dict[str, Any]:
    return {"items": n, "accuracy": correct / n, "chance": chance / n}


def score_probes(
    model: GPT, tok: Tokenizer, probes: list[Probe], device="cpu", show_progress: bool = False
) -> dict[str, Any]:
    """Accuracy (strictly best log-likelihood) and byte-normalised accuracy, overall and per
    category, with chance and a z-score of the excess over chance."""
    was_training = model.training
    model.eval()
    rows = []
    for probe in progress_bar(probes, desc="probes", unit="item", disable=not show_progress):
        scores = option_logprobs(model, tok, probe, device)
        per_byte = [s / len(o.encode("utf-8")) for s, o in zip(scores, probe.options, strict=True)]
        best = max(range(len(scores)), key=scores.__getitem__)
        rows.append(
            {
                "id": probe.id,
                "category": probe.category,
                "correct": scores[0] > max(scores[1:]),
                "correct_norm": per_byte[0] > max(per_byte[1:]),
                "chosen": probe.options[best],
                "answer_logprob": scores[0],
            }
        )
    model.train(was_training)
    chance = [1.0 / len(p.options) for p in probes]
    n = len(probes)
    hits = sum(r["correct"] for r in rows)
    # the correct count is a sum of independent Bernoulli(1/k) under guessing
    sd = math.sqrt(sum(c * (1 - c) for c in chance))
    result = _rate(hits, sum(chance), n) | {
        "accuracy_norm": sum(r["correct_norm"] for r in rows) / n,
        "z": (hits - sum(chance)) / sd if sd else 0.0,
        "by_category": {},
        "items_detail": rows,
    }
    for cat in sorted({p.category for p in probes}):
        idx = [i for i, p in enumerate(probes) if p.category == cat]
        result["by_category"][cat] = _rate(
            sum(rows[i]["correct"] for i in idx), sum(chance[i] for i in idx), len(idx)
        )
    return result
