"""A GPT-2 language model: learned positions, pre-LayerNorm, no biases, tied embeddings, a 4x MLP
with tanh-GELU (so Hugging Face GPT-2 loads it exactly) and causal attention through
`scaled_dot_product_attention`. Only `nn.Module` code lives here: no optimizer and no I/O.

Two speed switches live on the modules, set by `train/speed.py`: `CausalSelfAttention.backends`
(the SDPA kernels allowed in training and evaluation forwards, None: PyTorch's choice; decoding
with a KV cache always keeps PyTorch's choice) and `GPT.checkpointing` (recompute each block in
the backward pass). Neither changes the parameters or the state dict."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hellolondon.config import ModelConfig


class KVCache:
    """Keys and values of every layer for incremental decoding, preallocated to `max_len`."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, device, dtype) -> None:
        shape = (batch, cfg.n_head, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.pos = 0  # tokens already cached
        self.max_len = max_len

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.size(2)
        self.k[layer][:, :, self.pos : self.pos + t] = k
        self.v[layer][:, :, self.pos : self.pos + t] = v
        end = self.pos + t
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.backends: list | None = None  # SDPA kernels allowed (torch.nn.attention.SDPBackend)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        mask, causal = None, True
        if cache is not None:
            start = cache.pos
            k, v = cache.update(layer, k, v)  # (B, nh, start+T, hs)
            if start > 0:
                # new queries see every cached key and the new keys up to themselves
                causal = False
                if T > 1:
                    mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
        p = self.dropout if self.training else 0.0
        # the kernel was checked in training's dtype only: decoding (the samples of a run, in
        # float32 on the GPU, where flash and cuDNN attention have no kernel) keeps any kernel
        if self.backends is not None and cache is None:
            from torch.nn.attention import sdpa_kernel

            with sdpa_kernel(self.backends):
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal and mask is None
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.c_proj(y), p, self.training)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tanh-approximate GELU is GPT-2's "gelu_new": the exported model then matches exactly
        h = F.gelu(self.c_fc(x), approximate="tanh")
        return F.dropout(self.c_proj(h), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=False),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one matrix, counted once
        self.checkpointing = False  # recompute each block's activations in the backward pass
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) keep the stream's variance flat
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, counting the tied matrix once; without the position table by default
        (it costs no FLOPs), which is the count the FLOP formula and the seed's log use."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: 6N for the matmuls (forward + backward) plus 12·L·H·Q·T for
        attention scores and values (PaLM appendix B, as nanoGPT uses for MFU)."""
        c = self.config
        t = seq_len or c.block_size
        return 6 * self.num_params() + 12 * c.n_layer * c.n_head * c.head_dim * t

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final hidden states (B, T, C): everything but the output projection, so decoding can
        project only the position it samples from."""
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than the model's context of {self.config.block_size}"
            )
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            if self.checkpointing and self.training and cache is None and torch.is_grad_enabled():
                # keeps only each block's input; the RNG state is restored for the recompute
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, cache, i)
        if cache is not None:
            cache.pos += T
        return self.transformer.ln_f(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.lm_head(self.hidden(idx, cache))  # (B, T, vocab)
        if targets is None:
            return logits, None
        # autocast runs cross_entropy in float32; an explicit upcast would keep a second copy of the logits
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
        )
        return logits, loss
