"""Time nanoGPT's `model.py` (https://github.com/karpathy/nanoGPT) at the settings of
`hellolondon bench`, for a side-by-side row: the same shape, vocabulary, batch, bf16 autocast,
torch.compile, fused AdamW (its `configure_optimizers`), grad clipping at 1.0, random tokens
made on the GPU, first step (compilation), peak memory, `--repeat` and `--profile` reported
the same way (the profile needs hellolondon importable).

nanoGPT's code is not part of this repository: pass the folder that holds its model.py.

    python benchmarks/nanogpt_bench.py --nanogpt DIR --preset slm --batch-size 32
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

SHAPES = {  # the presets' shapes (src/hellolondon/config.py)
    "tiny": dict(n_layer=4, n_head=4, n_embd=256, block_size=256),
    "slm": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
    "regular": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024),
}


def load(folder: Path):
    path = folder / "model.py"
    if not path.is_file():
        sys.exit(f"no model.py in {folder}")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nanogpt", required=True, type=Path, help="folder with nanoGPT's model.py")
    p.add_argument("--preset", choices=list(SHAPES), default="slm")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=30000)
    p.add_argument("--block-size", type=int, help="sequence length (default: the preset's)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeat", type=int, default=1, help="timings of --steps steps; the median")
    p.add_argument("--profile", type=Path, help="profile 3 steps too; trace in DIR/trace.json")
    p.add_argument("--compile", choices=["true", "false"], default="true")
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--peak-tflops", type=float, default=0.0, help="for MFU (default: from the GPU name)"
    )
    args = p.parse_args()

    nano = load(args.nanogpt)
    shape = dict(SHAPES[args.preset])
    if args.block_size:
        shape["block_size"] = args.block_size
    device = torch.device(args.device)
    torch.manual_seed(1337)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = nano.GPTConfig(**shape, vocab_size=args.vocab_size, dropout=0.0, bias=False)
    model = nano.GPT(cfg).to(device)
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device.type)
    step_model = torch.compile(model) if args.compile == "true" else model
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(1337)
    T, B = shape["block_size"], args.batch_size
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        xy = torch.randint(0, args.vocab_size, (B, T + 1), device=device, generator=gen)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            # nanoGPT's loss views its targets, so they must be contiguous (its loader's are)
            _, loss = step_model(xy[:, :-1].contiguous(), xy[:, 1:].contiguous())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    for _ in range(max(0, args.warmup - 1)):
        step()
    sync()
    windows = []
    for _ in range(max(1, args.repeat)):  # as `hellolondon bench --repeat`
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        sync()
        windows.append(1000.0 * (time.perf_counter() - t0) / args.steps)
    ms = statistics.median(windows)
    tps = B * T / (ms / 1000.0)
    n = model.get_num_params()  # without the position table, as hellolondon counts
    flops_per_token = 6 * n + 12 * shape["n_layer"] * shape["n_embd"] * T
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if peak is None and device.type == "cuda":
        try:  # the same peak table as `hellolondon bench`, when it is importable
            from hellolondon.hardware import peak_flops

            peak = peak_flops(torch.cuda.get_device_name(device))
        except ImportError:
            peak = None
    result = {
        "impl": "nanoGPT model.py",
        "preset": args.preset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "compile": args.compile,
        "batch_size": B,
        "block_size": T,
        "vocab_size": args.vocab_size,
        "ms_per_iter": ms,
        "ms_per_iter_windows": windows,
        "tokens_per_sec": tps,
        "mfu_percent": 100.0 * flops_per_token * tps / peak if peak else None,
        "first_step_s": first,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "final_loss": loss.item(),
    }
    if args.profile:  # the same summary as `hellolondon bench --profile`
        from hellolondon.step_profile import profile_steps

        trace = args.profile / "trace.json"
        result["profile"] = profile_steps(step, device, 3, trace)
        result["profile"]["trace"] = str(trace)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
