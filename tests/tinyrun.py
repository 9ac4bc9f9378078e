"""Settings for tiny training runs in tests (the prepared data comes from the `tiny_data` fixture)."""

from __future__ import annotations

from pathlib import Path

TINY_MODEL = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32"]
TINY_TRAIN = [
    "train.batch_size=4",
    "train.max_iters=12",
    "train.warmup_iters=2",
    "train.eval_interval=6",
    "train.eval_iters=2",
    "train.log_interval=1",
    "train.ckpt_interval=6",
    "train.sample_interval=0",
    "tracking.wandb_mode=disabled",
    "monitor.enabled=false",
]


def tiny_config(data: Path, out: Path, *extra: str):
    from hellolondon.config import build_config

    return build_config(
        "tiny",
        overrides=[*TINY_MODEL, *TINY_TRAIN, f"data.data_dir={data}", f"out_dir={out}", *extra],
    )
