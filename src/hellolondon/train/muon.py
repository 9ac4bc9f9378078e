"""Muon for the blocks' weight matrices, with every matrix of one shape updated at once.

The algorithm is `torch.optim.Muon`'s (Keller Jordan's): Nesterov momentum, five Newton-Schulz
iterations that orthogonalise the update, decoupled weight decay, the step scaled by
`sqrt(max(1, rows/cols))`. Same hyper-parameters, same state (one `momentum_buffer` per
matrix), so a checkpoint written with either loads in the other.

The iterations run in bf16 on a GPU, as torch's do everywhere, and in float32 elsewhere: a CPU
without bf16 matrix units (AVX2 only) multiplies bf16 matrices through a slow fallback, 45x
slower than float32 for a 256 x 1024 product on a 2-core AMD EPYC (docs/benchmarks.md).
`ns_dtype` chooses otherwise.

What differs is the work per step. torch's version runs the iterations matrix by matrix; on an
H200 the whole SLM training step at batch 32 took 87.6 ms with it against 57.2 ms with AdamW
(docs/benchmarks.md). Here the matrices of one shape (SLM has 48 matrices in four shapes) are
stacked and orthogonalised with batched matrix products, and the momentum buffers of a shape
live in one stacked tensor: 286 operations per SLM step instead of 1,442
(benchmarks/muon_bench.py counts them).

It can also skip a step on the device: `step(found_inf=flag)` with a 0-dim tensor leaves the
weights and momentum exactly as they were where the flag is nonzero, without a host read."""

from __future__ import annotations

import math
from collections import defaultdict

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's, Keller Jordan's


def orthogonalize(
    g: torch.Tensor,
    steps: int = 5,
    coefficients=NS_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Newton-Schulz iterations on a stack of matrices `(k, rows, cols)`, in `dtype`: each
    matrix is brought close to the orthogonal factor of its SVD (singular values near 1)."""
    a, b, c = coefficients
    x = g.to(dtype)
    tall = g.size(-2) > g.size(-1)
    if tall:  # iterate on the wide side: the Gram matrix is the smaller one
        x = x.mT
    x = x / torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    return x.mT if tall else x


def lr_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """How the step of a `rows x cols` matrix is scaled, as torch.optim.Muon does."""
    rows, cols = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(
        f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', not {adjust_lr_fn!r}"
    )


class Muon(torch.optim.Optimizer):
    """`torch.optim.Muon`'s arguments, update and state dict; see the module doc."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        ns_dtype: torch.dtype | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
            ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
        )  # fmt: skip
        super().__init__(params, defaults)
        for group in self.param_groups:
            lr_ratio(group["adjust_lr_fn"], (1, 1))  # an unknown name fails here, not mid-run
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        f"Muon is for 2-D matrices; got a parameter of shape {tuple(p.shape)}"
                    )
        self._stacks: dict[tuple, torch.Tensor] = {}
        self.ns_dtype = ns_dtype  # None: bf16 on CUDA, float32 elsewhere

    def iteration_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype of the Newton-Schulz products for matrices on `device`."""
        if self.ns_dtype is not None:
            return self.ns_dtype
        return torch.bfloat16 if device.type == "cuda" else torch.float32

    @torch.no_grad()
    def step(self, closure=None, found_inf: torch.Tensor | None = None):
        """One update of every matrix that has a gradient. `found_inf`: a 0-dim device tensor;
        where it is nonzero the step changes nothing."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        skip = None if found_inf is None else found_inf.to(torch.bool)
        for index, group in enumerate(self.param_groups):
            shapes: dict[tuple, list[torch.Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    shapes[(tuple(p.shape), p.dtype, p.device)].append(p)
            for key, params in shapes.items():
                self._update(group, params, self._momentum(index, key, params), skip)
        return loss

    def _momentum(self, index: int, key: tuple, params: list[torch.Tensor]) -> torch.Tensor:
        """The momentum buffers of `params` as one stacked tensor; each parameter's state holds
        its slice. Restacked when the state was replaced (a checkpoint loaded) or is new."""
        stacked = self._stacks.get((index, key))
        buffers = [self.state[p].get("momentum_buffer") for p in params]
        if (
            stacked is not None
            and len(params) == len(stacked)
            and all(
                b is not None and b.data_ptr() == s.data_ptr()
                for b, s in zip(buffers, stacked, strict=True)
            )
        ):
            return stacked
        stacked = torch.stack(
            [torch.zeros_like(p) if b is None else b for b, p in zip(buffers, params, strict=True)]
        )
        for p, view in zip(params, stacked, strict=True):
            self.state[p]["momentum_buffer"] = view
        self._stacks[(index, key)] = stacked
        return stacked

    def _update(self, group, params, momentum, skip: torch.Tensor | None) -> None:
        lr, decay, beta = float(group["lr"]), group["weight_decay"], group["momentum"]
        grads = torch.stack([p.grad for p in params])
        if skip is not None:  # a skipped step: the momentum is "lerped" towards itself
            grads = torch.where(skip, momentum, grads)
        momentum.lerp_(grads, 1 - beta)
        update = grads.lerp(momentum, beta) if group["nesterov"] else momentum
        dtype = self.iteration_dtype(update.device)
        update = orthogonalize(
            update, group["ns_steps"], group["ns_coefficients"], group["eps"], dtype
        )
        update = update.to(params[0].dtype)
        shrink: float | torch.Tensor = 1 - lr * decay
        if skip is not None:
            update = torch.where(skip, 0.0, update)
            shrink = torch.where(skip, 1.0, torch.full_like(skip, shrink, dtype=update.dtype))
        torch._foreach_mul_(params, shrink)
        scale = -lr * lr_ratio(group["adjust_lr_fn"], params[0].shape)
        torch._foreach_add_(params, list(update.unbind(0)), alpha=scale)
