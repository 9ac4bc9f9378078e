"""Batches from the token files. The order is a pure function of the seed and of how many
samples were consumed before, so resume needs one number and every rank reads disjoint data.

The train file is cut into windows of block_size+1 tokens (shifted by a per-epoch random offset);
each epoch visits them in a seeded random order. Global sample g of the run is window
perm_e[g mod n] of epoch e = g div n. Rank r of w, micro-step m of a step that starts at sample s
takes samples s + (m*w + r)*B ... + B-1, so one process with batch 2B, two with B, or one with B
and two accumulation steps consume the same samples in every step.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from hellolondon.errors import UserError


def open_tokens(path: Path) -> np.memmap:
    if not path.is_file():
        raise UserError(f"token file {path} not found; run `hellolondon prepare` first")
    return np.memmap(path, dtype=np.uint16, mode="r")


class Batches:
    def __init__(
        self, data_dir: str | Path, block_size: int, seed: int, device: torch.device
    ) -> None:
        data_dir = Path(data_dir)
        self.train = open_tokens(data_dir / "train.bin")
        self.val = open_tokens(data_dir / "val.bin")
        self.T = block_size
        self.seed = seed
        self.device = device
        for name, arr in (("train", self.train), ("val", self.val)):
            if len(arr) < block_size + 2:
                raise UserError(
                    f"{name}.bin has {len(arr)} tokens, fewer than one context of {block_size}; "
                    "use a larger corpus or a smaller model.block_size"
                )
        need = 2 * block_size + 1  # each epoch shifts its windows by up to a context
        if len(self.train) < need:
            raise UserError(
                f"train.bin in {data_dir} has {len(self.train):,} tokens; training with "
                f"model.block_size={block_size} needs at least {need:,} (two contexts and one); "
                "prepare a larger corpus or set model.block_size="
                f"{(len(self.train) - 1) // 2} or less"
            )
        self.n_windows = (len(self.train) - 1 - block_size) // block_size  # room for any offset

    def epoch_of(self, sample: int) -> float:
        return sample / self.n_windows

    @lru_cache(maxsize=2)  # noqa: B019 - two epochs at most are live at once
    def _epoch(self, epoch: int) -> tuple[int, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(0, self.T))
        return offset, rng.permutation(self.n_windows).astype(np.int64)

    def _starts(self, first: int, count: int) -> np.ndarray:
        g = np.arange(first, first + count, dtype=np.int64)
        starts = np.empty(count, dtype=np.int64)
        for epoch in np.unique(g // self.n_windows):
            sel = g // self.n_windows == epoch
            offset, perm = self._epoch(int(epoch))
            starts[sel] = offset + perm[g[sel] % self.n_windows] * self.T
        return starts

    def _load(self, tokens: np.memmap, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.stack([tokens[s : s + self.T + 1] for s in starts]).astype(np.int64)
        xy = torch.from_numpy(rows)
        if self.device.type == "cuda":
            xy = xy.pin_memory().to(self.device, non_blocking=True)
        return xy[:, :-1], xy[:, 1:]

    def train_batch(self, first_sample: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._load(self.train, self._starts(first_sample, batch))

    def fixed_batches(
        self, split: str, n_batches: int, batch: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The same held-out batches at every evaluation: windows evenly spread over the file."""
        tokens = self.val if split == "val" else self.train
        count = n_batches * batch
        last = len(tokens) - self.T - 1
        starts = np.linspace(0, last, num=count).astype(np.int64)
        return [self._load(tokens, starts[i * batch : (i + 1) * batch]) for i in range(n_batches)]
