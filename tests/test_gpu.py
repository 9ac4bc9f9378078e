"""CUDA-only checks of the fast path (bf16 autocast, fused AdamW, torch.compile, KV cache).
Skipped on machines without a CUDA GPU."""

from __future__ import annotations

import pytest
import torch

from hellolondon.config import build_config
from hellolondon.model import GPT, KVCache
from hellolondon.rundir import RunDir

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_bf16_compiled_steps_learn_on_random_repeats():
    from hellolondon.bench import bench

    cfg = build_config(
        "tiny", overrides=["vocab_size=512", "batch_size=8", "device=cuda", "compile=true"]
    )
    result = bench(cfg, steps=5, warmup=2, log=lambda *_: None)
    assert result["dtype"] in ("bfloat16", "float16")
    assert result["tokens_per_sec"] > 0 and result["peak_memory_gb"] > 0
    assert result["mfu_percent"] is None or 0 < result["mfu_percent"] < 100


def test_fused_adamw_on_cuda():
    from hellolondon.train.optim import build_optimizer

    model = GPT(build_config("tiny", overrides=["vocab_size=256"]).model).cuda()
    adamw = build_config("tiny", overrides=["train.optimizer=adamw"]).train
    opt = build_optimizer(model, adamw, "cuda", log=lambda *_: None)
    assert opt.defaults.get("fused") is True
    beside_muon = build_optimizer(model, build_config("tiny").train, "cuda", log=lambda *_: None)
    assert beside_muon.adamw.defaults.get("fused") is True  # the presets' Muon + AdamW


def test_kv_cache_matches_full_forward_in_bf16():
    torch.manual_seed(0)
    cfg = build_config("tiny", overrides=["vocab_size=256", "block_size=64"]).model
    model = GPT(cfg).cuda().eval()
    x = torch.randint(0, 256, (1, 40), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        full, _ = model(x)
        cache = KVCache(cfg, 1, 40, "cuda", torch.bfloat16)
        parts = [model(x[:, :30], cache=cache)[0]] + [
            model(x[:, t : t + 1], cache=cache)[0] for t in range(30, 40)
        ]
    torch.testing.assert_close(torch.cat(parts, 1).float(), full.float(), rtol=2e-2, atol=2e-2)


# -- speed options on the GPU -------------------------------------------------------------------


def _cuda_run(*overrides: str):
    """A tiny Run on the GPU with random tokens, as `bench` builds it (uncompiled: fast)."""

    from hellolondon.bench import RandomBatches
    from hellolondon.tracking.base import NullTracker
    from hellolondon.train.distributed import Dist
    from hellolondon.train.run import Run, autocast_for, build_model, peak_flops_for, precision

    cfg = build_config(
        "tiny",
        overrides=["vocab_size=512", "block_size=64", "batch_size=4", "device=cuda",
                   "compile=false", *overrides],
    )  # fmt: skip
    device = torch.device("cuda")
    d, dtype = Dist(device=device), precision(cfg, device)
    model, step_model, opt, scaler = build_model(cfg, d, dtype, lambda *_: None)
    return Run(
        cfg=cfg, dist=d, rundir=RunDir("."), model=model, step_model=step_model, optimizer=opt,
        scaler=scaler, autocast=autocast_for(device, dtype),
        batches=RandomBatches(512, 64, device, 0), tracker=NullTracker(), monitor=None, meta={},
        peak_flops=peak_flops_for(device), log=lambda *_: None,
    )  # fmt: skip


def _syncs(fn) -> int:
    """How many synchronizing CUDA calls `fn` makes (PyTorch's sync debug mode)."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_training_step_makes_no_host_sync_beyond_the_models_own(optimizer):
    from hellolondon.train.speed import skips_on_device
    from hellolondon.train.steps import train_step

    run = _cuda_run(f"train.optimizer={optimizer}")
    # fused AdamW (alone or beside Muon), bf16: decided on the device
    assert skips_on_device(run.optimizer, run.scaler)
    train_step(run)  # first-call allocations out of the count

    def bare():
        x, y = run.batches.train_batch(0, 4)
        with run.autocast():
            run.step_model(x, y)[1].backward()
        run.optimizer.zero_grad(set_to_none=True)

    model_only = _syncs(bare)
    assert _syncs(lambda: [train_step(run) for _ in range(3)]) <= 3 * model_only


def _optimizer_state(opt) -> list[torch.Tensor]:
    """Every state tensor (moments, step counts, Muon's momentum) of AdamW or Muon + AdamW."""
    parts = getattr(opt, "parts", (opt,))
    return [t.clone() for part in parts for st in part.state.values() for t in st.values()]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_device_side_skip_on_cuda_leaves_weights_and_moments(monkeypatch, optimizer):
    from hellolondon.train.speed import Readback, skips_on_device
    from hellolondon.train.steps import train_step

    run = _cuda_run(f"train.optimizer={optimizer}")  # fused AdamW's found_inf; Muon's flag
    assert skips_on_device(run.optimizer, run.scaler)
    train_step(run)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    state = _optimizer_state(run.optimizer)
    real = run.step_model.forward
    monkeypatch.setattr(
        run.step_model, "forward", lambda x, y: (None, real(x, y)[1] * float("nan"))
    )
    out = train_step(run)
    assert out.skipped is None  # nothing read on the host
    row = Readback()
    row.add(1, out)
    assert row.read()[0].skipped
    after = run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    now = _optimizer_state(run.optimizer)
    assert len(now) == len(state) and all(
        torch.equal(a, b) for a, b in zip(state, now, strict=True)
    )


@pytest.mark.parametrize("kernel", ["flash", "efficient", "cudnn", "math"])
def test_each_attention_kernel_runs_or_is_refused_clearly(kernel):
    from hellolondon.errors import UserError
    from hellolondon.train.steps import train_step

    # flash and memory-efficient attention run on every GPU from Ampere on; math everywhere
    must_run = kernel == "math" or (
        kernel in ("flash", "efficient") and torch.cuda.get_device_capability() >= (8, 0)
    )
    try:
        run = _cuda_run(f"train.attention={kernel}")
    except UserError as exc:
        assert not must_run, f"{kernel} attention refused on this GPU: {exc}"
        assert f"train.attention={kernel}" in str(exc) and "train.attention=auto" in str(exc)
        return
    assert torch.isfinite(train_step(run).values[0])


@pytest.mark.parametrize("kernel", ["flash", "cudnn"])
def test_a_runs_samples_decode_in_float32_whatever_the_attention_kernel(kernel):
    from hellolondon.errors import UserError
    from hellolondon.generate import Sampling, generate_ids

    try:
        run = _cuda_run(f"train.attention={kernel}")
    except UserError:
        pytest.skip(f"no {kernel} attention here")
    # as maybe_sample decodes during training: the float32 model, no autocast
    assert len(generate_ids(run.model, [1, 2, 3], Sampling(max_new_tokens=4))) == 4


def test_prefetched_batches_on_cuda_equal_direct_reads(tmp_path):
    import numpy as np

    from hellolondon.train.data import Batches

    for name in ("train.bin", "val.bin"):
        np.random.default_rng(0).integers(0, 512, 20000, dtype=np.uint16).tofile(tmp_path / name)
    a = Batches(tmp_path, 64, 3, torch.device("cuda"))
    b = Batches(tmp_path, 64, 3, torch.device("cuda"))
    for first in range(0, 80, 8):
        x1, y1 = a.train_batch(first, 8)
        x2, y2 = b.train_batch_ahead(first, 8, first + 8)
        assert x2.is_cuda and torch.equal(x1, x2) and torch.equal(y1, y2)


def test_activation_checkpointing_on_cuda_gives_the_same_loss():
    from hellolondon.train.steps import train_step

    plain, ckpt = _cuda_run(), _cuda_run("train.activation_checkpointing=true")
    for _ in range(3):
        a, b = train_step(plain).values[0].item(), train_step(ckpt).values[0].item()
        assert a == pytest.approx(b, rel=1e-2)  # bf16: recomputation may round differently


def test_micro_batch_auto_on_cuda_keeps_the_global_batch():
    run = _cuda_run("train.batch_size=2", "train.grad_accum=4", "train.micro_batch=auto")
    size, count = run.model.micro_batches
    assert size * count == 8 and size == 8  # a tiny model fits in one forward


def test_fp8_runs_or_is_refused_clearly():
    import importlib.util

    from hellolondon.errors import UserError
    from hellolondon.train.steps import train_step

    # float8 matmuls from Ada / Hopper on (sm89+), with torchao installed
    must_run = torch.cuda.get_device_capability() >= (8, 9) and bool(
        importlib.util.find_spec("torchao")
    )
    try:
        run = _cuda_run("train.fp8=true", "n_embd=64", "n_head=2")
    except UserError as exc:
        assert not must_run, f"fp8 refused on an sm89+ GPU with torchao: {exc}"
        assert "train.fp8=true needs" in str(exc)
        return
    assert torch.isfinite(train_step(run).values[0])
    from hellolondon.generate import Sampling, generate_ids

    # the run's closing sample: float8 matmuls of one row, in float32
    assert len(generate_ids(run.model, [1, 2, 3], Sampling(max_new_tokens=4))) == 4
