"""The offline demo: bundled corpus -> tokenizer -> token files -> a tiny GPT -> text -> report.

Each stage writes the folder the next one reads, exactly as the separate commands do, so the
demo is also a worked example of the whole path."""

from __future__ import annotations

import time
from pathlib import Path

from hellolondon.config import build_config
from hellolondon.corpus.layout import DOCUMENTS

# Sized to finish in about four minutes on a 2-core laptop CPU: a small vocabulary and a narrow
# model keep each step short. The tiny preset's recipe (Muon for the blocks' matrices, a
# warm-up-stable-decay schedule) gets further per step than AdamW + cosine did, and 250 more
# steps than before still leave a minute under five (docs/benchmarks.md, "The demo").
DEMO_VOCAB = 8192
DEMO_SETTINGS = [
    "model.n_layer=4",
    "model.n_head=4",
    "model.n_embd=128",
    "model.block_size=128",
    "train.batch_size=16",
    "train.max_iters=800",
    "train.optimizer=muon",
    "train.schedule=wsd",
    "train.muon_lr=0.02",
    "train.lr=2e-3",
    "train.min_lr=2e-4",
    "train.warmup_iters=20",
    "train.eval_interval=100",
    "train.eval_iters=8",
    "train.log_interval=10",
    "train.ckpt_interval=250",
    "train.sample_interval=0",
]
PROMPT = "Now is the winter of"
DEFAULT_WORK = Path("work/demo")
MARK = ".hellolondon-demo"  # in a folder the demo wrote: what is beside it is the demo's
DEMO_FILES = (DOCUMENTS, "tokenizer", "data")  # what it writes in its folder


def claim_work(work: Path, out_dir: str) -> None:
    """The demo replaces its corpus, tokenizer and token files on every run, so it refuses a
    folder that holds other files (another stage's output, which a run may train on), and an
    out_dir that is a file, before it writes anything."""
    from hellolondon.errors import UserError
    from hellolondon.files import other_files, some_of

    for path, flag in ((work, "--work"), (Path(out_dir), "--out-dir")):
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag} {path} is a file, not a folder; give a folder")
    held = other_files(work)
    # work/demo as an earlier version left it: the demo's three names and nothing else
    earlier = work.resolve() == DEFAULT_WORK.resolve() and set(held) <= set(DEMO_FILES)
    if held and not ((work / MARK).exists() or earlier):
        raise UserError(
            f"--work {work} holds files the demo did not write ({some_of(held)}); it replaces "
            "its corpus, tokenizer and token files on every run: give a new or empty folder"
        )
    work.mkdir(parents=True, exist_ok=True)
    (work / MARK).write_text("the demo's folder: `hellolondon demo` replaces what is here\n")


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def demo_config(work: Path, overrides: list[str], tracking: list[str], vocab_size: int):
    """The training run's config, checked (with the vocabulary size and the device) before the
    demo writes anything: a bad setting is one line, not one line after three stages."""
    from hellolondon.errors import UserError
    from hellolondon.hardware import resolve_device
    from hellolondon.rundir import RunDir
    from hellolondon.tokenizer import check_vocab_size

    check_vocab_size(vocab_size)
    data_dir = str(work / "data")
    cfg = build_config(
        "tiny",
        overrides=DEMO_SETTINGS
        + [f"data.data_dir={data_dir}", "data.corpus=sample"]
        + tracking
        + overrides,
    )
    if cfg.data.data_dir != data_dir:  # given as data.data_dir=... or data_dir=...
        raise UserError(
            "data.data_dir is the demo's own token folder (WORK/data); move it with --work"
        )
    resolve_device(cfg.train.device)
    if cfg.tracking.run_name:  # a name in use: said before the demo replaces its token files
        RunDir(Path(cfg.out_dir) / cfg.tracking.run_name).check_new()
    return cfg


def run_demo(work: Path, cfg, vocab_size: int = DEMO_VOCAB) -> dict:
    """The five stages; `cfg` from `demo_config`."""
    from hellolondon.corpus.documents import read_documents
    from hellolondon.corpus.layout import CorpusFolder
    from hellolondon.corpus.sample import write_sample
    from hellolondon.generate import Sampling, generate_ids
    from hellolondon.prepare import prepare
    from hellolondon.tokenizer import train_tokenizer
    from hellolondon.train.checkpoint import load_for_inference
    from hellolondon.train.loop import train

    t_start = time.perf_counter()
    corpus, tok_dir, data_dir = CorpusFolder(work).documents, work / "tokenizer", work / "data"
    t = _stage(
        "1/5 corpus: the bundled sample (Shakespeare's First Folio 1623, King James Bible 1611)"
    )
    n = write_sample(corpus)
    print(f"{n} documents -> {corpus} ({time.perf_counter() - t:.1f} s)")
    t = _stage(f"2/5 tokenizer: byte-level BPE, vocabulary {vocab_size:,}")
    tok = train_tokenizer((d.text for d in read_documents(corpus)), tok_dir, vocab_size=vocab_size)
    print(f"tokenizer {tok.fingerprint[:12]} -> {tok_dir} ({time.perf_counter() - t:.1f} s)")
    t = _stage("3/5 prepare: documents -> train.bin / val.bin")
    meta = prepare(corpus, tok_dir, data_dir)
    print(
        f"{meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens "
        f"({meta['val_documents']} val documents) -> {data_dir} ({time.perf_counter() - t:.1f} s)"
    )
    t = _stage("4/5 train: a tiny GPT on the CPU")
    summary = train(cfg)
    run_dir = Path(summary["run_dir"])
    print(f"trained in {time.perf_counter() - t:.0f} s")
    if summary.get("stop_reason"):  # a first Ctrl-C: the demo goes on with what was trained
        print(
            f"training ended early ({summary['stop_reason']}) at step {summary['iterations']}; "
            f"to continue it: hellolondon train --resume {run_dir}"
        )
    _stage("5/5 generate and report")
    loaded = load_for_inference(run_dir)
    model, tok = loaded.model, loaded.tokenizer
    ids = generate_ids(
        model, tok.encode(PROMPT), Sampling(max_new_tokens=60, temperature=0.8, seed=7), tok.eot_id
    )
    text = PROMPT + tok.decode(ids)
    print(text)
    report = _report(run_dir)
    summary.update(
        run_dir=str(run_dir), sample=text, report=report, demo_seconds=time.perf_counter() - t_start
    )
    _next_steps(summary, run_dir, report)
    return summary


def _report(run_dir: Path) -> str:
    from hellolondon.report import write_report
    from hellolondon.rundir import RunDir

    return str(write_report([run_dir], RunDir(run_dir).report_dir)["html"])


def _next_steps(s: dict, run_dir: Path, report: str) -> None:
    first, best = s.get("first_val_loss"), s.get("best_val_loss")
    print("\n== done in {:.0f} s".format(s["demo_seconds"]))
    if first and best:
        print(f"val loss {first:.2f} -> {best:.2f}")
    print(f"run folder:  {run_dir}  (settings, metrics, checkpoints, samples)")
    print(f"report:      {report}")
    print("next:")
    print(f'  hellolondon generate {run_dir} --prompt "To be, or not to be"')
    print(f"  hellolondon generate {run_dir} --interactive")
    print(f"  hellolondon report {run_dir}")
    print("  hellolondon train --preset slm --data DIR   # on a GPU")
