"""The trainer's speed options (docs/training.md, "Speed"), applied once when the model is built,
and the read-back of step results that keeps the host from waiting on the GPU every step.

What each option does and when it pays is documented in docs/training.md; the GPU figures are in
docs/benchmarks.md. Options that change the arithmetic (micro-batch size, FP8) are off by default.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hellolondon.config import RunConfig, TrainConfig
from hellolondon.errors import UserError
from hellolondon.files import check_writable_folder
from hellolondon.train.muon import Muon
from hellolondon.train.optim import MuonWithAdamW

# train.attention -> the name of its torch.nn.attention.SDPBackend member
SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}


# -- step results ------------------------------------------------------------------------------


class StepResult(NamedTuple):
    """What `train_step` returns. `values` holds the loss, the grad norm and the stop flag, each
    averaged over ranks, still on the device: reading them waits for the GPU to finish the step,
    so the loop reads them (through `Readback`) only when it logs, evaluates or saves."""

    values: torch.Tensor  # [loss, grad norm, stop flag], float32 on the training device
    lr: float
    skipped: bool | None  # non-finite, weights untouched; None: only the device knows yet


class StepRow(NamedTuple):
    step: int  # the iteration number the loop gave the step (run.step before it)
    loss: float
    grad_norm: float
    lr: float
    skipped: bool
    known_at_once: bool  # the loop already handled it (the synchronous path)


class Readback:
    """Step results kept on the device and read in one transfer for all steps since the last
    read. The read also turns another rank's stop signal into `stop.requested` on every rank:
    all ranks read at the same iterations, so all leave after the same step."""

    def __init__(self) -> None:
        self.items: list[tuple[int, StepResult]] = []

    def add(self, step: int, result: StepResult) -> None:
        self.items.append((step, result))

    def read(self, stop: Any = None) -> list[StepRow]:
        if not self.items:
            return []
        values = torch.stack([r.values for _, r in self.items]).tolist()  # the one host sync
        rows = []
        for (step, r), (loss, norm, flag) in zip(self.items, values, strict=True):
            skipped = r.skipped
            if skipped is None:  # the device skipped the update exactly when this is true
                skipped = not (math.isfinite(loss) and math.isfinite(norm))
            rows.append(StepRow(step, loss, norm, r.lr, skipped, r.skipped is not None))
            if stop is not None and flag > 0:
                stop.requested = True
        self.items.clear()
        return rows


def skips_on_device(optimizer, scaler: torch.amp.GradScaler) -> bool:
    """True when every part of the optimizer can skip a step on the device, so no step needs a
    host read to decide: fused AdamW reads a `found_inf` tensor (as GradScaler uses it), Muon
    takes one (`train/muon.py`). fp16's GradScaler keeps its own skip-and-rescale logic, and
    other optimizers (AdamW on the CPU) are told on the host."""
    return not scaler.is_enabled() and all(map(_decides_on_device, _parts(optimizer)))


def step_unless(optimizer, bad: torch.Tensor) -> None:
    """`optimizer.step()` that changes nothing (weights, moments, step count) where the 0-dim
    tensor `bad` is nonzero, decided on the device."""
    for part in _parts(optimizer):
        if isinstance(part, Muon):
            part.step(found_inf=bad)
            continue
        part.found_inf = bad.float()  # type: ignore[attr-defined]
        part.grad_scale = None  # type: ignore[attr-defined]
        try:
            part.step()
        finally:
            del part.found_inf, part.grad_scale  # type: ignore[attr-defined]


def _parts(optimizer) -> tuple[torch.optim.Optimizer, ...]:
    return optimizer.parts if isinstance(optimizer, MuonWithAdamW) else (optimizer,)


def _decides_on_device(part: torch.optim.Optimizer) -> bool:
    return isinstance(part, Muon) or (
        bool(part.defaults.get("fused")) and getattr(part, "_step_supports_amp_scaling", False)
    )


# -- applied when the model is built -----------------------------------------------------------


def prepare(model: nn.Module, cfg: RunConfig, device: torch.device, dtype: torch.dtype,
            world: int = 1, log=print) -> None:  # fmt: skip
    """Set the speed options on the plain model before it is sharded, compiled or wrapped."""
    c = cfg.train
    backends = attention_backends(
        c.attention, device, dtype, cfg.model.head_dim, cfg.model.block_size, cfg.model.dropout
    )
    for block in model.transformer.h:
        block.attn.backends = backends
    model.checkpointing = c.activation_checkpointing
    if c.fp8:
        to_fp8(model, device, log)
    model.micro_batches = micro_plan(cfg, device, world, log)
    check_cuda_graphs(cfg, device, *model.micro_batches)


def micro_batches(model: nn.Module, c: TrainConfig) -> tuple[int, int]:
    """(sequences, count) of a step's micro-batches: as `prepare` planned them
    (`train.micro_batch`), else batch_size x grad_accum."""
    return getattr(model, "micro_batches", None) or (c.batch_size, c.grad_accum)


def attention_backends(
    name: str, device: torch.device, dtype: torch.dtype, head_dim: int, seq_len: int,
    dropout: float = 0.0,
) -> list | None:  # fmt: skip
    """The SDPA kernel list for `train.attention`, after one small causal forward and backward
    through it at the run's sequence length (a kernel may take short sequences only) and with
    its attention dropout (some kernels have none), so an unavailable kernel fails here with a
    clear line, not at the first step."""
    if name == "auto":
        return None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, SDPA_BACKENDS[name], None)
    if backend is None:
        raise UserError(
            f"train.attention={name}: this torch ({torch.__version__}) has no such SDPA kernel; "
            "use train.attention=auto"
        )
    q = torch.randn(1, 2, seq_len, head_dim, device=device, dtype=dtype, requires_grad=True)
    try:  # torch also warns why a kernel is not used: the error below says it once
        with sdpa_kernel([backend]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = F.scaled_dot_product_attention(q, q, q, dropout_p=dropout, is_causal=True)
            y.sum().backward()
    except RuntimeError as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        drop = f" and dropout {dropout:g}" if dropout else ""
        raise UserError(
            f"train.attention={name}: the {name} attention kernel cannot run on {device} with "
            f"{str(dtype).replace('torch.', '')}, head size {head_dim}{drop} ({why}); "
            "use train.attention=auto"
        ) from None
    return [backend]


def to_fp8(model: nn.Module, device: torch.device, log=print, *, emulate: bool = False) -> None:
    """Swap the block's linear layers for torchao's float8 training layers (dynamic scaling).
    The tied output head stays in bf16: it shares its matrix with the embedding. `emulate`
    computes the float8 rounding without float8 kernels (torchao's reference path): any
    device, much slower; the tests run the fp8 path through it on the CPU."""
    if not emulate:
        _check_fp8_hardware(device)
    with _inductor_cache_unset():
        _float8_training(model, emulate)
    log("fp8: the blocks' linear layers compute in float8 (torchao, dynamic scaling)")


@contextlib.contextmanager
def _inductor_cache_unset() -> Iterator[None]:
    """Leave TORCHINDUCTOR_CACHE_DIR unset where it was: torchao imports torch._inductor, which
    sets it to its own default folder (/tmp/torchinductor_<user>) on import, and `compiled`
    would then take that for the user's choice over the run's kernel cache."""
    unset = "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    try:
        yield
    finally:
        if unset:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)


def _float8_training(model: nn.Module, emulate: bool) -> None:
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except Exception as exc:  # ImportError, or a torchao built for another torch
        why = (
            "pip install torchao" if isinstance(exc, ImportError) else f"importing it failed: {exc}"
        )
        raise UserError(f"train.fp8=true needs torchao ({why})") from None

    def wanted(module: nn.Module, fqn: str) -> bool:
        return (
            isinstance(module, nn.Linear)
            and fqn != "lm_head"
            and module.in_features % 16 == 0
            and module.out_features % 16 == 0
        )

    config = Float8LinearConfig(emulate=emulate)
    convert_to_float8_training(model, module_filter_fn=wanted, config=config)


def _check_fp8_hardware(device: torch.device) -> None:
    if device.type != "cuda":
        raise UserError(
            f"train.fp8=true needs a CUDA GPU with compute capability 8.9 or newer "
            f"(Ada, Hopper or later); this run is on {device}"
        )
    cc = torch.cuda.get_device_capability(device)
    if cc < (8, 9):
        raise UserError(
            f"train.fp8=true needs compute capability 8.9 or newer (Ada, Hopper or later); "
            f"{torch.cuda.get_device_name(device)} has {cc[0]}.{cc[1]}"
        )


def micro_plan(cfg: RunConfig, device: torch.device, world: int = 1, log=print) -> tuple[int, int]:
    """(sequences per forward, forwards per step) for `train.micro_batch`; their product is
    always batch_size * grad_accum, so the global batch, the samples of each step and the
    learning-rate schedule do not change."""
    c = cfg.train
    per_step = c.batch_size * c.grad_accum
    if c.micro_batch == "off":
        return c.batch_size, c.grad_accum
    if c.micro_batch != "auto":
        size = int(c.micro_batch)
        if per_step % size:
            raise UserError(
                f"train.micro_batch={size} must divide batch_size*grad_accum = {per_step} "
                f"({c.batch_size}*{c.grad_accum}); try one of "
                f"{', '.join(str(m) for m in _divisors(per_step))}"
            )
        return size, per_step // size
    if device.type != "cuda":
        log("train.micro_batch=auto sizes micro-batches from free GPU memory; on "
            f"{device.type} it keeps batch_size={c.batch_size}, grad_accum={c.grad_accum}")  # fmt: skip
        return c.batch_size, c.grad_accum
    # the least free memory of any rank: every rank must read the same micro-batches (the
    # samples of rank r depend on their size) and FSDP gathers weights in every forward
    free = least_over_ranks(torch.cuda.mem_get_info(device)[0])
    size = auto_micro_batch(cfg, free, world)
    if (size, per_step // size) != (c.batch_size, c.grad_accum):
        log(f"train.micro_batch=auto: {per_step // size} forward(s) of {size} sequences per "
            f"step instead of {c.grad_accum} of {c.batch_size} ({free / 2**30:.0f} GiB free)")  # fmt: skip
    return size, per_step // size


def least_over_ranks(value: int) -> int:
    """The smallest of every process's `value` under a process group; `value` without one."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return min(values)


# torch.compile modes that record CUDA graphs (`mode` in torch.compile's documentation)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def check_cuda_graphs(cfg: RunConfig, device: torch.device, size: int, count: int) -> None:
    """CUDA graphs cannot accumulate gradients over several forwards of one step: each forward
    of the compiled model starts a new graph generation, which takes back the memory of the
    gradients the last backward left in `.grad` ("accessing tensor output of CUDAGraphs that
    has been overwritten", pytorch/pytorch#169545). Refused before the first step."""
    c = cfg.train
    if count == 1 or device.type != "cuda" or not c.compiles(device.type):
        return
    if c.compile_mode not in CUDA_GRAPH_MODES:
        return
    per_step = size * count
    raise UserError(
        f"train.compile_mode={c.compile_mode} records CUDA graphs, which cannot accumulate "
        f"gradients over the {count} forwards of {size} sequences that make a step "
        f"(batch_size*grad_accum = {per_step}); use train.micro_batch={per_step} (one forward "
        f"per step, where it fits), or train.compile_mode=max-autotune-no-cudagraphs"
    )


def cuda_graph_skips(cfg: RunConfig, device: torch.device) -> int | None:
    """How many compiled graphs inductor ran without CUDA graphs under a compile mode that
    records them (a CPU tensor or a mutated input in the graph, say). Torch says so only under
    TORCH_LOGS=cudagraphs, so the step would quietly miss what the mode promises. None when
    the run records no CUDA graphs."""
    c = cfg.train
    if device.type != "cuda" or not c.compiles("cuda") or c.compile_mode not in CUDA_GRAPH_MODES:
        return None
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # a torch without dynamo's counters: nothing to tell
        return None
    return int(counters["inductor"]["cudagraph_skips"])


def cuda_graph_warning(cfg: RunConfig, device: torch.device) -> str | None:
    c = cfg.train
    if device.type != "cuda" and c.compiles(device.type) and c.compile_mode == "reduce-overhead":
        return (
            f"train.compile_mode=reduce-overhead records CUDA graphs, which need a CUDA GPU: on "
            f"the {device.type} the step runs as under compile_mode=default"
        )
    if not (skipped := cuda_graph_skips(cfg, device)):
        return None
    return (
        f"train.compile_mode={cfg.train.compile_mode}: inductor ran {skipped} compiled graph(s) "
        "without CUDA graphs, so the step runs as under compile_mode=default; "
        "TORCH_LOGS=cudagraphs says why"
    )


def _divisors(n: int) -> list[int]:
    return [m for m in range(1, n + 1) if n % m == 0]


def activation_bytes_per_sequence(cfg: RunConfig) -> int:
    """An upper estimate of the memory one sequence's activations take in training: 34·h bytes
    per token and layer for 16-bit activations with attention scores never stored (Korthikanti
    et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", eq. 1 without
    its 5·a·s/h term, which fused attention kernels do not keep), or one block's worth plus 2·h
    per layer with activation checkpointing; plus 10 bytes per logit (bf16 logits, their
    float32 copy for the loss and its float32 gradient)."""
    m, c = cfg.model, cfg.train
    layers = (2 * m.n_layer + 34) if c.activation_checkpointing else 34 * m.n_layer
    per_token = layers * m.n_embd + 10 * m.vocab_size
    return per_token * m.block_size


def fewest_per_forward(c: TrainConfig, device_type: str) -> int:
    """The fewest sequences one forward of a step can take under `train.micro_batch` (`auto`
    may go down to 1 on a GPU). A size larger than the step is refused by `micro_plan`, with
    its own advice; counted here as the step."""
    if c.micro_batch.isdigit():
        return min(int(c.micro_batch), c.batch_size * c.grad_accum)
    return 1 if c.micro_batch == "auto" and device_type == "cuda" else c.batch_size


def training_memory_floor(
    cfg: RunConfig, dtype: torch.dtype, device_type: str, world: int = 1
) -> dict[str, int]:
    """A lower bound on the memory a training step holds at the end of its forward, in parts:
    "logits" (B·T·V) and "block inputs" (B·T·C for each block, kept for the backward pass, also
    under activation checkpointing), each value at least 2 bytes (4 in float32), for the fewest
    sequences a forward takes; and "weights" in float32 (a share of them under FSDP). Any
    kernel, compile mode or fp8 keeps at least these; `activation_bytes_per_sequence` is the
    upper estimate."""
    m, c = cfg.model, cfg.train
    tokens = fewest_per_forward(c, device_type) * m.block_size
    value = 4 if dtype == torch.float32 else 2
    return {
        "logits": tokens * m.vocab_size * value,
        "block inputs": tokens * m.n_layer * m.n_embd * value,
        "weights": 4 * m.parameters // (world if c.fsdp else 1),
    }


def auto_micro_batch(cfg: RunConfig, free_bytes: int, world: int = 1) -> int:
    """The largest divisor of batch_size*grad_accum whose activations fit in 85% of the free
    memory left after gradients and AdamW state (12 bytes per parameter, divided by the ranks
    under FSDP); at least 1."""
    m, c = cfg.model, cfg.train
    per_step = c.batch_size * c.grad_accum
    params = 12 * m.n_layer * m.n_embd**2 + m.vocab_size * m.n_embd + m.block_size * m.n_embd
    state = 12 * params // (world if c.fsdp else 1)
    budget = 0.85 * free_bytes - state
    fits = [s for s in _divisors(per_step) if s * activation_bytes_per_sequence(cfg) <= budget]
    return max(fits, default=1)


def compiled(module: nn.Module, cfg: RunConfig) -> nn.Module:
    """`torch.compile` with `train.compile_mode`, its kernels cached in a folder that outlives
    the process (`train.compile_cache`, else `<out_dir>/.compile-cache`; a TORCHINDUCTOR_CACHE_DIR
    already set wins), so a resumed run loads them instead of compiling from scratch."""
    c = cfg.train
    cache = Path(c.compile_cache or Path(cfg.out_dir) / ".compile-cache").expanduser().resolve()
    # inductor creates its cache folder when torch._inductor is first imported: one it cannot
    # create or write would be a bare OSError from deep inside torch
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        setting = "train.compile_cache" if c.compile_cache else "the compiled-kernel cache"
        check_writable_folder(cache, setting, "give a writable folder with train.compile_cache=DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    else:
        check_writable_folder(Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]), "TORCHINDUCTOR_CACHE_DIR",
                              "set it to a writable folder, or unset it")  # fmt: skip
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    with contextlib.suppress(ImportError):  # a torch without inductor compiles as it can
        import torch._inductor.config as inductor

        if os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1" and hasattr(
            inductor, "fx_graph_cache"
        ):
            inductor.fx_graph_cache = True
    options = {} if c.compile_mode == "default" else {"mode": c.compile_mode}
    return torch.compile(module, **options)


def ddp_options(c: TrainConfig) -> dict[str, Any]:
    """DistributedDataParallel settings. Gradients are all-reduced bucket by bucket while the
    backward pass is still running (with torch.compile, dynamo splits the graph at the same
    bucket boundaries); gradients live in the buckets themselves, which saves one copy."""
    return {
        "bucket_cap_mb": c.ddp_bucket_mb,
        "gradient_as_bucket_view": True,
        "static_graph": c.ddp_static_graph,
    }
