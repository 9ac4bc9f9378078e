"""Where a training step's time goes: a few steps under `torch.profiler`, summed by kind of
work (matrix products, attention, fused element-wise kernels, optimizer, copies), with the
share of the wall time the GPU was busy. `hellolondon bench --profile DIR` prints it and
writes the trace (open it in https://ui.perfetto.dev or chrome://tracing).

On a GPU the device kernels are timed; on a CPU the operators' own (self) CPU time is.
Whatever runs inside the optimizer's range of a step (`optimizer_range`: unscaling, clipping
and the optimizer step) counts as optimizer, whatever its name: Muon's Newton-Schulz products
are matrix products, but the optimizer's cost."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# (kind, substrings of a kernel or operator name, lower case); the first match wins. Kernel
# names: cuBLAS/CUTLASS GEMMs ("sm90_xmma_gemm_...", "nvjet_...", "cutlass..."), cuDNN and
# flash attention ("cudnn_generated_fort_native_sdpa...", "flash_fwd_kernel", "fmha..."),
# inductor's Triton kernels ("triton_per_fused_...", "triton_poi_fused_..."), the fused
# optimizers' multi-tensor kernels (the gradient clipping's norm among them); on a CPU, aten
# operator names. Compiled kernels are matched before copies: their names list the fused ops
# ("..._to_copy_add_...").
# fmt: off
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("sdpa", "flash", "fmha", "attention", "attn")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "aten::mm", "aten::addmm",
                "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")),
    ("fused (compiled)", ("triton_", "cpp_fused", "compiledfxgraph", "torch-compiled region",
                          "compiledfunction")),
    ("optimizer", ("multi_tensor", "adam", "foreach", "lerp", "muon", "vector_norm")),
    ("element-wise (eager)", ("elementwise", "reduce_kernel", "layer_norm", "softmax", "gelu",
                              "aten::add", "aten::mul", "aten::div", "aten::sub", "aten::where",
                              "aten::sum", "aten::mean", "aten::norm", "nll_loss")),
    ("copy", ("memcpy", "memset", "copy_", "aten::to", "aten::contiguous")),
)
# fmt: on


OPTIMIZER_RANGE = "hellolondon: optimizer step"  # the range `optimizer_range` marks


def optimizer_range() -> contextlib.AbstractContextManager[Any]:
    """Marks the optimizer's part of a training step for a profiler that is recording, and
    costs nothing otherwise (a range is entered only while a profiler records)."""
    if torch.autograd._profiler_enabled():
        return torch.profiler.record_function(OPTIMIZER_RANGE)
    return contextlib.nullcontext()


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, needles in KINDS:
        if any(n in low for n in needles):
            return kind
    return "other"


def busy_us(spans: list[tuple[float, float]]) -> float:
    """Time covered by at least one of the (start, end) spans: kernels on two streams that run
    at once count once."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def summarize(
    events: list[tuple[str, float, float, str]], wall_us: float, steps: int, timed_on: str
) -> dict[str, Any]:
    """`events`: (name, start µs, duration µs, kind) of the device kernels (or CPU operators'
    self time, start unused). Times per step in ms, by kind and for the 10 costliest names
    (a name counted under two kinds, as a product in the optimizer and in the model, twice)."""
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[tuple[str, str], float] = defaultdict(float)
    for name, _, dur, kind in events:
        by_kind[kind] += dur
        by_name[name, kind] += dur
    summed = sum(by_kind.values())
    per_step = lambda us: us / steps / 1000.0  # noqa: E731
    result: dict[str, Any] = {
        "timed_on": timed_on,
        "steps": steps,
        "wall_ms_per_step": per_step(wall_us),
        "summed_ms_per_step": per_step(summed),
        "kinds": {
            k: {"ms_per_step": per_step(v), "share": v / summed if summed else 0.0}
            for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])
        },
        "top": [
            {"name": n[:120], "kind": kind, "ms_per_step": per_step(v)}
            for (n, kind), v in sorted(by_name.items(), key=lambda kv: -kv[1])[:10]
        ],
    }
    if timed_on == "gpu":
        busy = busy_us([(s, s + d) for _, s, d, _ in events])
        result["gpu_busy_share"] = busy / wall_us if wall_us else None
    return result


def _events(prof: Any, on_device: bool) -> list[tuple[str, float, float, str]]:
    """Device kernels (name, start, duration, kind), or CPU operators (name, start, self time,
    kind). A kernel's kind is that of the operator that launched it where that ran in the
    optimizer's range. The GPU's copies of `record_function` ranges are no kernels: their time
    is that of the kernels inside them, counted already."""
    from torch.autograd import DeviceType

    events = list(prof.events())
    if not on_device:
        return [
            (e.name, float(e.time_range.start), float(e.self_cpu_time_total), _kind(e.name, e))
            for e in events
            if e.device_type == DeviceType.CPU and e.self_cpu_time_total > 0
        ]
    # a kernel's linked correlation id is the id of the CPU operator that launched it
    linked = _linked_ids(prof, events)
    launchers = {e.id: e for e in events if e.device_type == DeviceType.CPU and not linked(e)}
    return [
        (e.name, float(e.time_range.start), float(e.time_range.elapsed_us()),
         _kind(e.name, launchers.get(linked(e))))
        for e in events
        if e.device_type == DeviceType.CUDA and not e.is_user_annotation
    ]  # fmt: skip


def _linked_ids(prof: Any, events: list) -> Callable[[Any], int]:
    """An event's linked correlation id (0: none). The events carry it from torch 2.12 on;
    torch 2.11's keep it only in the kineto events they were made from, each found by its
    kind, id and start (in ns from the trace's start, as the event's start in µs holds it)."""
    if all(hasattr(e, "linked_correlation_id") for e in events[:1]):
        return lambda e: e.linked_correlation_id
    results = prof.profiler.kineto_results
    t0 = results.trace_start_ns()
    ids = {
        (k.device_type(), k.correlation_id(), k.start_ns() - t0): k.linked_correlation_id()
        for k in results.events()
    }
    return lambda e: ids.get((e.device_type, e.id, round(e.time_range.start * 1000)), 0)


def _kind(name: str, cpu_event: Any) -> str:
    """The kind of an operator or kernel: optimizer where the CPU operator (the launcher of a
    kernel) ran inside the optimizer's range, else by its name."""
    while cpu_event is not None:
        if cpu_event.name == OPTIMIZER_RANGE:
            return "optimizer"
        cpu_event = cpu_event.cpu_parent
    return kind_of(name)


def profile_steps(
    step: Callable[[], Any], device: torch.device, steps: int = 3, trace: Path | None = None
) -> dict[str, Any]:
    """Run `step` `steps` times (after warm-up, so no compilation) under the profiler; the
    summary of where the time went, and the trace written to `trace` if given."""
    from torch.profiler import ProfilerActivity

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    with warnings.catch_warnings():
        # one profiling cycle here: torch's note about events of earlier cycles does not apply
        warnings.filterwarnings("ignore", message=".*Profiler clears events")
        prof, wall_us = _profiled(step, steps, device, activities)
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
    return summary_of(prof, device, wall_us, steps)


def _profiled(step: Callable[[], Any], steps: int, device: torch.device, activities: list):
    from torch.profiler import profile

    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall_us = (time.perf_counter() - t0) * 1e6
    return prof, wall_us


def summary_of(prof: Any, device: torch.device, wall_us: float, steps: int) -> dict[str, Any]:
    """The GPU kernels' summary on a GPU, the CPU operators' elsewhere, or where no kernel was
    recorded (CUPTI refused, as in a container without profiling rights)."""
    kernels = _events(prof, on_device=True) if device.type == "cuda" else []
    if kernels:
        return summarize(kernels, wall_us, steps, "gpu")
    result = summarize(_events(prof, on_device=False), wall_us, steps, "cpu")
    if device.type == "cuda":
        result["note"] = "no GPU kernels were recorded; CPU time of the operators instead"
    return result


def format_summary(s: dict[str, Any]) -> list[str]:
    """The summary as console lines."""
    what = "GPU kernel time" if s["timed_on"] == "gpu" else "CPU time of the operators"
    lines = [
        f"profile of {s['steps']} steps: {s['wall_ms_per_step']:.1f} ms wall per step, "
        f"{what} {s['summed_ms_per_step']:.1f} ms per step"
        + (
            f", GPU busy {100 * s['gpu_busy_share']:.0f}% of the wall time"
            if s.get("gpu_busy_share") is not None
            else ""
        )
    ]
    if "note" in s:
        lines.append(f"  note: {s['note']}")
    for kind, v in s["kinds"].items():
        lines.append(f"  {kind:<21} {v['ms_per_step']:8.2f} ms  {100 * v['share']:5.1f}%")
    lines.append("  costliest:")
    for t in s["top"]:
        lines.append(f"    {t['ms_per_step']:8.2f} ms  {t['kind']:<21} {t['name'][:90]}")
    return lines
