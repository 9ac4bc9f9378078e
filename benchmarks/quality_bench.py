"""Time to quality: how many steps (and tokens) each optimizer/schedule recipe needs to reach the
final validation loss of the tuned AdamW + cosine recipe, on the demo's model and data.

    python benchmarks/quality_bench.py                      # the demo's model, 200 steps
    python benchmarks/quality_bench.py --seeds 3 --jobs 2   # two runs at a time, one thread each

First each recipe's peak learning rate is swept over a small grid on a tuning seed (so the
baseline is tuned too); then the best rate of each recipe runs on other seeds, which alone are
scored: a rate is never judged on the run that chose it. All recipes see the same data in the
same order for a given seed. Every finished run leaves a JSON file in
`<work>/results/<setup>/` (the setup: steps, evaluation interval and batches), so a second call
with the same setup skips it: a crash or Ctrl-C costs only the runs it interrupted, whose folders
the next call starts again. A run cut short is never recorded as a result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# the demo's model and batch (src/hellolondon/demo.py); the bench varies only the recipe
MODEL = ["model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.block_size=128"]
VOCAB = 8192
RECIPES = {
    "adamw-cosine": ["train.optimizer=adamw", "train.schedule=cosine"],
    "muon-cosine": ["train.optimizer=muon", "train.schedule=cosine"],
    "muon-wsd": ["train.optimizer=muon", "train.schedule=wsd"],
}
DEFAULT_GRID = {
    "adamw-cosine": "1.5e-3,3e-3,6e-3",
    "muon-cosine": "0.01,0.02,0.04",
    "muon-wsd": "0.01,0.02,0.04",
}


def lr_setting(recipe: str, lr: float) -> list[str]:
    """The swept rate is AdamW's for the AdamW recipe and Muon's for the others (their AdamW
    groups, embeddings and gains, keep the demo's 2e-3)."""
    if recipe.startswith("muon"):
        return [f"train.muon_lr={lr:g}", "train.lr=2e-3", "train.min_lr=2e-4"]
    return [f"train.lr={lr:g}", f"train.min_lr={lr / 10:g}"]


def prepare_data(work: Path) -> Path:
    """The bundled corpus, tokenized as the demo does; reused when it is already there."""
    from hellolondon.corpus.documents import read_documents
    from hellolondon.corpus.sample import write_sample
    from hellolondon.prepare import prepare
    from hellolondon.tokenizer import train_tokenizer

    data = work / "data"
    if (data / "meta.json").is_file():
        return data
    work.mkdir(parents=True, exist_ok=True)
    write_sample(work / "documents.jsonl")
    docs = (d.text for d in read_documents(work / "documents.jsonl"))
    train_tokenizer(docs, work / "tokenizer", vocab_size=VOCAB)
    prepare(work / "documents.jsonl", work / "tokenizer", data)
    return data


def settings(work: Path, recipe: str, lr: float, seed: int, args) -> list[str]:
    """The run's `key=value` settings: the demo's model, the recipe, the rate and the seed."""
    return (
        MODEL
        + RECIPES[recipe]
        + lr_setting(recipe, lr)
        + [
            f"train.seed={seed}",
            f"train.max_iters={args.steps}",
            "train.batch_size=16",
            f"train.warmup_iters={min(20, args.steps // 10)}",  # a tenth of a shorter run
            f"train.eval_interval={args.eval_every}",
            f"train.eval_iters={args.eval_iters}",
            "train.log_interval=25",
            f"train.ckpt_interval={args.steps}",
            "train.keep_last=1",
            "train.sample_interval=0",
            "train.device=cpu",
            f"data.data_dir={work / 'data'}",
            f"out_dir={work / 'runs' / setup_name(args)}",
            f"tracking.run_name={run_name(recipe, lr, seed)}",
            "tracking.wandb_mode=disabled",
            "monitor.enabled=false",
        ]
    )


def run_one(work: Path, recipe: str, lr: float, seed: int, args) -> dict:
    """Train one recipe/rate/seed, then score the whole held-out split in bits per byte."""
    import torch

    from hellolondon.config import build_config
    from hellolondon.evaluation.heldout import score_heldout
    from hellolondon.prepare import load_meta
    from hellolondon.rundir import read_jsonl
    from hellolondon.tokenizer import load_tokenizer
    from hellolondon.train.checkpoint import load_for_inference
    from hellolondon.train.loop import train

    torch.set_num_threads(1)
    data = work / "data"
    name = run_name(recipe, lr, seed)
    cfg = build_config("tiny", overrides=settings(work, recipe, lr, seed, args))
    run_dir = work / "runs" / setup_name(args) / name
    if run_dir.exists():  # left by an interrupted call (a finished run has its result file)
        print(f"  {name}: starting again the run an earlier call left unfinished", flush=True)
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    summary = train(cfg, log=lambda *_: None)
    train_s = time.perf_counter() - t0
    if summary["iterations"] < args.steps or summary.get("stopped_early"):
        sys.exit(f"{name} stopped at step {summary['iterations']} of {args.steps}; not recorded")
    model = load_for_inference(run_dir).model
    scored = score_heldout(model, load_tokenizer(run_dir / "tokenizer"), data, load_meta(data))
    curve = {
        int(r["step"]): r["eval/val_loss"]
        for r in read_jsonl(run_dir / "metrics.jsonl")
        if "eval/val_loss" in r
    }
    return {
        "recipe": recipe,
        "lr": lr,
        "seed": seed,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "eval_iters": args.eval_iters,
        "tokens_per_step": cfg.train.batch_size * cfg.model.block_size,
        "val_curve": curve,
        "final_val_loss": curve[max(curve)],
        "val_bpb": scored["bpb"],
        "train_s": round(train_s, 1),
        "iterations": summary["iterations"],
    }


def run_name(recipe: str, lr: float, seed: int) -> str:
    return f"{recipe}-lr{lr:g}-s{seed}"


def setup_name(args) -> str:
    """What makes two calls' results comparable: runs of another length or evaluation are
    kept apart, never mixed in one table."""
    return f"steps{args.steps}-eval{args.eval_every}x{args.eval_iters}"


def run_all(work: Path, jobs: list[tuple[str, float, int]], args) -> dict[tuple, dict]:
    """Each missing run in a child process (one thread each, `--jobs` at a time)."""
    results, todo = {}, []
    folder = work / "results" / setup_name(args)
    for job in jobs:
        path = folder / f"{run_name(*job)}.json"
        if path.is_file():
            results[job] = json.loads(path.read_text())
        else:
            todo.append(job)
    running: list[tuple[tuple, subprocess.Popen]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    while todo or running:
        while todo and len(running) < args.jobs:
            job = todo.pop(0)
            cmd = [sys.executable, __file__, "--one", *map(str, job), "--work", str(work)]
            cmd += ["--steps", str(args.steps), "--eval-every", str(args.eval_every)]
            cmd += ["--eval-iters", str(args.eval_iters)]
            print(f"  run {run_name(*job)}", flush=True)
            running.append((job, subprocess.Popen(cmd, env=env)))
        time.sleep(1)
        for job, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((job, proc))
            path = folder / f"{run_name(*job)}.json"
            if proc.returncode != 0 or not path.is_file():
                sys.exit(f"run {run_name(*job)} failed (exit {proc.returncode})")
            results[job] = json.loads(path.read_text())
            r = results[job]
            print(
                f"  done {run_name(*job)}: val loss {r['final_val_loss']:.4f}, "
                f"bpb {r['val_bpb']:.4f}, {r['train_s']:.0f} s",
                flush=True,
            )
    return results


def step_reaching(curve: dict, target: float) -> float | None:
    """The step where val loss first falls to `target`, interpolated linearly between the two
    evaluations around the crossing (the loss is evaluated only every `--eval-every` steps)."""
    points = sorted((int(s), v) for s, v in curve.items())
    for (s0, v0), (s1, v1) in zip(points, points[1:], strict=False):
        if v1 <= target:
            return s0 + (s1 - s0) * (v0 - target) / (v0 - v1) if v0 > target else float(s0)
    return None


def spread(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def report(tuned: dict[str, float], results: dict[tuple, dict], seeds: list[int]) -> None:
    base = [results[("adamw-cosine", tuned["adamw-cosine"], s)] for s in seeds]
    target = statistics.mean(r["final_val_loss"] for r in base)
    print(f"\ntarget: the tuned AdamW + cosine final val loss, {target:.4f} (mean of {len(seeds)})")
    print("| recipe | peak lr | steps to target | × AdamW steps | tokens to target | "
          "final val loss | val bits/byte |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    base_steps = float(base[0]["steps"])  # the baseline reaches its final loss at its end
    for recipe, lr in tuned.items():
        runs = [results[(recipe, lr, s)] for s in seeds]
        if recipe == "adamw-cosine":
            hits = [base_steps] * len(runs)
        else:
            hits = [step_reaching(r["val_curve"], target) for r in runs]
        reached = [h for h in hits if h is not None]
        steps = statistics.mean(reached) if reached else None
        text = spread(reached, 0) if reached else "-"
        if len(reached) < len(hits):
            text += f" ({len(hits) - len(reached)} of {len(hits)} not reached)"
        ratio = f"{steps / base_steps:.2f}" if steps else "-"
        tokens = f"{steps * runs[0]['tokens_per_step'] / 1e6:.2f} M" if steps else "-"
        print(
            f"| {recipe} | {lr:g} | {text} | {ratio} | {tokens} | "
            f"{spread([r['final_val_loss'] for r in runs])} | "
            f"{spread([r['val_bpb'] for r in runs])} |"
        )
    print(f"\nmean ± sample standard deviation over seeds {', '.join(map(str, seeds))}; steps to")
    print("target interpolated between evaluations; the baseline's is its whole run by definition")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="work/quality_bench", help="data, runs and results")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipes")
    for recipe, grid in DEFAULT_GRID.items():
        ap.add_argument(f"--grid-{recipe}", default=grid, help=f"peak lrs swept for {recipe}")
    ap.add_argument("--seeds", type=int, default=3, help="scored seeds per tuned recipe")
    ap.add_argument("--tune-seed", type=int, default=1337, help="the seed the rates are swept on")
    ap.add_argument("--first-seed", type=int, default=1338, help="the first scored seed")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    ap.add_argument("--eval-every", type=int, default=20, help="steps between val evaluations")
    ap.add_argument("--eval-iters", type=int, default=4, help="val batches per evaluation")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each)")
    ap.add_argument("--one", nargs=3, metavar=("RECIPE", "LR", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    if args.one:
        recipe, lr, seed = args.one[0], float(args.one[1]), int(args.one[2])
        result = run_one(work, recipe, lr, seed, args)
        folder = work / "results" / setup_name(args)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{run_name(recipe, lr, seed)}.json.tmp"
        tmp.write_text(json.dumps(result))
        tmp.replace(folder / f"{run_name(recipe, lr, seed)}.json")  # whole, or not there
        return
    recipes, grids, seeds = check_args(ap, args)
    tune = args.tune_seed
    prepare_data(work)
    print(f"sweep on seed {tune} ({setup_name(args)}):")
    sweep = run_all(work, [(r, lr, tune) for r in recipes for lr in grids[r]], args)
    tuned = {
        r: min(grids[r], key=lambda lr, r=r: sweep[(r, lr, tune)]["final_val_loss"])
        for r in recipes
    }
    for r in recipes:
        row = ", ".join(f"{lr:g}: {sweep[(r, lr, tune)]['final_val_loss']:.4f}" for lr in grids[r])
        print(f"  {r}: final val loss by peak lr {row} -> {tuned[r]:g}")
    print(f"seeds {', '.join(map(str, seeds))} at the tuned rates:")
    results = run_all(work, [(r, tuned[r], s) for r in recipes for s in seeds], args)
    if "adamw-cosine" in tuned:
        report(tuned, results, seeds)


def check_args(ap: argparse.ArgumentParser, args) -> tuple[list[str], dict, list[int]]:
    """The recipes, their rate grids and the scored seeds, or one line on what is wrong."""
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES] or ([] if recipes else [args.recipes])
    if unknown:
        ap.error(f"--recipes: {unknown[0]!r} is not one of {', '.join(RECIPES)}")
    grids = {}
    for r in recipes:
        text = getattr(args, f"grid_{r.replace('-', '_')}")
        try:
            grids[r] = [float(x) for x in text.split(",")]
        except ValueError:
            ap.error(
                f"--grid-{r} {text!r}: give learning rates separated by commas, e.g. 0.01,0.02"
            )
        if not all(0 < lr < float("inf") for lr in grids[r]):
            ap.error(f"--grid-{r} {text!r}: every learning rate must be a positive number")
    for flag in ("seeds", "steps", "eval_every", "eval_iters", "jobs"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be 1 or more, not {getattr(args, flag)}")
    seeds = [args.first_seed + i for i in range(args.seeds)]
    if args.tune_seed in seeds:
        ap.error(f"the tuning seed {args.tune_seed} is among the scored seeds {seeds}")
    return recipes, grids, seeds


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the runs in progress are started again by the next call
        sys.exit("interrupted: finished runs are kept; the same command goes on from them")
