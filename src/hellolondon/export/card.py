"""The model card (README.md) of an export: what the model is, its training data and settings,
the measured metrics of its eval report, how to use it, what it is for and what it is not."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from hellolondon.config import RunConfig, TrainConfig
from hellolondon.errors import UserError
from hellolondon.generate import Sampling
from hellolondon.rundir import RunDir


def new_tokens_default(context: int, wanted: int = Sampling.max_new_tokens) -> int:
    """transformers fails past the learned positions (an IndexError) where `generate` shifts
    its view along the text, so its default leaves room for a prompt of half the context."""
    return max(1, min(wanted, context // 2))


# The licence ids the Hub's metadata check accepts (huggingface.co/docs/hub/repositories-licenses,
# 2026); it refuses a card with any other id when it is pushed. "other" takes a licence of one's own.
_HUB_LICENSE_IDS = """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m
    bigscience-bloom-rail-1.0 bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause
    bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0
    cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
    cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
    cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research
    intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++ osl-3.0
    postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license llama2 llama3
    llama3.1 llama3.2 llama3.3 llama4 gemma unknown other"""
HUB_LICENSES = frozenset(_HUB_LICENSE_IDS.split())


def check_license(value: str | None) -> str | None:
    """The card's licence id, lower-cased ("MIT" -> "mit"). Refused when it is not an id at
    all (spaces or a line break would also break the card's metadata block); a well-formed id
    the Hub does not list gets a warning, since the Hub may have added it since."""
    if value is None:
        return None
    lid = value.strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", lid):
        raise UserError(
            f"--license {value!r} is not a licence id; give one of the Hub's ids such as mit, "
            "apache-2.0 or cc-by-4.0 (huggingface.co/docs/hub/repositories-licenses), or other"
        )
    if lid not in HUB_LICENSES:
        print(
            f"warning: --license {lid} is not among the Hub's licence ids known here; the Hub "
            "refuses a card whose id it does not list (use other for a licence of your own)",
            file=sys.stderr,
        )
    return lid


def _run_info(ckpt: Path) -> dict[str, Any]:
    """The run's recorded config (data and hardware facts written at the start of training)."""
    run = RunDir.of_checkpoint(ckpt)
    return run.read_config() if run is not None else {}


def _data_info(cfg: RunConfig, run: dict[str, Any]) -> dict[str, Any]:
    """Corpus size from the run's recorded config, completed from the token files' metadata."""
    from hellolondon.prepare import is_prepared, load_meta

    data = dict(run.get("data_info", {}))
    if is_prepared(cfg.data.data_dir):
        try:
            meta = load_meta(cfg.data.data_dir)
        except UserError:  # token files changed since: the run's own record stands
            meta = {}
        if meta.get("tokenizer_fingerprint") == data.get(
            "tokenizer_fingerprint", meta.get("tokenizer_fingerprint")
        ):
            data.setdefault("train_tokens", meta.get("train_tokens"))
            data.setdefault("val_tokens", meta.get("val_tokens"))
            for key in ("years", "periods"):
                if key in meta:
                    data.setdefault(key, meta[key])
            if not data.get("documents"):
                data["documents"] = meta.get("train_documents", 0) + meta.get("val_documents", 0)
    return data


def _years(cfg: RunConfig, run: dict[str, Any], data: dict[str, Any] | None = None) -> str:
    """The years the training documents were written ("1611-1623"), as the token files
    recorded them; the configured period for token files that did not record them."""
    years = (data if data is not None else _data_info(cfg, run)).get("years")
    if not years:
        return cfg.data.period
    first, last = years
    return str(first) if first == last else f"{first}-{last}"


def _periods(data: dict[str, Any]) -> str:
    periods = data.get("periods")
    if not periods:
        return "unknown"
    return ", ".join(f"{label} ({n:,} documents)" for label, n in periods.items())


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _card_metrics(r: dict[str, Any] | None) -> list[str]:
    if not r:
        return ["Not measured yet: run `hellolondon eval` on the checkpoint, then export again."]
    out = [f"Measured by `hellolondon eval` on {r.get('created', '?')} (step {r['step']}).", ""]
    h, p, g = r.get("heldout"), r.get("probes"), r.get("generation")
    if h:
        scope = (
            f"the whole validation split ({h['tokens']:,} tokens scored: every one of its "
            f"{h['split_tokens']:,} after the first)"
            if h["complete"]
            else f"the first {h['tokens']:,} scored tokens of the {h['split_tokens']:,}-token validation split"
        )
        out += [
            f"- **Held-out bits per byte: {h['bpb']:.4f}** (loss {h['loss']:.4f} nats/token, perplexity "
            f"{h['ppl']:.2f}) over {scope}, context {h['context']}, stride {h['stride']}"
        ]
        for key in ("period", "source", "category"):
            for label, v in h.get(f"by_{key}", {}).items():
                out.append(
                    f"  - {key} {label}: {v['bpb']:.4f} bits per byte ({v['tokens']:,} tokens)"
                )
    if p:
        out += [
            f"- **Knowledge probes: {100 * p['accuracy']:.1f}% correct** against {100 * p['chance']:.1f}% by chance "
            f"({p['items']} cloze item{'s' * (p['items'] != 1)} {_probe_set(p)}, log-likelihood ranking)"
        ]
        for cat, v in p["by_category"].items():
            out.append(f"  - {cat}: {100 * v['accuracy']:.1f}% (chance {100 * v['chance']:.1f}%)")
    if g:
        out.append(
            f"- Generation ({g['prompts']} fixed prompts, temperature {g['sampling']['temperature']}): "
            f"distinct-2 {g['distinct_2']:.3f}, 4-gram repetition rate {g['repetition_rate']:.3f}"
        )
    return out


def model_card(
    cfg: RunConfig, state: dict, ckpt: Path, report: dict | None, info: dict, license: str | None
) -> str:
    """README.md of the export: what it is, the data, the settings, the measured metrics, how to
    use it, what it is for and what it is not."""
    run = _run_info(ckpt)
    name = cfg.tracking.run_name or ckpt.name
    front = [
        "---",
        "language: en",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [gpt2, historical-english, london, early-modern-english, hellolondon]",
    ]
    front += [f"license: {license}"] if license else []
    lines = [
        *front,
        "---",
        "",
        f"# {name}: a historical-English GPT-2 (London, {_years(cfg, run)})",
        "",
        "A GPT-2-style language model trained from scratch with helloLondon on historical English text "
        f"({cfg.data.corpus}). It continues text in the language of its sources; it knows only what "
        "those sources say.",
        "",
        *_model_section(cfg, state, info, name),
        *_data_section(cfg, run),
        *_training_section(cfg, state, ckpt, run),
        "## Evaluation",
        "",
        *_card_metrics(report),
        "",
        "Bits per byte compares models with different tokenizers; perplexity only models with this one.",
        "",
        *_usage_section(cfg),
        *_use_and_limits(cfg, info),
    ]
    return "\n".join(lines) + "\n"


def _model_section(cfg: RunConfig, state: dict, info: dict, name: str) -> list[str]:
    m, ids = cfg.model, info["ids"]
    rows = [
        (
            "architecture",
            "GPT-2 (`GPT2LMHeadModel`): pre-LayerNorm, learned positions, tied embeddings, `gelu_new`",
        ),
        ("layers / heads / width", f"{m.n_layer} / {m.n_head} / {m.n_embd}"),
        ("context", f"{m.block_size} tokens"),
        (
            "vocabulary",
            f"{m.vocab_size:,} byte-level BPE tokens; bos = eos = {ids['bos_token_id']} "
            f"(`<|endoftext|>`), pad = {ids['pad_token_id']}",
        ),
        (
            "parameters",
            f"{info['parameters']:,} ({info['parameters_trained']:,} without the position "
            "table, as the training log counts them)",
        ),
        ("checkpoint", f"step {state.get('step')} of run `{name}`"),
    ]
    return ["## Model", "", *_table(rows), ""]


def _data_section(cfg: RunConfig, run: dict) -> list[str]:
    data = _data_info(cfg, run)

    def count(key: str) -> str:
        return f"{data[key]:,}" if data.get(key) else "unknown"

    rows = [
        ("corpus", cfg.data.corpus),
        ("written", _years(cfg, run, data)),
        ("periods", _periods(data)),
        ("documents", count("documents")),
        ("training tokens", count("train_tokens")),
        ("validation tokens", count("val_tokens")),
        ("split", "by whole document: no validation text is the tail of a training text"),
    ]
    return ["## Training data", "", *_table(rows), ""]


def _training_section(cfg: RunConfig, state: dict, ckpt: Path, run: dict) -> list[str]:
    m, t = cfg.model, cfg.train
    world = int(run.get("hardware", {}).get("world_size", 1))
    tokens_per_step = t.batch_size * t.grad_accum * m.block_size * world
    rows = [
        ("optimizer", _optimizer_text(t)),
        ("learning rate", _schedule_text(t)),
        (
            "batch",
            f"{t.batch_size} sequences x {t.grad_accum} accumulation = {tokens_per_step:,} tokens per step",
        ),
        ("steps trained", f"{state.get('step')} of {t.max_iters}"),
        ("gradient clip / dropout", f"{t.grad_clip} / {m.dropout}"),
        ("precision", run.get("hardware", {}).get("dtype", t.dtype)),
        *_val_loss_rows(state, ckpt),
    ]
    return ["## Training hyper-parameters", "", *_table(rows), ""]


def _val_loss_rows(state: dict, ckpt: Path) -> list[tuple[str, str]]:
    """The exported checkpoint's own validation loss with the step it was measured at; the
    run's best up to the checkpoint beside it only where that is another evaluation (a
    checkpoint saved after the loss rose, at a divergence, or on an interval)."""
    own = checkpoint_val_loss(state, ckpt)
    label = "validation loss (training's fixed batches)"
    rows = [(label, f"{own[0]:.4f} at step {own[1]}" if own else "not recorded")]
    trainer = state.get("trainer", {})
    best, best_step = trainer.get("best_val_loss"), trainer.get("best_step")
    same = own is not None and best == own[0] and best_step in (None, own[1])
    if best is not None and not same:
        at = f" at step {best_step}" if best_step is not None else ""
        rows.append(("best validation loss of the run up to this step", f"{best:.4f}{at}"))
    return rows


def checkpoint_val_loss(state: dict, ckpt: Path) -> tuple[float, int] | None:
    """(loss, step) of the last evaluation at or before the checkpoint's step: the loop state
    the checkpoint saved, or for a checkpoint that did not save it, the run's metrics log."""
    trainer = state.get("trainer", {})
    loss, at = trainer.get("final_val_loss"), trainer.get("last_eval_step")
    if loss is not None and at is not None:
        return float(loss), int(at)
    run, step = RunDir.of_checkpoint(ckpt), trainer.get("step", state.get("step"))
    if run is None or step is None:
        return None
    logged = [
        (float(row["eval/val_loss"]), row["step"])
        for row in run.rows()
        if isinstance(row.get("eval/val_loss"), float | int)
        and isinstance(row.get("step"), int)
        and row["step"] <= step
    ]
    return max(logged, key=lambda pair: pair[1]) if logged else None


def _usage_section(cfg: RunConfig) -> list[str]:
    max_new = new_tokens_default(cfg.model.block_size, 80)
    return [
        "## How to use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tok = AutoTokenizer.from_pretrained("PATH_OR_REPO")',
        'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO")',
        'inputs = tok("In the year of our Lord", return_tensors="pt")',
        f"out = model.generate(**inputs, max_new_tokens={max_new})"
        "  # sampling defaults: generation_config.json",
        "print(tok.decode(out[0]))",
        "```",
        "",
        "With lm-evaluation-harness: `lm_eval --model hf --model_args pretrained=PATH_OR_REPO --tasks lambada_openai`.",
        "",
    ]


def _use_and_limits(cfg: RunConfig, info: dict) -> list[str]:
    return [
        "## Intended use",
        "",
        "Research and teaching on historical English: studying how a small language model learns the "
        "spelling, vocabulary and style of 1500-1850 texts; generating period-style text for study or "
        "creative work that is labelled as machine-written; a baseline for comparing corpora and tokenizers.",
        "",
        "## Limitations",
        "",
        "- It invents: dates, names and events in its output are plausible-sounding, not facts. Do not use it as a historical source.",
        "- It reproduces the language and the prejudices of its sources (religious, national, racial, social and gender attitudes of the period); it has no safety tuning.",
        f"- It is small ({info['parameters']:,} parameters) with a context of {cfg.model.block_size} tokens; long or modern prompts work poorly.",
        "- English only; its tokenizer was trained on this corpus, so modern text is split into many tokens.",
        "- The evaluation uses this project's held-out split and probes; only bits per byte is comparable across models.",
    ]


def _optimizer_text(t: TrainConfig) -> str:
    adamw = f"AdamW, betas ({t.beta1}, {t.beta2}), weight decay {t.weight_decay} on matrices"
    if t.optimizer != "muon":
        return adamw
    return (
        f"Muon for the blocks' matrices (momentum {t.muon_momentum}, weight decay "
        f"{t.muon_weight_decay}); {adamw.replace('on matrices', 'on the embedding')}"
    )


def _schedule_text(t: TrainConfig) -> str:
    muon = t.optimizer == "muon"
    peak = f"{t.lr:g} peak" + (f" (Muon {t.muon_lr:g})" if muon else "")
    floor = f"{t.min_lr:g}" + (f" (Muon {t.muon_lr * t.min_lr / t.lr:g})" if muon else "")
    if t.schedule == "wsd":
        decay = f"stable, then a {t.cooldown_shape} cool-down over the last {t.cooldown_frac:.0%}"
    else:
        decay = "cosine decay"
    return f"{peak}, {t.warmup_iters} warm-up steps, {decay} to {floor}"


def _probe_set(probes: dict) -> str:
    """The packaged set is named by its subject; a file of the user's by its name."""
    file = probes.get("file", "packaged")
    if file == "packaged":
        return "on London and England 1500-1850"
    return f"from the probe file `{Path(file).name}`"
