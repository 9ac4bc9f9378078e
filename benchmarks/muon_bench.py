"""Time one Muon step on a preset's block matrices: torch.optim.Muon (matrix by matrix) against
hellolondon's (the matrices of one shape together), interleaved, with the number of kernels
each step dispatches. Random gradients; the same update (to bfloat16 rounding, see docs/training.md)
with `--ns-dtype bf16`. By default ours iterates as in training: in bf16 on a GPU, in float32 on
the CPU (where torch's runs bf16 products).

    python benchmarks/muon_bench.py --preset slm --device cuda
    python benchmarks/muon_bench.py --preset tiny --device cpu --repeats 3 --ns-dtype bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hellolondon.config import PRESETS
from hellolondon.model import GPT
from hellolondon.train.muon import Muon
from hellolondon.train.optim import _is_hidden_matrix


class CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def matrices(preset: str, device: torch.device) -> list[torch.nn.Parameter]:
    cfg = PRESETS[preset].model
    model = GPT(cfg).to(device)
    return [p for n, p in model.named_parameters() if _is_hidden_matrix(n, p)]


def time_steps(opt, params, steps: int, device: torch.device) -> float:
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # state made, allocator warm
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    sync()
    return 1000.0 * (time.perf_counter() - t0) / steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="slm")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds of both")
    p.add_argument(
        "--ns-dtype",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="our Newton-Schulz dtype (auto: bf16 on CUDA, float32 elsewhere, as in training)",
    )
    args = p.parse_args()
    if not hasattr(torch.optim, "Muon"):
        raise SystemExit("torch.optim.Muon (torch >= 2.9) is needed for the comparison")
    device = torch.device(args.device)
    params = matrices(args.preset, device)
    kw = dict(lr=0.02, momentum=0.95, weight_decay=0.0)
    ns_dtype = {"auto": None, "bf16": torch.bfloat16, "fp32": torch.float32}[args.ns_dtype]
    ours = Muon(params, **kw, ns_dtype=ns_dtype)
    impls = {"torch.optim.Muon": torch.optim.Muon(params, **kw), "hellolondon": ours}
    times: dict[str, list[float]] = {k: [] for k in impls}
    ops = {}
    for name, opt in impls.items():
        for q in params:
            q.grad = torch.randn_like(q)
        with CountOps() as count:
            opt.step()
        ops[name] = count.ops
    for _ in range(args.repeats):
        for name, opt in impls.items():
            times[name].append(time_steps(opt, params, args.steps, device))
    shapes = sorted({tuple(q.shape) for q in params})
    for name in impls:
        t = times[name]
        print(json.dumps({
            "impl": name, "preset": args.preset, "device": str(device),
            "torch": torch.__version__, "matrices": len(params), "shapes": len(shapes),
            "ns_dtype": str(ours.iteration_dtype(device) if name == "hellolondon"
                            else torch.bfloat16).replace("torch.", ""),
            "ops_per_step": ops[name], "ms_per_step_median": statistics.median(t),
            "ms_per_step_min": min(t), "ms_per_step_max": max(t), "repeats": len(t),
        }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
