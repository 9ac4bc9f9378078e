"""Facts about the machine: device, GPU names and memory, peak FLOPS for MFU, live GPU metrics."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

# Dense bf16 tensor-core peak (no sparsity), FLOP/s, from each vendor datasheet. The first key
# found in the device name wins, so more specific names come first.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("A30", 165e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("RTX 6000 Ada", 364e12),
    ("RTX 4090", 165e12),  # with fp32 accumulate
    ("RTX 3090", 71e12),
    ("V100", 125e12),  # fp16: no bf16 on Volta
    ("T4", 65e12),  # fp16
]


def peak_flops(device_name: str, override: float | None = None) -> float | None:
    """Peak FLOP/s for MFU: an explicit override (or HELLOLONDON_PEAK_TFLOPS), else the table;
    None when unknown (MFU is then not reported rather than made up)."""
    if override:
        return float(override)
    env = os.environ.get("HELLOLONDON_PEAK_TFLOPS")
    if env:
        return float(env) * 1e12
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def mfu_percent(
    flops_per_token: int, tokens_per_sec: float, devices: int, peak: float | None
) -> float | None:
    """Model FLOPs utilisation in percent: the FLOPs each device achieves over its peak."""
    if not peak:
        return None
    return 100.0 * flops_per_token * tokens_per_sec / devices / peak


def cpu_matmul_flops(width: int = 768) -> float:
    """FLOP/s this CPU reaches on a float32 matmul of a transformer's shape (~0.1 s to measure)."""
    import time

    g = torch.Generator().manual_seed(0)  # its own: the training RNG stream stays untouched
    a, b = torch.randn(512, width, generator=g), torch.randn(width, 4 * width, generator=g)
    torch.mm(a, b)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.1:
        torch.mm(a, b)
        n += 1
    return 2.0 * 512 * width * 4 * width * n / (time.perf_counter() - t0)


def resolve_device(name: str = "auto") -> torch.device:
    from hellolondon.errors import UserError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but this machine has no CUDA GPU; use device=cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("MPS was asked for but is not available here; use device=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def hardware_facts(device: torch.device) -> dict[str, Any]:
    """What the run config records about the hardware."""
    facts: dict[str, Any] = {
        "device": str(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "cpu_count": os.cpu_count(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "gpu_names": [],
        "gpu_memory_gb": [],
    }
    for i in range(facts["gpu_count"]):
        props = torch.cuda.get_device_properties(i)
        facts["gpu_names"].append(props.name)
        facts["gpu_memory_gb"].append(round(props.total_memory / 2**30, 2))
    return facts


_nvml_handle: Any = None


def _nvml_utilization(index: int) -> float | None:
    global _nvml_handle
    try:
        import pynvml  # optional: nvidia-ml-py

        if _nvml_handle is None:
            pynvml.nvmlInit()
            _nvml_handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return float(pynvml.nvmlDeviceGetUtilizationRates(_nvml_handle).gpu)
    except Exception:
        return None


def gpu_metrics(device: torch.device) -> dict[str, float]:
    """The `gpu/*` metrics for one row; empty off CUDA."""
    if device.type != "cuda":
        return {}
    gb = 2**30
    row = {
        "gpu/mem_allocated_gb": torch.cuda.memory_allocated(device) / gb,
        "gpu/mem_reserved_gb": torch.cuda.memory_reserved(device) / gb,
        "gpu/max_mem_allocated_gb": torch.cuda.max_memory_allocated(device) / gb,
        "gpu/mem_total_gb": torch.cuda.get_device_properties(device).total_memory / gb,
    }
    util = _nvml_utilization(device.index or 0)
    if util is not None:
        row["gpu/utilization"] = util
    return row
