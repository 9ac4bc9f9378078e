"""The speed options on the CPU: step results read in batches give the losses of a step that
reads every loss at once, bitwise; device-side skipping of non-finite steps; prefetched
batches; activation checkpointing; attention kernels; micro-batches; the clear refusals."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tinyrun import tiny_config

from hellolondon.errors import UserError
from hellolondon.rundir import read_jsonl
from hellolondon.train import speed
from hellolondon.train.loop import train


def _rows(run_dir) -> dict[int, tuple[float, float, float]]:
    return {
        r["step"]: (r["train/loss"], r["train/grad_norm"], r["train/lr"])
        for r in read_jsonl(run_dir / "metrics.jsonl")
        if "train/loss" in r
    }


def _reference_step(run, stop=None):
    """The step as it was before results stayed on the device: every step reads the loss,
    grad norm and stop flag back at once and decides on the host. Same sample order."""
    from hellolondon.train.distributed import all_reduce_mean, grad_sync
    from hellolondon.train.optim import lr_scale

    c, d, opt = run.cfg.train, run.dist, run.optimizer
    scale = lr_scale(run.state.step, c)
    for group in opt.param_groups:  # each group from its own peak (Muon's differs from AdamW's)
        group["lr"] = group["peak_lr"] * scale
    lr = c.lr * scale
    total = torch.zeros((), device=d.device)
    for micro in range(c.grad_accum):
        first = run.state.samples_seen + (micro * d.world_size + d.rank) * c.batch_size
        x, y = run.batches.train_batch(first, c.batch_size)
        with grad_sync(run.step_model, d, sync=micro == c.grad_accum - 1), run.autocast():
            _, loss = run.step_model(x, y)
            loss = loss / c.grad_accum
        run.scaler.scale(loss).backward()
        total += loss.detach()
    run.scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), c.grad_clip or math.inf)
    flag = torch.tensor(float(stop is not None and stop.pending), device=total.device)
    values = all_reduce_mean(torch.stack([total, norm.to(total), flag]), d)
    loss_val, norm_val, stopping = values.tolist()
    if stop is not None and stopping > 0:
        stop.requested = True
    if math.isfinite(loss_val):
        run.scaler.step(opt)
        run.scaler.update()
    opt.zero_grad(set_to_none=True)
    return speed.StepResult(values, lr, not math.isfinite(loss_val))


def _fused_adamw(monkeypatch):
    """Fused AdamW on the CPU too (torch >= 2.4 has the kernel): the device-side skip path.
    With Muon, its AdamW part is the fused one."""
    from hellolondon.train import run as run_module
    from hellolondon.train.optim import MuonWithAdamW, build_optimizer

    def fuse(opt, cfg):
        groups = [
            {"params": g["params"], "weight_decay": g["weight_decay"]} for g in opt.param_groups
        ]
        fused = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
        for group in fused.param_groups:
            group["peak_lr"] = cfg.lr
        return fused

    def fused(model, cfg, device_type, log=print):
        opt = build_optimizer(model, cfg, device_type, log)
        if isinstance(opt, MuonWithAdamW):
            return MuonWithAdamW(opt.muon, fuse(opt.adamw, cfg))
        return fuse(opt, cfg)

    monkeypatch.setattr(run_module, "build_optimizer", fused)


# the step before device-side results was AdamW's with the cosine schedule
ADAMW = ["train.optimizer=adamw", "train.schedule=cosine"]
MUON = ["train.optimizer=muon", "train.schedule=wsd"]  # the presets' recipe
SETTINGS = {
    "plain": [],
    "accumulation and dropout": ["train.grad_accum=3", "model.dropout=0.1"],
}


@pytest.mark.parametrize("recipe", [ADAMW, MUON], ids=["adamw", "muon"])
@pytest.mark.parametrize("fused", [False, True], ids=["host-skip", "device-skip"])
@pytest.mark.parametrize("extra", list(SETTINGS.values()), ids=list(SETTINGS))
def test_losses_equal_a_step_that_reads_every_loss_at_once(
    tiny_data, tmp_path, monkeypatch, extra, fused, recipe
):
    if fused:
        _fused_adamw(monkeypatch)
    common = ["train.max_iters=12", "train.log_interval=1", *recipe, *extra]
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=new", *common), log=lambda *_: None)
    monkeypatch.setattr("hellolondon.train.loop.train_step", _reference_step)
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=old", *common), log=lambda *_: None)
    new, old = _rows(tmp_path / "new"), _rows(tmp_path / "old")
    assert sorted(new) == list(range(1, 13))
    assert new == old  # bitwise: floats compared exactly


def test_sparse_log_rows_hold_the_same_losses(tiny_data, tmp_path):
    """With log_interval 4 the loop reads the device every 4 steps; the rows it writes hold the
    losses that a run logging every step has at those steps."""
    every = tiny_config(tiny_data, tmp_path, "tracking.run_name=every", "train.max_iters=12")
    sparse = tiny_config(
        tiny_data, tmp_path, "tracking.run_name=sparse", "train.max_iters=12",
        "train.log_interval=4", "train.eval_interval=0", "train.ckpt_interval=0",
    )  # fmt: skip
    train(every, log=lambda *_: None)
    summary = train(sparse, log=lambda *_: None)
    a, b = _rows(tmp_path / "every"), _rows(tmp_path / "sparse")
    assert sorted(b) == [4, 8, 12]
    assert all(a[s] == b[s] for s in b)
    assert summary["first_step_s"] > 0


def _poison_the_third_step(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The third training forward's loss becomes NaN; returns the weights each training
    forward saw, in order (filled while training runs)."""
    from hellolondon.model import GPT

    real = GPT.forward
    seen: list[dict[str, torch.Tensor]] = []

    def poisoned(self, idx, targets=None, cache=None):
        if self.training and targets is not None:
            seen.append({k: v.detach().clone() for k, v in self.state_dict().items()})
        logits, loss = real(self, idx, targets, cache)
        if self.training and targets is not None and len(seen) == 3:
            loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    return seen


@pytest.mark.parametrize("recipe", [ADAMW, MUON], ids=["adamw", "muon"])
def test_device_skip_leaves_weights_and_optimizer_untouched(
    tiny_data, tmp_path, monkeypatch, recipe
):
    from hellolondon.train.optim import MuonWithAdamW

    _fused_adamw(monkeypatch)
    seen = _poison_the_third_step(monkeypatch)
    steps = {"n": 0}
    real_step = speed.step_unless

    def counting(opt, bad):
        steps["n"] += 1
        real_step(opt, bad)
        adam = opt.adamw if isinstance(opt, MuonWithAdamW) else opt
        steps["adam_step"] = max(float(s["step"]) for s in adam.state.values())

    monkeypatch.setattr("hellolondon.train.steps.step_unless", counting)
    cfg = tiny_config(
        tiny_data, tmp_path, "tracking.run_name=n", "train.max_iters=5", "eval_interval=0",
        "train.log_interval=5", "train.ckpt_interval=0", *recipe,
    )  # fmt: skip
    summary = train(cfg, log=lambda *_: None)
    assert summary["iterations"] == 5 and steps["n"] == 5  # no host decision: all on the device
    assert steps["adam_step"] == 4.0  # the skipped step did not count in AdamW's bias correction
    same = [all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(seen, seen[1:], strict=False)]
    assert same == [False, False, True, False]  # only the poisoned step changed nothing
    events = read_jsonl(tmp_path / "n" / "events.jsonl")
    bad = [e for e in events if e["rule"] == "nonfinite"]  # reported at the next read (step 5)
    assert [(e["step"], e["text"][:8]) for e in bad] == [(3, "loss nan")]  # as train/iter says


def test_an_fp16_step_skipped_for_its_loss_lets_the_next_steps_run(
    tiny_data, tmp_path, monkeypatch
):
    """fp16's grad scaler (on a GPU; enabled here on the CPU) after a step skipped for a NaN
    loss: the scaler's step ends (its scale lowered for the overflowing gradients), so the next
    step can unscale its own gradients instead of failing with "unscale_() has already been
    called"."""
    real = torch.amp.GradScaler
    scalers = []

    def enabled(device, enabled=True, **kw):
        scalers.append(real(device, enabled=True, **kw))
        return scalers[-1]

    monkeypatch.setattr(torch.amp, "GradScaler", enabled)
    seen = _poison_the_third_step(monkeypatch)
    cfg = tiny_config(
        tiny_data, tmp_path, "tracking.run_name=h", "train.max_iters=5", "eval_interval=0",
        "train.log_interval=1", "train.ckpt_interval=0",
    )  # fmt: skip
    summary = train(cfg, log=lambda *_: None)
    assert summary["iterations"] == 5 and len(seen) == 5
    assert scalers[0].get_scale() == 2.0**15  # halved once, for the skipped step
    same = [all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(seen, seen[1:], strict=False)]
    assert same == [False, False, True, False]  # only the poisoned step changed nothing


def test_the_stop_policy_stops_at_the_bad_step_where_the_device_could_skip_it(
    tiny_data, tmp_path, monkeypatch
):
    """Under `nonfinite=stop` each step's loss is read at once, even with a fused optimizer:
    the checkpoint holds the weights from before the bad step, not those of later steps
    applied before the next read."""
    from safetensors.torch import load_file

    _fused_adamw(monkeypatch)
    seen = _poison_the_third_step(monkeypatch)
    on_device = []
    monkeypatch.setattr("hellolondon.train.steps.step_unless", lambda *a: on_device.append(a))
    cfg = tiny_config(
        tiny_data, tmp_path, "tracking.run_name=s", "train.max_iters=8", "eval_interval=0",
        "train.log_interval=8", "train.ckpt_interval=0", "train.nonfinite=stop",
    )  # fmt: skip
    summary = train(cfg, log=lambda *_: None)
    assert on_device == [] and summary["stop_reason"] == "non-finite loss"
    assert summary["iterations"] == 2 and len(seen) == 3  # stopped at the bad step, not step 8
    saved = load_file(tmp_path / "s" / "checkpoints" / "step-000002" / "model.safetensors")
    shared = [k for k in saved if k in seen[2]]
    assert shared and all(torch.equal(saved[k], seen[2][k]) for k in shared)


def test_readback_reads_once_and_carries_the_stop_flag():
    class Stop:
        requested = False

    rb, stop = speed.Readback(), Stop()
    rb.add(0, speed.StepResult(torch.tensor([2.0, 1.0, 0.0]), 1e-3, None))
    rb.add(1, speed.StepResult(torch.tensor([math.nan, 1.0, 0.5]), 1e-3, None))
    rb.add(2, speed.StepResult(torch.tensor([1.5, 0.9, 0.0]), 1e-3, False))
    rows = rb.read(stop)
    assert [(r.step, r.skipped, r.known_at_once) for r in rows] == [
        (0, False, False), (1, True, False), (2, False, True)
    ]  # fmt: skip
    assert stop.requested and rb.read(stop) == []


def test_prefetched_batches_equal_direct_reads_in_any_order(tiny_data):
    from hellolondon.train.data import Batches

    direct = Batches(tiny_data, 32, seed=7, device=torch.device("cpu"))
    ahead = Batches(tiny_data, 32, seed=7, device=torch.device("cpu"))
    # steps of 2 micro-batches of 3 on 2 ranks (rank 1), then a jump (a resume elsewhere),
    # then a wrong guess: every batch must still be the one asked for
    asks = [(s + (m * 2 + 1) * 3, s + ((m + 1) * 2 + 1) * 3) for s in (0, 12, 24) for m in (0, 1)]
    asks += [(500, 506), (506, None), (9, 15), (40, 46)]
    for first, then in asks:
        x1, y1 = direct.train_batch(first, 3)
        x2, y2 = ahead.train_batch_ahead(first, 3, then)
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # past an epoch boundary, too
    n = direct.n_windows
    for first in (n - 2, n + 1):
        assert torch.equal(
            direct.train_batch(first, 3)[0], ahead.train_batch_ahead(first, 3, first + 3)[0]
        )


def test_an_epoch_older_than_the_two_kept_is_made_again_not_lost(tiny_data):
    from hellolondon.train.data import Batches

    b = Batches(tiny_data, 32, seed=7, device=torch.device("cpu"))
    offset, order = Batches(tiny_data, 32, seed=7, device=torch.device("cpu"))._epoch(4)
    b._epoch(5), b._epoch(6)
    again = b._epoch(4)  # pruned at once, but returned
    assert again[0] == offset and np.array_equal(again[1], order)


def test_a_wrong_guess_is_not_read_beside_the_batch_asked_for(tiny_data, monkeypatch):
    """The background thread and the training thread never read at the same time: a guess
    that missed is let end first (both would share the epochs' orders)."""
    import time

    from hellolondon.train.data import Batches, Prefetcher

    busy, overlaps = [0], []
    real = Prefetcher._read

    def slow_read(self, first, batch):
        busy[0] += 1
        overlaps.append(busy[0])
        time.sleep(0.05)
        try:
            return real(self, first, batch)
        finally:
            busy[0] -= 1

    monkeypatch.setattr(Prefetcher, "_read", slow_read)
    ahead = Batches(tiny_data, 32, seed=7, device=torch.device("cpu"))
    ahead.train_batch_ahead(0, 3, 3)
    ahead.train_batch_ahead(40, 3, None)  # not the guessed batch
    assert max(overlaps) == 1


def test_prefetch_off_gives_the_same_losses(tiny_data, tmp_path):
    on = tiny_config(tiny_data, tmp_path, "tracking.run_name=on", "train.grad_accum=2")
    off = tiny_config(
        tiny_data, tmp_path, "tracking.run_name=off", "train.grad_accum=2", "train.prefetch=false"
    )
    train(on, log=lambda *_: None)
    train(off, log=lambda *_: None)
    assert _rows(tmp_path / "on") == _rows(tmp_path / "off")


def test_activation_checkpointing_gives_the_same_losses(tiny_data, tmp_path):
    common = ["model.dropout=0.1", "train.max_iters=8"]  # dropout: the recompute replays its RNG
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=a", *common), log=lambda *_: None)
    ckpt = tiny_config(
        tiny_data, tmp_path, "tracking.run_name=b", "train.activation_checkpointing=true", *common
    )
    train(ckpt, log=lambda *_: None)
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert a.keys() == b.keys()
    for step in a:
        assert a[step][0] == pytest.approx(b[step][0], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("kernel", ["math", "flash"])
def test_attention_kernels_that_run_on_cpu_give_the_same_loss(tiny_data, tmp_path, kernel):
    common = ["train.max_iters=4"]
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=auto", *common), log=lambda *_: None)
    picked = tiny_config(
        tiny_data, tmp_path, f"tracking.run_name={kernel}", f"train.attention={kernel}", *common
    )
    train(picked, log=lambda *_: None)
    a, b = _rows(tmp_path / "auto"), _rows(tmp_path / kernel)
    for step in a:
        assert a[step][0] == pytest.approx(b[step][0], rel=1e-4)


def test_an_unavailable_attention_kernel_is_one_clear_error():
    with pytest.raises(UserError, match=r"train.attention=efficient: .*cpu.*train.attention=auto"):
        speed.attention_backends("efficient", torch.device("cpu"), torch.float32, 16, 16)


def test_the_attention_kernel_is_tried_with_the_runs_dropout(tiny_data, tmp_path, recwarn):
    """The CPU's flash kernel has no dropout: a run with attention dropout is refused at its
    start, in one line, not at its first step with torch's "No available kernel"."""
    cpu = torch.device("cpu")
    assert speed.attention_backends("flash", cpu, torch.float32, 16, 64) is not None
    with pytest.raises(UserError, match=r"flash .* head size 16 and dropout 0.1 \("):
        speed.attention_backends("flash", cpu, torch.float32, 16, 64, dropout=0.1)
    assert not [w for w in recwarn if "kernel" in str(w.message)]  # said once, in the error
    cfg = tiny_config(tiny_data, tmp_path, "train.attention=flash", "model.dropout=0.1")
    with pytest.raises(UserError, match="dropout 0.1"):
        train(cfg, log=lambda *_: None)


def test_the_attention_kernel_is_tried_at_the_runs_sequence_length(monkeypatch):
    """A kernel can run short sequences and fail long ones: trying it at 16 tokens, as before,
    would let a 1,024-token run fail at its first step instead of at the start."""
    from hellolondon.config import build_config
    from hellolondon.model import GPT

    seen = []
    real = speed.F.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        seen.append(q.shape[-2])
        return real(q, *args, **kwargs)

    monkeypatch.setattr(speed.F, "scaled_dot_product_attention", spy)
    cfg = build_config("tiny", overrides=["vocab_size=64", "block_size=96", "train.attention=math"])
    speed.prepare(GPT(cfg.model), cfg, torch.device("cpu"), torch.float32, log=lambda *_: None)
    assert seen == [96]


def test_the_attention_setting_reaches_every_block_and_the_generation_path():
    from torch.nn.attention import SDPBackend

    from hellolondon.config import build_config
    from hellolondon.model import GPT, KVCache

    cfg = build_config("tiny", overrides=["vocab_size=64", "block_size=16", "train.attention=math"])
    model = GPT(cfg.model)
    speed.prepare(model, cfg, torch.device("cpu"), torch.float32, log=lambda *_: None)
    assert all(b.attn.backends == [SDPBackend.MATH] for b in model.transformer.h)
    model.eval()
    cache = KVCache(cfg.model, 1, 16, "cpu", torch.float32)
    x = torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        model(x[:, :4], cache=cache)
        model(x[:, 4:], cache=cache)  # a masked step: any kernel may take it


def test_decoding_keeps_any_attention_kernel():
    """The kernel of train.attention is checked in training's dtype; a run's samples decode in
    float32, for which flash and cuDNN attention have no CUDA kernel. Here a kernel the CPU has
    none of stands for them: decoding with the KV cache does not use it."""
    from torch.nn.attention import SDPBackend

    from hellolondon.config import build_config
    from hellolondon.generate import Sampling, generate_ids
    from hellolondon.model import GPT

    cfg = build_config("tiny", overrides=["vocab_size=64", "block_size=16"])
    model = GPT(cfg.model)
    for block in model.transformer.h:
        block.attn.backends = [SDPBackend.EFFICIENT_ATTENTION]
    x = torch.randint(0, 64, (1, 6))
    with pytest.raises(RuntimeError):  # the training forward does use it
        model(x, x)
    ids = generate_ids(model, [1, 2, 3], Sampling(max_new_tokens=5))
    assert len(ids) == 5


def test_fp8_on_a_cpu_is_one_clear_error():
    with pytest.raises(UserError, match="train.fp8=true needs a CUDA GPU"):
        speed.to_fp8(torch.nn.Linear(16, 16), torch.device("cpu"))


class _BrokenModule:
    def __getattr__(self, name):
        raise RuntimeError("undefined symbol: _ZN3c10 (built for another torch)")


@pytest.mark.parametrize(
    "module, message",
    [
        (None, r"needs torchao \(pip install torchao\)"),
        (_BrokenModule(), "importing it failed: undefined symbol"),
    ],
    ids=["missing", "built-for-another-torch"],
)
def test_fp8_without_a_working_torchao_is_one_clear_error(monkeypatch, module, message):
    monkeypatch.setitem(sys.modules, "torchao.float8", module)
    with pytest.raises(UserError, match=message):
        speed.to_fp8(torch.nn.Linear(16, 16), torch.device("cpu"), emulate=True)


def test_fp8_trains_resumes_and_loads_without_fp8(tiny_data, tmp_path, monkeypatch):
    """The fp8 path through the trainer, on the CPU with torchao's emulation (float8's rounding
    without float8 kernels): the blocks' linear layers are swapped, the losses are near full
    precision's without being equal, a run resumed from its step-6 checkpoint repeats the
    uninterrupted one bit for bit, and the checkpoint generates in a model built without fp8."""
    # scripts/setup.sh --dev installs torchao apart, in .venv/fp8: transformers imports it on
    # every model load once it is in the environment
    monkeypatch.syspath_prepend(str(Path(sys.prefix) / "fp8"))
    pytest.importorskip("torchao.float8")
    from hellolondon.generate import Sampling, generate_ids
    from hellolondon.train.checkpoint import load_for_inference

    convert, swapped = speed.to_fp8, []

    def emulated(model, device, log=print):
        convert(model, device, log, emulate=True)
        swapped.append(sum("Float8" in type(m).__name__ for m in model.modules()))

    monkeypatch.setattr(speed, "to_fp8", emulated)
    quiet = lambda *_: None  # noqa: E731
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=plain"), log=quiet)
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=whole", "train.fp8=true"), log=quiet)
    assert swapped == [2 * 4]  # per block: attention in and out, MLP in and out
    stopped = tmp_path / "stopped"  # the run as it was at step 6, resumed to the end
    shutil.copytree(tmp_path / "whole", stopped)
    shutil.rmtree(stopped / "checkpoints" / "step-000012")
    (stopped / "checkpoints" / "latest").write_text("step-000006")
    again = tiny_config(tiny_data, tmp_path, "tracking.run_name=stopped", "train.fp8=true")
    train(again, resume=str(stopped), log=quiet)

    plain, whole, resumed = (_rows(tmp_path / n) for n in ("plain", "whole", "stopped"))
    assert swapped == [8, 8] and resumed == whole  # bitwise: floats compared exactly
    assert whole.keys() == plain.keys()
    assert all(whole[s][0] == pytest.approx(plain[s][0], rel=1e-3) for s in plain)
    assert any(whole[s][0] != plain[s][0] for s in plain)
    loaded = load_for_inference(tmp_path / "whole")
    assert not any("Float8" in type(m).__name__ for m in loaded.model.modules())
    assert len(generate_ids(loaded.model, [1, 2, 3], Sampling(max_new_tokens=4))) == 4


def test_fp8_leaves_the_compiled_kernels_in_the_runs_cache(tmp_path):
    """torchao imports torch._inductor, which sets TORCHINDUCTOR_CACHE_DIR to its /tmp default:
    the run's kernel cache must still be the one `compiled` chooses. A fresh interpreter, where
    torch._inductor is not imported yet, as in a training process."""
    fp8 = Path(sys.prefix) / "fp8"
    if not (fp8 / "torchao").is_dir():
        pytest.skip("torchao is installed apart by scripts/setup.sh --dev")
    code = (
        "import os, sys, torch\n"
        "from hellolondon.config import build_config\n"
        "from hellolondon.model import GPT\n"
        "from hellolondon.train import speed\n"
        "cfg = build_config('tiny', overrides=[f'out_dir={sys.argv[1]}', 'n_embd=64', 'n_head=2'])\n"
        "model = GPT(cfg.model)\n"
        "speed.to_fp8(model, torch.device('cpu'), lambda *_: None, emulate=True)\n"
        "speed.compiled(model, cfg)\n"
        "print(os.environ['TORCHINDUCTOR_CACHE_DIR'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fp8), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == str((tmp_path / ".compile-cache").resolve())


def test_micro_batches_regroup_the_same_samples(tiny_data, tmp_path):
    common = ["train.batch_size=2", "train.grad_accum=4", "train.max_iters=6"]
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=a", *common), log=lambda *_: None)
    big = tiny_config(tiny_data, tmp_path, "tracking.run_name=b", "train.micro_batch=8", *common)
    said: list[str] = []
    train(big, log=said.append)
    batch = next(line for line in said if line.startswith("global batch:"))
    assert "2 x 4 accumulation x 1 process = 8 sequences" in batch  # the step, as configured
    assert "run as 1 forward of 8 sequences per process (train.micro_batch)" in batch
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    for step in a:  # one forward of 8 instead of 4 of 2: the same mean up to rounding
        assert a[step][0] == pytest.approx(b[step][0], rel=1e-5)


def test_evaluation_forwards_take_no_more_sequences_than_training_ones(
    tiny_data, tmp_path, monkeypatch
):
    """train.micro_batch bounds every forward, the evaluation's too: the memory check counts on
    it, so a batch too large for one forward never reaches the device whole."""
    from hellolondon.model import GPT

    seen: list[tuple[bool, int]] = []
    forward = GPT.forward

    def counted(self, idx, *args, **kwargs):
        seen.append((self.training, idx.size(0)))
        return forward(self, idx, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", counted)
    cfg = tiny_config(
        tiny_data, tmp_path, "train.batch_size=8", "train.micro_batch=2", "train.max_iters=2",
        "train.eval_interval=2", "train.sample_interval=0",
    )  # fmt: skip
    train(cfg, log=lambda *_: None)
    evaluated = [n for training, n in seen if not training]
    assert evaluated and max(evaluated) == 2  # evaluations at steps 0 and 2, in pieces of 2
    assert {n for training, n in seen if training} == {2}


def test_cuda_graphs_inductor_skipped_are_said(monkeypatch):
    """Inductor runs a graph without CUDA graphs and says so only under TORCH_LOGS=cudagraphs;
    its counter is read after the first step (and by bench) and turned into a warning."""
    from torch._dynamo.utils import counters

    from hellolondon.config import build_config

    cuda = torch.device("cuda")  # only its type is read
    monkeypatch.setitem(counters["inductor"], "cudagraph_skips", 2)
    graphs = build_config(
        "tiny", overrides=["train.compile=true", "train.compile_mode=reduce-overhead"]
    )
    assert speed.cuda_graph_skips(graphs, cuda) == 2
    assert "inductor ran 2 compiled graph(s) without CUDA graphs" in speed.cuda_graph_warning(
        graphs, cuda
    )
    assert speed.cuda_graph_skips(graphs, torch.device("cpu")) is None
    on_cpu = speed.cuda_graph_warning(graphs, torch.device("cpu"))  # said, not left to guess
    assert "on the cpu the step runs as under compile_mode=default" in on_cpu
    for plain in (
        ["train.compile=true"],
        ["train.compile=false", "train.compile_mode=reduce-overhead"],
    ):
        assert speed.cuda_graph_warning(build_config("tiny", overrides=plain), cuda) is None
    monkeypatch.setitem(counters["inductor"], "cudagraph_skips", 0)
    assert (
        speed.cuda_graph_skips(graphs, cuda) == 0 and speed.cuda_graph_warning(graphs, cuda) is None
    )


def test_micro_batch_choices():
    from hellolondon.config import build_config

    cpu = torch.device("cpu")
    cfg = build_config("slm", overrides=["train.batch_size=16", "train.grad_accum=2"])
    assert speed.micro_plan(cfg, cpu) == (16, 2)  # off
    notes: list[str] = []
    cfg.train.micro_batch = "auto"
    assert speed.micro_plan(cfg, cpu, log=notes.append) == (16, 2)
    assert "free GPU memory" in notes[0]
    cfg.train.micro_batch = "32"
    assert speed.micro_plan(cfg, cpu) == (32, 1)
    cfg.train.micro_batch = "12"
    with pytest.raises(UserError, match=r"must divide batch_size\*grad_accum = 32.*1, 2, 4, 8"):
        speed.micro_plan(cfg, cpu)
    reg = build_config("regular")  # 16 x 2
    assert speed.auto_micro_batch(reg, 130 * 2**30) == 32  # an H200's free memory: one forward
    assert speed.auto_micro_batch(reg, 22 * 2**30) < 32  # a 24 GB card: smaller than 32
    reg.train.activation_checkpointing = True
    assert speed.auto_micro_batch(reg, 22 * 2**30) == 32  # checkpointing lets it fit
    assert speed.auto_micro_batch(reg, 1 * 2**30) == 1  # never below one sequence


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graphs_with_several_forwards_per_step_are_refused(mode):
    from hellolondon.config import build_config

    cuda = torch.device("cuda")  # only the device's type is read: no GPU is touched
    cfg = build_config("regular", overrides=[f"train.compile_mode={mode}"])  # 16 x 2
    with pytest.raises(UserError, match=r"records CUDA graphs.*train.micro_batch=32"):
        speed.check_cuda_graphs(cfg, cuda, 16, 2)
    speed.check_cuda_graphs(cfg, cuda, 32, 1)  # one forward per step: allowed
    speed.check_cuda_graphs(cfg, torch.device("cpu"), 16, 2)  # no CUDA graphs on a CPU
    cfg.train.compile = "false"
    speed.check_cuda_graphs(cfg, cuda, 16, 2)
    for fine in ("default", "max-autotune-no-cudagraphs"):
        ok = build_config("regular", overrides=[f"train.compile_mode={fine}"])
        speed.check_cuda_graphs(ok, cuda, 16, 2)


def _micro_plan_on_rank(rank: int, port: int, free: list[int], out) -> None:
    import torch.distributed as dist

    from hellolondon.config import build_config

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=len(free)
    )
    try:
        torch.cuda.mem_get_info = lambda device=None: (free[rank], 141 * 2**30)
        cfg = build_config("regular", overrides=["train.micro_batch=auto"])  # 16 x 2
        out.put((rank, speed.micro_plan(cfg, torch.device("cuda"), len(free), lambda *_: None)))
    finally:
        dist.destroy_process_group()


def test_micro_batch_auto_is_the_same_on_every_rank():
    """Ranks with different free memory agree on the micro-batches (the least memory decides):
    the samples each rank reads follow from their size, and FSDP gathers in every forward."""
    import multiprocessing
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    free = [130 * 2**30, 22 * 2**30]  # an H200's free memory, a 24 GB card's
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_micro_plan_on_rank, args=(r, port, free, out)) for r in range(2)]
    for p in procs:
        p.start()
    plans = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    from hellolondon.config import build_config

    least = speed.auto_micro_batch(build_config("regular"), free[1], 2)
    assert plans[0] == plans[1] == (least, 32 // least)
    assert least < 32  # the larger memory alone would have chosen one forward of 32


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.attention=fast", "train.attention must be auto, flash"),
        ("train.compile_mode=fastest", "train.compile_mode must be one of"),
        ("train.micro_batch=0", "train.micro_batch must be off, auto or a positive number"),
        ("train.ddp_bucket_mb=0", "train.ddp_bucket_mb must be positive"),
    ],
)
def test_bad_speed_settings_are_refused(override, message):
    from hellolondon.config import build_config

    with pytest.raises(UserError, match=message):
        build_config("tiny", overrides=[override])


def test_compiled_keeps_its_kernel_cache_beside_the_runs(tmp_path, monkeypatch):
    from hellolondon.config import build_config

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    cfg = build_config("tiny", overrides=[f"out_dir={tmp_path}", "train.compile_mode=max-autotune"])
    module = speed.compiled(torch.nn.Linear(2, 2), cfg)  # compiles lazily, at the first call
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / ".compile-cache").resolve())
    assert hasattr(module, "_orig_mod")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    speed.compiled(torch.nn.Linear(2, 2), cfg)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")  # the user's wins


def test_a_compile_cache_that_cannot_be_written_is_one_line_before_the_run_folder(
    tiny_data, tmp_path, monkeypatch, capsys
):
    from hellolondon.cli import main

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    (tmp_path / "file").write_text("not a folder")
    runs = tmp_path / "runs"
    args = ["train", "--data", str(tiny_data), "--out-dir", str(runs), "train.compile=true"]
    assert main([*args, f"train.compile_cache={tmp_path / 'file' / 'cache'}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and not runs.exists()
    assert f"train.compile_cache folder {tmp_path / 'file' / 'cache'} cannot be created" in err
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ  # a retry in this process is not misled
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "file" / "env"))
    assert main(args) == 2
    assert "TORCHINDUCTOR_CACHE_DIR folder" in capsys.readouterr().err and not runs.exists()


def test_ddp_options_overlap_and_save_a_copy():
    from hellolondon.config import build_config

    c = build_config("tiny", overrides=["train.ddp_bucket_mb=50"]).train
    assert speed.ddp_options(c) == {
        "bucket_cap_mb": 50, "gradient_as_bucket_view": True, "static_graph": False
    }  # fmt: skip


@pytest.mark.parametrize("recipe", [ADAMW, MUON], ids=["adamw", "muon"])
@pytest.mark.parametrize("fused", [True, False], ids=["device-skip", "host-skip"])
def test_the_device_path_reads_no_value_inside_a_step(
    tiny_data, tmp_path, monkeypatch, fused, recipe
):
    """With fused AdamW (alone or beside Muon) no step reads a tensor's value on the host (on a
    GPU each such read waits for the GPU); the loop reads the results only at its log, eval and
    save steps. Without it, each step reads one flag."""
    import hellolondon.train.steps as steps

    if fused:
        _fused_adamw(monkeypatch)
    inside, reads = {"on": False}, []
    for name in ("item", "tolist", "__bool__", "__float__"):
        real = getattr(torch.Tensor, name)

        def counting(self, *a, _real=real, _name=name, **k):
            if inside["on"]:
                reads.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    real_step = steps.train_step

    def watched(run, stop=None):
        inside["on"] = True
        try:
            return real_step(run, stop)
        finally:
            inside["on"] = False

    monkeypatch.setattr("hellolondon.train.loop.train_step", watched)
    batches: list[int] = []
    real_read = speed.Readback.read
    monkeypatch.setattr(
        speed.Readback,
        "read",
        lambda self, stop=None: batches.append(len(self.items)) or real_read(self, stop),
    )
    cfg = tiny_config(
        tiny_data, tmp_path, "tracking.run_name=r", "train.max_iters=9", "train.log_interval=4",
        "train.eval_interval=0", "train.ckpt_interval=0", "train.grad_accum=2", *recipe,
    )  # fmt: skip
    train(cfg, log=lambda *_: None)
    if fused:
        assert reads == []
    else:  # one read per step: the skip and the stop flag together (AdamW's own step
        # counters, read with .item(), are CPU tensors: no GPU wait)
        assert reads.count("tolist") == 9 and "__bool__" not in reads
    assert batches == [1, 3, 4, 1, 0]  # after steps 1, 4, 8 and 9 (the last), then at the end


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_memory_floor_of_a_step_is_below_what_its_forward_keeps(dtype):
    # a setting refused for its floor must not fit: the floor counts no more than a forward
    # keeps for the backward pass (its saved tensors) and the weights
    from hellolondon.config import build_config
    from hellolondon.model import GPT

    cfg = build_config("tiny", overrides=["model.n_layer=2", "model.block_size=64",
                                          "model.vocab_size=512", "train.batch_size=3"])  # fmt: skip
    model = GPT(cfg.model)
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = torch.randint(0, 512, (3, 64))
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model(x, x)
    weights = {
        p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()
    }
    activations = sum(n for ptr, n in kept.items() if ptr not in weights)
    floor = speed.training_memory_floor(cfg, dtype, "cpu")
    assert floor["logits"] + floor["block inputs"] <= activations
    assert floor["weights"] == sum(weights.values())
    assert floor["logits"] + floor["block inputs"] > activations / 20  # a bound that bites


def test_the_memory_floor_takes_the_fewest_sequences_a_forward_can_hold():
    from hellolondon.config import build_config

    cfg = build_config("slm", overrides=["train.batch_size=16", "train.grad_accum=2"])
    per_sequence = speed.training_memory_floor(cfg, torch.float32, "cpu")["logits"] // 16
    for micro, device, sequences in [("off", "cuda", 16), ("4", "cpu", 4), ("32", "cpu", 32),
                                     ("100000", "cpu", 32),  # too large: micro_plan says so
                                     ("auto", "cuda", 1), ("auto", "cpu", 16)]:  # fmt: skip
        cfg.train.micro_batch = micro
        floor = speed.training_memory_floor(cfg, torch.float32, device)
        assert floor["logits"] == sequences * per_sequence
    half = speed.training_memory_floor(cfg, torch.bfloat16, "cpu")
    assert half["logits"] == 16 * per_sequence // 2  # 2 bytes a value in bfloat16 and float16
    cfg.train.fsdp = True
    assert speed.training_memory_floor(cfg, torch.float32, "cuda", 4)["weights"] == (
        4 * cfg.model.parameters // 4
    )
