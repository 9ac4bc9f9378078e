"""Facts about the machine: device, GPU names and memory, peak FLOPS for MFU, live GPU metrics."""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import torch

from hellolondon.environment import env_number
from hellolondon.errors import UserError

# Dense tensor-core peak (no 2:4 sparsity), FLOP/s: bf16, or fp16 with fp32 accumulate before
# Ampere (no bf16 on Volta and Turing). Vendor tables mostly print the sparse figure (marked *),
# twice the dense one. Each entry is (pattern, FLOP/s): a regular expression matched against the
# name torch.cuda.get_device_name() returns, upper-cased with "-" and "_" read as spaces
# ("NVIDIA A100-SXM4-80GB" -> "NVIDIA A100 SXM4 80GB"). The first match wins, so specific names
# (H100 PCIE) come before general ones (H100), and word boundaries keep "A10" from matching
# "A100" or "RTX A1000". Cards with no vendor figure found (A10G, H20, ...) are left out: MFU is
# then not reported unless HELLOLONDON_PEAK_TFLOPS gives the peak.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    # Hopper. NVIDIA H100 Tensor Core GPU datasheet: BF16 1,979* (SXM), 1,513* (PCIe), 1,671*
    # (NVL); NVIDIA H200 Tensor Core GPU datasheet: 1,979* (SXM), 1,671* (NVL); NVIDIA GH200
    # Grace Hopper Superchip datasheet: 1,979*; NVIDIA H800 datasheet: 1,979* (SXM), 1,513* (PCIe).
    (r"\bGH200\b", 989.4e12),
    (r"\bH200 NVL\b", 835.5e12),
    (r"\bH200\b", 989.4e12),  # SXM ("NVIDIA H200")
    (r"\bH100 NVL\b", 835.5e12),
    (r"\bH100 PCIE\b", 756.5e12),
    (r"\bH100\b", 989.4e12),  # SXM ("NVIDIA H100 80GB HBM3")
    (r"\bH800 PCIE\b", 756.5e12),
    (r"\bH800\b", 989.4e12),  # SXM
    # Blackwell. NVIDIA GB200 NVL72 / HGX B200 specifications: FP16/BF16 5 PF* per GB200 GPU,
    # 4.5 PF* per B200; NVIDIA Blackwell architecture technical brief: 3.5 PF* per HGX B100 GPU.
    (r"\bGB200\b", 2500e12),
    (r"\bB200\b", 2250e12),
    (r"\bB100\b", 1750e12),
    # Ampere data centre. NVIDIA A100 datasheet: BF16 312 (624*), every A100 40/80 GB, PCIe or
    # SXM; NVIDIA A800 datasheets: 312 (624*); A30 datasheet: 165 (330*); A40 datasheet: 149.7
    # (299.4*); A10 datasheet: 125 (250*).
    (r"\bA100\b", 312e12),
    (r"\bA800\b", 312e12),
    (r"\bA30\b", 165e12),
    (r"\bA40\b", 149.7e12),
    (r"\bA10\b", 125e12),
    # Ada data centre. NVIDIA L40S datasheet: BF16 362.05 (733*); L40 datasheet: 181.05
    # (362.1*); L4 datasheet: 242*.
    (r"\bL40S\b", 362.05e12),
    (r"\bL40\b", 181.05e12),
    (r"\bL4\b", 121e12),
    # Workstation and GeForce, bf16 with fp32 accumulate. NVIDIA Ada Lovelace GPU architecture
    # whitepaper: RTX 6000 Ada 364.2 (728.4*), GeForce RTX 4090 165.2 (330.4*); NVIDIA Ampere
    # GA102 GPU architecture whitepaper: RTX A6000 154.8 (309.7*), GeForce RTX 3090 71 (142*).
    # The 4090 D and 3090 Ti are other chips' configurations and not covered.
    (r"\bRTX 6000 ADA\b", 364.2e12),
    (r"\bRTX 4090\b(?! D\b)", 165.2e12),
    (r"\bRTX A6000\b", 154.8e12),
    (r"\bRTX 3090\b(?! TI\b)", 71e12),
    # Before Ampere, fp16 (mixed precision). NVIDIA V100 datasheet: tensor performance 125 (SXM2),
    # 112 (PCIe), 130 (V100S PCIe); NVIDIA T4 datasheet: mixed precision (FP16/FP32) 65.
    (r"\bV100S\b", 130e12),
    (r"\bV100 PCIE\b", 112e12),
    (r"\bV100\b", 125e12),
    (r"\bT4\b", 65e12),
]


def peak_flops(device_name: str, override: float | None = None) -> float | None:
    """Peak FLOP/s for MFU: an explicit override (or HELLOLONDON_PEAK_TFLOPS), else the table;
    None when unknown (MFU is then not reported rather than made up)."""
    if override:
        return float(override)
    tflops = env_number(
        "HELLOLONDON_PEAK_TFLOPS",
        None,
        minimum=0,
        inclusive=False,
        meaning="a positive number",
        advice="set it to the device's peak TFLOP/s (989 for an H100's bf16, say) or unset it",
    )
    if tflops is not None:
        return tflops * 1e12
    name = re.sub(r"[-_]", " ", device_name.upper())
    for pattern, flops in PEAK_BF16_FLOPS:
        if re.search(pattern, name):
            return flops
    return None


def mfu_percent(
    flops_per_token: int, tokens_per_sec: float, devices: int, peak: float | None
) -> float | None:
    """Model FLOPs utilisation in percent: the FLOPs each device achieves over its peak."""
    if not peak:
        return None
    return 100.0 * flops_per_token * tokens_per_sec / devices / peak


def cpu_matmul_flops(rows: int, inner: int, cols: int) -> float:
    """FLOP/s this CPU reaches on a float32 (rows, inner) @ (inner, cols) matmul (~0.1 s)."""
    import time

    g = torch.Generator().manual_seed(0)  # its own: the training RNG stream stays untouched
    a, b = torch.randn(rows, inner, generator=g), torch.randn(inner, cols, generator=g)
    torch.mm(a, b)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.1:
        torch.mm(a, b)
        n += 1
    return 2.0 * rows * inner * cols * n / (time.perf_counter() - t0)


def cpu_lacks_bf16_matmul() -> bool:
    """Whether this x86 CPU has neither AVX512-BF16 nor AMX: bfloat16 matrix products then run
    through a slow fallback (45x float32's time at 256 x 1024 on an AVX2-only AMD EPYC)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False  # ARM and others: no such check here, so no claim
    checks = [
        getattr(torch.cpu, f"_is_{name}_supported", None) for name in ("avx512_bf16", "amx_tile")
    ]
    known = [check() for check in checks if check is not None]
    return bool(known) and not any(known)


def has_bf16_units(device: torch.device | None = None) -> bool:
    """Whether the CUDA GPU `device` (default: the current one) computes bfloat16 in hardware
    (Ampere on). torch's plain `is_bf16_supported()` also says yes before Ampere (V100, T4),
    where bfloat16 is emulated without tensor-core kernels; fp16 is the fast 16-bit type
    there."""
    if torch.version.hip:  # as torch says for every ROCm GPU
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8  # what torch checks, for `device`


def host_memory_bytes() -> int | None:
    """This machine's physical memory, where the OS says (None elsewhere)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation on `device` can still get: on CUDA the free memory plus what
    this process's allocator holds unused; on a CPU the kernel's MemAvailable plus free swap
    (the physical memory where there is no /proc/meminfo). None where it cannot be told (MPS)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)}
        return 1024 * (kib["MemAvailable"] + kib.get("SwapFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        return host_memory_bytes()


def resolve_device(name: str = "auto", setting: str = "device=") -> torch.device:
    """`name` as a torch device. `setting` is how the user gave it, for the advice of an error:
    `device=` (the config's train.device) or `--device ` (a command's flag)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"CUDA was asked for but this machine has no CUDA GPU; use {setting}cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"MPS was asked for but is not available here; use {setting}cpu")
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


# CUDA device index -> NVML handle, or None when there is none (no pynvml, no match). NVML
# numbers the GPUs in PCI order over the whole machine, CUDA in its own order over the visible
# ones (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), so the two indices may name different cards:
# the handle is looked up by the card's UUID, else by its PCI bus id, once per device.
_nvml_handles: dict[int, Any] = {}
_nvml_started = False


def _nvml_ids(index: int) -> list[tuple[str, str]]:
    """(NVML lookup, key) pairs that name CUDA device `index`: its UUID (a whole card's, or a
    MIG instance's), then its PCI bus id where this torch version reports one."""
    props = torch.cuda.get_device_properties(index)
    ids: list[tuple[str, str]] = []
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid.startswith(("GPU-", "MIG-")):
        ids.append(("uuid", uuid))
    elif uuid:
        ids += [("uuid", f"GPU-{uuid}"), ("uuid", f"MIG-{uuid}")]
    bus = getattr(props, "pci_bus_id", None)
    if isinstance(bus, int):
        domain = getattr(props, "pci_domain_id", 0) or 0
        device = getattr(props, "pci_device_id", 0) or 0
        ids.append(("pci", f"{domain:08X}:{bus:02X}:{device:02X}.0"))
    return ids


def _nvml_handle(index: int) -> Any:
    global _nvml_started
    if index in _nvml_handles:
        return _nvml_handles[index]
    handle = None
    try:
        import pynvml  # optional: nvidia-ml-py

        if not _nvml_started:
            pynvml.nvmlInit()
            _nvml_started = True
        lookup = {
            "uuid": pynvml.nvmlDeviceGetHandleByUUID,
            "pci": getattr(pynvml, "nvmlDeviceGetHandleByPciBusId_v2", None)
            or pynvml.nvmlDeviceGetHandleByPciBusId,
        }
        for kind, key in _nvml_ids(index):
            for arg in (key, key.encode()):  # old pynvml releases take bytes
                try:
                    handle = lookup[kind](arg)
                    break
                except Exception:
                    continue
            if handle is not None:
                # a card split into MIG instances: its figure is not the instance's
                if kind == "pci" and _mig_enabled(pynvml, handle):
                    handle = None
                break
    except Exception:
        handle = None
    _nvml_handles[index] = handle
    return handle


def _mig_enabled(pynvml: Any, handle: Any) -> bool:
    try:
        return pynvml.nvmlDeviceGetMigMode(handle)[0] == 1  # (current, pending)
    except Exception:  # a card or a driver without MIG
        return False


def _nvml_utilization(index: int) -> float | None:
    """GPU utilisation in percent of CUDA device `index`, or None without pynvml or a match."""
    handle = _nvml_handle(index)
    if handle is None:
        return None
    try:
        import pynvml

        return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
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
    index = device.index if device.index is not None else torch.cuda.current_device()
    util = _nvml_utilization(index)
    if util is not None:
        row["gpu/utilization"] = util
    return row
