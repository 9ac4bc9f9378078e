"""Time one Muon step on a preset's block matrices: torch.optim.Muon (matrix by matrix) against
hellolondon's (the matrices of one shape together), interleaved, with the number of kernels
each step dispatches. Random gradients; the same update (to bfloat16 rounding, see docs/training.md).

    python benchmarks/muon_bench.py --preset slm --device cuda
    python benchmarks/muon_bench.py --preset tiny --device cpu --repeats 3
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
    args = p.parse_args()
    if not hasattr(torch.optim, "Muon"):
        raise SystemExit("torch.optim.Muon (torch >= 2.9) is needed for the comparison")
    device = torch.device(args.device)
    params = matrices(args.preset, device)
    kw = dict(lr=0.02, momentum=0.95, weight_decay=0.0)
    impls = {"torch.optim.Muon": torch.optim.Muon(params, **kw), "hellolondon": Muon(params, **kw)}
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
            "ops_per_step": ops[name], "ms_per_step_median": statistics.median(t),
            "ms_per_step_min": min(t), "ms_per_step_max": max(t), "repeats": len(t),
        }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
