"""Batches from the token files. The order is a pure function of the seed and of how many
samples were consumed before, so resume needs one number and every rank reads disjoint data.

The train file is cut into windows of block_size+1 tokens (shifted by a per-epoch random offset);
each epoch visits them in a seeded random order. Global sample g of the run is window
perm_e[g mod n] of epoch e = g div n. Rank r of w, micro-step m of a step that starts at sample s
takes samples s + (m*w + r)*B ... + B-1, so one process with batch 2B, two with B, or one with B
and two accumulation steps consume the same samples in every step.
"""

from __future__ import annotations

import functools
import queue
import threading
import weakref
from pathlib import Path

import numpy as np
import torch

from hellolondon.errors import UserError
from hellolondon.prepare import open_tokens


class Batches:
    def __init__(
        self, data_dir: str | Path, block_size: int, seed: int, device: torch.device
    ) -> None:
        self.train = open_tokens(data_dir, "train")
        self.val = open_tokens(data_dir, "val")
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

    def _epoch(self, epoch: int) -> tuple[int, np.ndarray]:
        """The epoch's window offset and order; the last two are kept (two at most are in use
        at once, at an epoch's end)."""
        kept = self.__dict__.setdefault("_epochs", {})
        found = kept.get(epoch)
        if found is None:
            rng = np.random.default_rng([self.seed, epoch])
            found = int(rng.integers(0, self.T)), rng.permutation(self.n_windows).astype(np.int64)
            kept[epoch] = found
            for old in sorted(kept)[:-2]:  # also the one just made, if older than those kept
                kept.pop(old, None)  # (the prefetching thread may be pruning too)
        return found

    def _starts(self, first: int, count: int) -> np.ndarray:
        g = np.arange(first, first + count, dtype=np.int64)
        starts = np.empty(count, dtype=np.int64)
        for epoch in np.unique(g // self.n_windows):
            sel = g // self.n_windows == epoch
            offset, perm = self._epoch(int(epoch))
            starts[sel] = offset + perm[g[sel] % self.n_windows] * self.T
        return starts

    def _rows(self, tokens: np.memmap, starts: np.ndarray) -> torch.Tensor:
        """The windows as one (batch, T+1) host tensor, pinned when it goes to a GPU."""
        rows = np.stack([tokens[s : s + self.T + 1] for s in starts]).astype(np.int64)
        xy = torch.from_numpy(rows)
        return xy.pin_memory() if self.device.type == "cuda" else xy

    def _to_device(self, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cuda":
            xy = xy.to(self.device, non_blocking=True)  # from pinned memory: an async copy
        return xy[:, :-1], xy[:, 1:]

    def _load(self, tokens: np.memmap, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self._to_device(self._rows(tokens, starts))

    def train_batch(self, first_sample: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._load(self.train, self._starts(first_sample, batch))

    def train_batch_ahead(
        self, first_sample: int, batch: int, then: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`train_batch(first_sample, batch)`; meanwhile a background thread reads and pins the
        batch that starts at sample `then`, so the next call only starts its copy."""
        ahead = self.__dict__.setdefault("_ahead", Prefetcher(self))
        return ahead.get(first_sample, batch, then)

    def fixed_batches(
        self, split: str, n_batches: int, batch: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The same held-out batches at every evaluation: windows evenly spread over the file."""
        tokens = self.val if split == "val" else self.train
        count = n_batches * batch
        last = len(tokens) - self.T - 1
        starts = np.linspace(0, last, num=count).astype(np.int64)
        return [self._load(tokens, starts[i * batch : (i + 1) * batch]) for i in range(n_batches)]


class Prefetcher:
    """Reads one batch ahead in a background thread. It returns exactly what `train_batch`
    returns for the asked samples: a guess that does not match is dropped and the batch is read
    at once, so the order of batches never depends on the prefetching."""

    def __init__(self, batches: Batches) -> None:
        self.batches = batches
        self.key: tuple[int, int] | None = None
        self.job: tuple[dict, threading.Event] | None = None
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=_serve, args=(self.jobs,), daemon=True).start()
        weakref.finalize(self, self.jobs.put, None)  # the thread ends with its prefetcher

    def _read(self, first: int, batch: int) -> torch.Tensor:
        b = self.batches
        return b._rows(b.train, b._starts(first, batch))

    def get(self, first: int, batch: int, then: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = None
        if self.job is not None and self.key == (first, batch):
            box, done = self.job
            done.wait()
            if "error" in box:
                raise box["error"]
            rows = box["rows"]
        elif self.job is not None:  # a wrong guess: let it end rather than read beside it
            self.job[1].wait()
        self.job = None
        if rows is None:
            rows = self._read(first, batch)
        if then is not None:
            self.key, self.job = (then, batch), ({}, threading.Event())
            self.jobs.put((functools.partial(self._read, then, batch), *self.job))
        return self.batches._to_device(rows)


def _serve(jobs: queue.SimpleQueue) -> None:
    while (job := jobs.get()) is not None:
        read, box, done = job
        try:
            box["rows"] = read()
        except BaseException as exc:  # raised again in the training thread
            box["error"] = exc
        done.set()
        del read, box, done, job  # hold nothing (the prefetcher) while waiting
