"""Our KV-cached generation against `transformers` generate on the same exported model (CPU).

Both decode greedily from the same prompt to the same length (no early stop), in the same
process with the same number of threads; runs alternate so that background load hits both.
Tokens/s is reported on wall-clock time and on the process's CPU time: on a shared machine the
CPU-time figure leaves out the time other processes held the cores.
The model is the exported checkpoint when --checkpoint is given, else a randomly initialised
model of the preset's shape (speed does not depend on the weights).

    python benchmarks/generate_bench.py --preset tiny --threads 1
    python benchmarks/generate_bench.py --preset slm --new-tokens 64 --repeats 3
    python benchmarks/generate_bench.py --vocab 8192 model.n_embd=128 model.block_size=128
    python benchmarks/generate_bench.py --checkpoint runs/RUN
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build(args):
    from hellolondon.config import build_config
    from hellolondon.model import GPT

    if args.checkpoint:
        from hellolondon.train.checkpoint import load_for_inference

        loaded = load_for_inference(args.checkpoint, "cpu")
        model, cfg = loaded.model, loaded.cfg
        return model, cfg
    cfg = build_config(args.preset, overrides=[f"model.vocab_size={args.vocab}", *args.overrides])
    torch.manual_seed(0)
    return GPT(cfg.model).eval(), cfg


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="tiny", choices=["tiny", "slm", "regular"])
    p.add_argument("--vocab", type=int, default=30000, help="vocabulary of the random model")
    p.add_argument("--checkpoint", help="a run or checkpoint to benchmark instead")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="model settings, e.g. model.n_embd=128"
    )
    args = p.parse_args()

    from transformers import GPT2LMHeadModel

    from hellolondon.export import write_model
    from hellolondon.generate import Sampling, generate_ids

    torch.set_num_threads(args.threads)
    model, cfg = build(args)
    n = min(args.new_tokens, cfg.model.block_size - args.prompt_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        write_model(
            model, cfg, {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}, Path(tmp)
        )
        hf = GPT2LMHeadModel.from_pretrained(tmp, local_files_only=True, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(1, cfg.model.vocab_size, (args.prompt_tokens,), generator=g).tolist()
    greedy = Sampling(max_new_tokens=n, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)

    def ours() -> list[int]:
        return generate_ids(model, prompt, greedy, eot_id=None)

    def theirs() -> list[int]:
        x = torch.tensor([prompt])
        with torch.inference_mode():
            out = hf.generate(
                x,
                attention_mask=torch.ones_like(x),
                do_sample=False,
                repetition_penalty=1.0,  # generation_config.json sets 1.1 for sampling
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=0,
                eos_token_id=None,
            )
        return out[0, len(prompt) :].tolist()

    a, b = ours(), theirs()  # also the warm-up
    same = next((i for i, (u, v) in enumerate(zip(a, b, strict=True)) if u != v), len(a))
    with torch.inference_mode():
        x = torch.tensor([prompt + a])
        diff = (model(x)[0] - hf(x).logits).abs().max().item()
    wall: dict[str, list[float]] = {"ours": [], "transformers": []}
    cpu: dict[str, list[float]] = {"ours": [], "transformers": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("transformers", theirs)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(n / (time.perf_counter() - t0))
            cpu[name].append(n / (time.process_time() - c0))
    m = cfg.model
    print(
        f"model {m.n_layer}L/{m.n_embd}d/ctx {m.block_size}/vocab {m.vocab_size}, prompt {args.prompt_tokens}, "
        f"{n} new tokens, greedy, {args.threads} thread(s), median of {args.repeats} alternating runs"
    )
    print(
        f"largest logit difference {diff:.1e}; greedy tokens identical for the first {same} of {n}"
    )
    print(f"{'tokens/s':14}{'wall':>10}{'cpu':>10}")
    for name in ("ours", "transformers"):
        print(f"{name:14}{statistics.median(wall[name]):10.1f}{statistics.median(cpu[name]):10.1f}")
    ratio = [
        statistics.median(r["ours"]) / statistics.median(r["transformers"]) for r in (wall, cpu)
    ]
    print(f"{'speed-up':14}{ratio[0]:9.2f}x{ratio[1]:9.2f}x")


if __name__ == "__main__":
    main()
