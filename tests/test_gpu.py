"""CUDA-only checks of the fast path (bf16 autocast, fused AdamW, torch.compile, KV cache).
Skipped on machines without a CUDA GPU."""

from __future__ import annotations

import pytest
import torch

from hellolondon.config import build_config
from hellolondon.model import GPT, KVCache

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
