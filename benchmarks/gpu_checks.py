"""Checks that `benchmarks/gpu_suite.sh` runs between its commands; each prints one JSON line
and exits 1 when its check fails.

    python benchmarks/gpu_checks.py losses RUN_A RUN_B --after 100 [--before N] --tol 0.05
    python benchmarks/gpu_checks.py parity RUN EXPORT_DIR
    python benchmarks/gpu_checks.py attention [--batch 8]
    python benchmarks/gpu_checks.py curves RUN_A RUN_B --out DIR
    python benchmarks/gpu_checks.py ratio OURS_JSON NANOGPT_JSON
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _metrics(run: Path) -> list[dict]:
    from hellolondon.rundir import RunDir

    found = (
        [RunDir(run)]
        if RunDir.is_run(run)
        else [r for r in map(RunDir, sorted(Path(run).rglob("*"))) if RunDir.is_run(r.path)]
    )
    if not found:
        sys.exit(f"no run folder under {run}")
    return found[0].rows()


def _series(run: Path, key: str) -> dict[int, float]:
    return {int(r["step"]): float(r[key]) for r in _metrics(run) if key in r}


def losses(args: argparse.Namespace) -> int:
    """Train losses of two runs at the steps both logged after `--after` (and up to `--before`,
    when given): the largest and the mean absolute difference, which must stay within `--tol`.
    `--check` names the JSON line (`losses` for the resume check, `noise` for two uninterrupted
    runs)."""
    a, b = _series(args.a, "train/loss"), _series(args.b, "train/loss")
    last = math.inf if args.before is None else args.before
    common = sorted(s for s in set(a) & set(b) if args.after < s <= last)
    diffs = [abs(a[s] - b[s]) for s in common]
    ok = bool(common) and all(math.isfinite(d) for d in diffs) and max(diffs) <= args.tol
    out = {
        "check": args.check,
        "a": str(args.a),
        "b": str(args.b),
        "steps_compared": len(common),
        "first": common[0] if common else None,
        "last": common[-1] if common else None,
        "max_abs_diff": max(diffs) if diffs else None,
        "mean_abs_diff": sum(diffs) / len(diffs) if diffs else None,
        "bitwise_equal_steps": sum(d == 0 for d in diffs),
        "tol": args.tol,
        "ok": ok,
    }
    print(json.dumps(out))
    return 0 if ok else 1


def parity(args: argparse.Namespace) -> int:
    """Logits of our checkpoint and of its transformers export, both on the GPU, on one full
    context of random tokens: in float32 (TF32 off) and under bf16 autocast."""
    import torch
    from transformers import GPT2LMHeadModel

    from hellolondon.train.checkpoint import load_for_inference

    torch.backends.cuda.matmul.allow_tf32 = False
    ours = load_for_inference(args.run, "cuda").model.float().eval()
    hf = GPT2LMHeadModel.from_pretrained(str(args.export), local_files_only=True).cuda().eval()
    g = torch.Generator(device="cuda").manual_seed(0)
    T = ours.config.block_size
    idx = torch.randint(0, ours.config.vocab_size, (2, T), device="cuda", generator=g)
    with torch.inference_mode():
        f32 = float((ours(idx)[0] - hf(idx).logits).abs().max())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf = float((ours(idx)[0].float() - hf(idx).logits.float()).abs().max())
    ok = f32 <= args.tol
    print(json.dumps({"check": "parity", "fp32_max_abs": f32, "bf16_max_abs": bf, "tol": args.tol,
                      "tokens": T, "ok": ok}))  # fmt: skip
    return 0 if ok else 1


def attention(args: argparse.Namespace) -> int:
    """Forward+backward time of causal SDPA at the SLM shape (bf16) through each kernel, and
    which kernel PyTorch picks by default (from the profiler's kernel names)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    B, H, T, D = args.batch, 12, 1024, 64
    q, k, v = (
        torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        for _ in range(3)
    )

    def run():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

    def timed() -> float:
        for _ in range(3):
            run()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(10):
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return sorted(times)[len(times) // 2]

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    names = sorted({e.key for e in prof.key_averages() if "attention" in e.key.lower() or
                    "fmha" in e.key.lower() or "flash" in e.key.lower()})  # fmt: skip
    rows: dict[str, float | str] = {"default": timed()}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            rows[name.lower()] = "absent"
            continue
        try:
            with sdpa_kernel([backend]):
                rows[name.lower()] = timed()
        except RuntimeError as exc:
            rows[name.lower()] = f"unavailable: {str(exc).splitlines()[0][:120]}"
    print(json.dumps({"check": "attention", "shape": [B, H, T, D], "dtype": "bfloat16",
                      "median_ms_fwd_bwd": rows, "default_kernels": names[:8]}))  # fmt: skip
    return 0


def curves(args: argparse.Namespace) -> int:
    """Two runs' loss curves side by side (a CSV and, when matplotlib is there, a PNG) and the
    gap between them at the end: for the bf16-vs-fp8 comparison."""
    a, b = _series(args.a, "train/loss"), _series(args.b, "train/loss")
    va, vb = _series(args.a, "eval/val_loss"), _series(args.b, "eval/val_loss")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = sorted(set(a) & set(b))
    lines = ["step,loss_a,loss_b"] + [f"{s},{a[s]},{b[s]}" for s in steps]
    (out / f"{args.name}.csv").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(steps, [a[s] for s in steps], label=args.label_a)
        ax.plot(steps, [b[s] for s in steps], label=args.label_b)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.legend()
        fig.savefig(out / f"{args.name}.png", dpi=100, bbox_inches="tight")
    except ImportError:
        pass
    tail = steps[-max(1, len(steps) // 10) :]
    mean_a = sum(a[s] for s in tail) / len(tail) if tail else None
    mean_b = sum(b[s] for s in tail) / len(tail) if tail else None
    last_val = sorted(set(va) & set(vb))
    print(json.dumps({
        "check": "curves", "name": args.name, "a": args.label_a, "b": args.label_b,
        "steps": len(steps), "last_tenth_mean_a": mean_a, "last_tenth_mean_b": mean_b,
        "val_a": va[last_val[-1]] if last_val else None,
        "val_b": vb[last_val[-1]] if last_val else None,
    }))  # fmt: skip
    return 0


def ratio(args: argparse.Namespace) -> int:
    """Ours against nanoGPT's, from two bench JSON results: tokens/s ratio of the medians, its
    range over the timings (worst pairing to best), memory and first-step times, and, where
    both were profiled, each kind of work's ms per step side by side."""
    a, b = json.loads(args.ours), json.loads(args.theirs)
    wa = a.get("ms_per_iter_windows") or [a["ms_per_iter"]]
    wb = b.get("ms_per_iter_windows") or [b["ms_per_iter"]]
    mem = (
        a["peak_memory_gb"] / b["peak_memory_gb"]
        if a["peak_memory_gb"] and b["peak_memory_gb"]
        else None
    )
    out = {
        "section": "bench-ratio",
        "preset": b.get("preset"),
        "batch": b.get("batch_size"),
        **({"options": args.options} if args.options else {}),
        "tokens_per_sec_ratio": a["tokens_per_sec"] / b["tokens_per_sec"],
        "ratio_range": [min(wb) / max(wa), max(wb) / min(wa)],  # ms theirs / ms ours
        "timings": [len(wa), len(wb)],
        "peak_memory_ratio": mem,
        "first_step_s": a["first_step_s"],
        "nanogpt_first_step_s": b["first_step_s"],
    }
    if "profile" in a and "profile" in b:
        kinds = dict.fromkeys([*a["profile"]["kinds"], *b["profile"]["kinds"]])
        ms = lambda r, k: round(r["profile"]["kinds"].get(k, {}).get("ms_per_step", 0.0), 3)  # noqa: E731
        out["ms_per_step_by_kind"] = {k: [ms(a, k), ms(b, k)] for k in kinds}
        out["gpu_busy_share"] = [
            a["profile"].get("gpu_busy_share"),
            b["profile"].get("gpu_busy_share"),
        ]
    print(json.dumps(out))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(required=True)
    q = sub.add_parser("losses")
    q.add_argument("a", type=Path)
    q.add_argument("b", type=Path)
    q.add_argument("--after", type=int, default=0)
    q.add_argument("--before", type=int, default=None)
    q.add_argument("--tol", type=float, default=0.05)
    q.add_argument("--check", default="losses")
    q.set_defaults(func=losses)
    q = sub.add_parser("parity")
    q.add_argument("run", type=Path)
    q.add_argument("export", type=Path)
    q.add_argument("--tol", type=float, default=2e-3)
    q.set_defaults(func=parity)
    q = sub.add_parser("attention")
    q.add_argument("--batch", type=int, default=8)
    q.set_defaults(func=attention)
    q = sub.add_parser("curves")
    q.add_argument("a", type=Path)
    q.add_argument("b", type=Path)
    q.add_argument("--out", required=True)
    q.add_argument("--name", default="curves")
    q.add_argument("--label-a", default="a")
    q.add_argument("--label-b", default="b")
    q.set_defaults(func=curves)
    q = sub.add_parser("ratio")
    q.add_argument("ours", help="hellolondon bench --json's line")
    q.add_argument("theirs", help="nanogpt_bench.py's line")
    q.add_argument("--options", default="", help="our row's settings, when it has any")
    q.set_defaults(func=ratio)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
