"""Optimizers (AdamW; Muon beside AdamW) and the learning-rate schedules (cosine, WSD)."""

from __future__ import annotations

import io
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from tinyrun import TINY_MODEL, tiny_config

from hellolondon.config import PRESETS, ModelConfig, TrainConfig, build_config
from hellolondon.errors import UserError
from hellolondon.model import GPT
from hellolondon.rundir import read_jsonl
from hellolondon.train import checkpoint
from hellolondon.train.loop import train
from hellolondon.train.muon import Muon, orthogonalize
from hellolondon.train.optim import MuonWithAdamW, build_optimizer, lr_scale

has_torch_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch < 2.9")


def _cfg(**kw) -> TrainConfig:
    base = dict(max_iters=100, warmup_iters=10, lr=1e-3, min_lr=1e-4)
    return TrainConfig(**{**base, **kw})


def lr_at(it: int, c: TrainConfig) -> float:
    """The AdamW group's rate as `train_step` sets it: its peak times the schedule's scale."""
    return c.lr * lr_scale(it, c)


def test_cosine_warms_up_then_decays_to_the_floor():
    c = _cfg()
    assert lr_at(0, c) == pytest.approx(1e-3 / 11)
    assert lr_at(9, c) == pytest.approx(1e-3 * 10 / 11)
    assert lr_at(10, c) == pytest.approx(1e-3)  # the peak, right after warm-up
    assert lr_at(55, c) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half way down the cosine
    assert lr_at(100, c) == lr_at(500, c) == pytest.approx(1e-4)
    assert all(lr_at(i, c) >= lr_at(i + 1, c) for i in range(10, 120))


def test_wsd_is_flat_until_the_cooldown_then_falls_in_the_chosen_shape():
    linear = _cfg(schedule="wsd", cooldown_frac=0.2)
    assert [lr_scale(i, linear) for i in (10, 50, 80)] == [1.0, 1.0, 1.0]
    assert lr_scale(90, linear) == pytest.approx(0.1 + 0.5 * 0.9)  # half way down, linear
    assert lr_scale(99, linear) == pytest.approx(0.1 + 0.05 * 0.9)
    assert lr_scale(100, linear) == pytest.approx(0.1)
    root = _cfg(schedule="wsd", cooldown_frac=0.2, cooldown_shape="1-sqrt")
    assert lr_scale(90, root) == pytest.approx(0.1 + (1 - math.sqrt(0.5)) * 0.9)
    assert lr_scale(90, root) < lr_scale(90, linear)  # 1-sqrt drops faster at first


def test_extending_a_wsd_run_continues_the_stable_phase_and_moves_the_cooldown():
    short, longer = _cfg(schedule="wsd"), _cfg(schedule="wsd", max_iters=200)
    assert lr_scale(90, short) < 1.0  # the 100-step run is cooling down here
    assert lr_scale(90, longer) == lr_scale(159, longer) == 1.0  # the 200-step one is not
    assert lr_scale(200, longer) == pytest.approx(0.1)
    # cooled down early, from a step of the stable phase: the cool-down ends at the new end
    early = _cfg(schedule="wsd", max_iters=60)
    assert lr_scale(47, early) == 1.0 and lr_scale(54, early) < 1.0


def test_the_new_settings_are_checked():
    for bad in (
        dict(optimizer="sgd"),
        dict(schedule="linear"),
        dict(cooldown_frac=0.0),
        dict(cooldown_shape="cubic"),
        dict(muon_lr=0.0),
        dict(muon_momentum=1.0),
        dict(muon_weight_decay=-0.1),
        dict(muon_weight_decay=float("inf")),  # would train to nan without a word
        dict(optimizer="muon", fsdp=True),  # Newton-Schulz needs whole matrices
    ):
        with pytest.raises(UserError):
            TrainConfig(**bad)


def test_a_negative_decay_end_is_refused():
    with pytest.raises(UserError, match=r"train.lr_decay_iters must be >= 0"):
        _cfg(lr_decay_iters=-5)


@pytest.mark.parametrize(
    "odd, message",
    [
        (
            dict(warmup_iters=500),
            r"train.warmup_iters=500 is not shorter .* \(train.max_iters=100\): the learning "
            r"rate never reaches train.lr",
        ),
        (dict(warmup_iters=100), r"train.warmup_iters=100 is not shorter"),  # all warm-up
        (dict(lr_decay_iters=8), r"decay ends at step 8 \(train.lr_decay_iters=8\)"),
        # wsd: the cool-down (the last 20 of 100 steps) would start before the warm-up ends
        (
            dict(schedule="wsd", warmup_iters=81),
            r"runs into the wsd cool-down, which starts at step 80",
        ),
        (dict(schedule="wsd", cooldown_frac=1.0), r"train.warmup_iters=10 runs into the wsd"),
    ],
)
def test_a_schedule_that_does_not_fit_is_named(odd, message):
    assert re.search(message, _cfg(**odd).schedule_warning())


def test_every_fitting_schedule_gets_no_warning():
    assert _cfg(warmup_iters=99).schedule_warning() is None  # one step at the peak
    # the cool-down starts where the warm-up ends
    assert _cfg(schedule="wsd", warmup_iters=80).schedule_warning() is None
    assert _cfg(schedule="wsd", warmup_iters=0, cooldown_frac=1.0).schedule_warning() is None
    # the decay may end after the run (nanoGPT's lr_decay_iters)
    assert _cfg(lr_decay_iters=300).schedule_warning() is None


def test_a_run_shorter_than_its_warm_up_trains_and_says_so_once(tiny_data, tmp_path, capsys):
    from hellolondon.cli import main

    runs = tmp_path / "runs"
    argv = ["train", "--preset", "tiny", "--data", str(tiny_data), "--out-dir", str(runs)]
    small = [*TINY_MODEL, "train.batch_size=2", "train.eval_iters=1", "train.sample_interval=0"]
    assert main([*argv, *small, "train.max_iters=2", "tracking.wandb_mode=disabled"]) == 0
    out = capsys.readouterr().out  # the preset's warm-up is 30 steps
    assert out.count("warning: train.warmup_iters=30 is not shorter than the schedule") == 1


def _tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64))


def test_muon_gets_the_block_matrices_and_adamw_everything_else():
    model = _tiny_model()
    opt = build_optimizer(model, _cfg(optimizer="muon", muon_lr=0.05), "cpu", log=lambda *_: None)
    assert isinstance(opt, MuonWithAdamW)
    muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.adamw.param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert not muon & adamw and muon | adamw == set(names)  # each parameter exactly once
    assert all(".h." in f".{names[i]}" for i in muon)
    assert {names[i] for i in adamw} >= {"transformer.wte.weight", "transformer.wpe.weight"}
    assert [g["peak_lr"] for g in opt.param_groups] == [0.05, 1e-3, 1e-3]


def test_adamw_beside_muon_updates_on_one_thread_on_a_cpu(monkeypatch):
    """Multi-threaded, that update rounded differently from run to run when other work competed
    for the cores; on one thread it gives the same bits every time."""
    model = _tiny_model()
    opt = build_optimizer(model, _cfg(optimizer="muon"), "cpu", log=lambda *_: None)
    model(torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16)))[1].backward()
    threads_seen: list[int] = []
    real = opt.adamw.step
    monkeypatch.setattr(
        opt.adamw, "step", lambda: (threads_seen.append(torch.get_num_threads()), real())
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        opt.step()
        assert threads_seen == [1] and torch.get_num_threads() == 2  # and given back after
    finally:
        torch.set_num_threads(before)


# The W&B guide's quick tip: the first console lines tell the Regular model from the SLM.
SEED_LINES = {
    "regular": ["num decayed parameter tensors: 98, with 333,758,464 parameters"],
    "slm": ["num decayed parameter tensors: 50, with 108,761,088 parameters"],
}
TRACKING_DOC = Path(__file__).parents[1] / "docs" / "tracking.md"


def _documented_first_lines(preset: str) -> list[str]:
    """The rows of docs/tracking.md's "Which model is training?" table, as console lines."""
    section = TRACKING_DOC.read_text().split("### Which model is training?")[1].split("\n\n`")[0]
    column = {"regular": 2, "slm": 3}[preset]
    rows = [r.split("|") for r in section.splitlines() if r.startswith("| `")]
    return [f"{r[1].strip().strip('`')} {r[column].strip()}" for r in rows]


@pytest.mark.parametrize("preset", ["regular", "slm"])
def test_the_first_console_lines_tell_the_presets_apart_as_documented(preset):
    p = PRESETS[preset]
    with torch.device("meta"):  # the shapes without the memory
        model = GPT(p.model)
    lines = [f"Model parameters: {model.num_params():,}"]
    build_optimizer(model, p.train, "cpu", log=lines.append)
    assert set(SEED_LINES[preset]) <= set(lines)
    for documented in _documented_first_lines(preset):
        if documented.startswith("wandb: Syncing run"):
            assert f"`{p.run_prefix}-…`" in documented
        else:
            assert documented in lines


def _batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (4, 16), generator=g)
    return x, torch.roll(x, -1, dims=1)


def _steps(model, opt, n):
    for _ in range(n):
        model(*_batch())[1].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_the_combined_state_survives_weights_only_loading_and_continues_exactly():
    cfg = _cfg(optimizer="muon")
    model = _tiny_model()
    opt = build_optimizer(model, cfg, "cpu", log=lambda *_: None)
    _steps(model, opt, 3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    twin = _tiny_model()
    twin.load_state_dict(model.state_dict())
    twin_opt = build_optimizer(twin, cfg, "cpu", log=lambda *_: None)
    twin_opt.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    _steps(model, opt, 2)
    _steps(twin, twin_opt, 2)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)  # Muon's momentum and AdamW's moments both came back


def test_peak_rates_come_from_the_config_not_the_checkpoint():
    model = _tiny_model()
    opt = build_optimizer(model, _cfg(optimizer="muon"), "cpu", log=lambda *_: None)
    saved = opt.state_dict()
    again = build_optimizer(model, _cfg(optimizer="muon", lr=5e-4, muon_lr=0.01), "cpu", print)
    again.load_state_dict(saved)
    assert [g["peak_lr"] for g in again.param_groups] == [0.01, 5e-4, 5e-4]
    with pytest.raises(UserError, match="AdamW state only"):
        again.load_state_dict(build_optimizer(model, _cfg(), "cpu", print).state_dict())


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_settings_given_on_resume_win_over_the_checkpoints(optimizer):
    # config.json and the tracker record what resume was given: the optimizer must use it too
    model = _tiny_model()
    saved = build_optimizer(model, _cfg(optimizer=optimizer), "cpu", print).state_dict()
    changed = _cfg(
        optimizer=optimizer, weight_decay=0.3, beta1=0.8, beta2=0.99,
        muon_momentum=0.9, muon_weight_decay=0.05,
    )  # fmt: skip
    again = build_optimizer(model, changed, "cpu", print)
    again.load_state_dict(saved)
    groups = again.param_groups
    if optimizer == "muon":
        muon, *groups = groups
        assert (muon["momentum"], muon["weight_decay"]) == (0.9, 0.05)
    assert [(g["weight_decay"], tuple(g["betas"])) for g in groups] == [
        (0.3, (0.8, 0.99)),
        (0.0, (0.8, 0.99)),  # LayerNorm gains never decay
    ]


def test_muon_needs_no_torch_muon(monkeypatch):
    monkeypatch.delattr(torch.optim, "Muon", raising=False)
    opt = build_optimizer(_tiny_model(), _cfg(optimizer="muon"), "cpu", log=lambda *_: None)
    assert isinstance(opt.muon, Muon)


# square, wide and tall matrices, three of each shape: stacked by shape, iterated on the wide side
SHAPES = [(16, 16), (16, 48), (48, 16)] * 3


def _matrices(seed: int = 0) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    return [torch.nn.Parameter(0.02 * torch.randn(s)) for s in SHAPES]


def _grads(step: int, bad: bool = False) -> list[torch.Tensor]:
    torch.manual_seed(100 + step)
    grads = [torch.randn(s) for s in SHAPES]
    if bad:
        grads[4][0, 0] = float("nan")
    return grads


def _apply(opt, params, grads_of_steps, skip_flags=None) -> None:
    for i, grads in enumerate(grads_of_steps):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        if skip_flags is None:
            opt.step()
        else:
            opt.step(found_inf=torch.tensor(float(skip_flags[i])))


@has_torch_muon
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_by_shape_is_torchs_muon_bitwise(nesterov):
    ours, theirs = _matrices(), _matrices()
    kw = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=nesterov)
    a, b = Muon(ours, **kw, ns_dtype=torch.bfloat16), torch.optim.Muon(theirs, **kw)
    grads = [_grads(i) for i in range(4)]
    _apply(a, ours, grads)
    _apply(b, theirs, grads)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
        assert torch.equal(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"])
    # the same state: each loads the other's state dict and carries on identically
    a.load_state_dict(b.state_dict())
    _apply(a, ours, [_grads(9)])
    _apply(b, theirs, [_grads(9)])
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs, strict=True))


@has_torch_muon
def test_muon_at_the_tiny_presets_shapes_is_torchs_muon_to_bf16_rounding():
    # the batched bf16 products may round otherwise than torch's one-matrix ones at some shapes
    # and thread counts (docs/training.md): the weights stay within a few bf16 steps of the update
    torch.manual_seed(0)
    start = [0.02 * torch.randn(s) for s in [(768, 256), (256, 256), (1024, 256), (256, 1024)] * 2]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    a, b = Muon(ours, lr=0.02, ns_dtype=torch.bfloat16), torch.optim.Muon(theirs, lr=0.02)
    for step in range(2):  # each step is slow: bf16 products on a CPU
        torch.manual_seed(step)
        grads = [1e-3 * torch.randn_like(t) for t in start]
        _apply(a, ours, [grads])
        _apply(b, theirs, [grads])
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=4e-4)


def test_muon_iterates_in_float32_on_the_cpu_and_in_bf16_on_cuda():
    # bf16 products have no fast kernel on a CPU without bf16 matrix units (45x float32's time)
    default, fp32, bf16 = _matrices(), _matrices(), _matrices()
    opts = [Muon(default, lr=0.02), Muon(fp32, lr=0.02, ns_dtype=torch.float32)]
    opts.append(Muon(bf16, lr=0.02, ns_dtype=torch.bfloat16))
    for opt, params in zip(opts, [default, fp32, bf16], strict=True):
        _apply(opt, params, [_grads(i) for i in range(2)])
    assert all(torch.equal(p, q) for p, q in zip(default, fp32, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(default, bf16, strict=True))
    assert opts[0].iteration_dtype(torch.device("cuda")) == torch.bfloat16
    assert opts[1].iteration_dtype(torch.device("cuda")) == torch.float32  # as asked


def test_float32_newton_schulz_brings_every_singular_value_near_1():
    torch.manual_seed(0)
    g = torch.randn(3, 64, 256) * torch.logspace(-3, 1, 256)  # singular values over 4 decades
    for matrices in (g, g.mT):  # wide and tall
        s = torch.linalg.svdvals(orthogonalize(matrices, dtype=torch.float32))
        assert s.min() > 0.6 and s.max() < 1.25  # the quintic's band, not exactly 1


def test_a_flagged_muon_step_changes_nothing_and_is_as_if_never_taken():
    flagged, clean = _matrices(), _matrices()
    a, b = Muon(flagged, lr=0.02), Muon(clean, lr=0.02)
    _apply(a, flagged, [_grads(0), _grads(1, bad=True), _grads(2)], skip_flags=[0, 1, 0])
    _apply(b, clean, [_grads(0), _grads(2)])
    for p, q in zip(flagged, clean, strict=True):
        assert torch.equal(p, q)
        assert torch.equal(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"])
    # and an unflagged step (flag 0) is the plain step
    _apply(a, flagged, [_grads(3)], skip_flags=[0])
    _apply(b, clean, [_grads(3)])
    assert all(torch.equal(p, q) for p, q in zip(flagged, clean, strict=True))


def test_muon_restacks_its_momentum_after_a_checkpoint_is_loaded(tmp_path):
    params = _matrices()
    opt = Muon(params, lr=0.02)
    _apply(opt, params, [_grads(0), _grads(1)])
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    saved = [p.detach().clone() for p in params]
    _apply(opt, params, [_grads(2)])
    after = [p.detach().clone() for p in params]
    restarted = [torch.nn.Parameter(t.clone()) for t in saved]
    again = Muon(restarted, lr=0.02)
    again.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    _apply(again, restarted, [_grads(2)])
    assert all(torch.equal(p, q) for p, q in zip(restarted, after, strict=True))


def test_muon_refuses_what_it_cannot_update():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        Muon(_matrices(), adjust_lr_fn="bogus")


def _losses(run_dir) -> dict[int, float]:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_a_muon_run_resumed_mid_way_logs_exactly_the_same_losses(tiny_data, tmp_path):
    settings = ["train.optimizer=muon", "train.schedule=wsd", "train.grad_accum=2"]
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=whole", *settings)
    train(cfg, log=lambda *_: None)
    whole = tmp_path / "whole"
    # the same run stopped at step 6: its folder as it was then, resumed to the end
    stopped = tmp_path / "stopped"
    shutil.copytree(whole, stopped)
    shutil.rmtree(stopped / "checkpoints" / "step-000012")
    (stopped / "checkpoints" / "latest").write_text("step-000006")
    again = tiny_config(tiny_data, tmp_path, "tracking.run_name=stopped", *settings)
    summary = train(again, resume=str(stopped), log=lambda *_: None)
    assert summary["iterations"] == 12
    assert _losses(stopped) == _losses(whole)  # bitwise: floats compared exactly
    # each group followed the schedule from its own peak, up to the last step (index 11)
    saved = checkpoint.load_tensors(stopped / "checkpoints" / "step-000012" / "optimizer.pt")
    scale = lr_scale(11, cfg.train)
    assert saved["muon"]["param_groups"][0]["lr"] == pytest.approx(cfg.train.muon_lr * scale)
    assert saved["adamw"]["param_groups"][0]["lr"] == pytest.approx(cfg.train.lr * scale)


def test_resuming_with_another_optimizer_is_refused(tiny_data, tmp_path):
    cfg = tiny_config(
        tiny_data, tmp_path, "tracking.run_name=a", "train.max_iters=6", "train.optimizer=adamw"
    )
    train(cfg, log=lambda *_: None)
    other = build_config(base=cfg, overrides=["train.optimizer=muon", "train.max_iters=12"])
    with pytest.raises(UserError, match="train.optimizer=adamw"):
        train(other, resume=str(tmp_path / "a"), log=lambda *_: None)


def test_a_muon_checkpoint_resumed_with_fsdp_is_pointed_to_ddp_not_to_adamw(tiny_data, tmp_path):
    """train.fsdp=true with Muon says to use AdamW, and AdamW on a Muon checkpoint says to use
    Muon: for a Muon checkpoint the one way on is DDP, and that is what is said."""
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=a", "train.max_iters=6")
    assert cfg.train.optimizer == "muon"
    train(cfg, log=lambda *_: None)
    other = build_config(
        base=cfg, overrides=["train.fsdp=true", "train.optimizer=adamw", "train.max_iters=12"]
    )
    with pytest.raises(UserError, match=r"resume it with DDP \(train.fsdp=false\)") as err:
        train(other, resume=str(tmp_path / "a"), log=lambda *_: None)
    assert "train.optimizer=adamw" not in str(err.value)


def test_the_model_card_and_the_report_name_the_recipe():
    from hellolondon.export.card import _optimizer_text, _schedule_text
    from hellolondon.report.rundata import recipe

    c = TrainConfig(optimizer="muon", schedule="wsd", lr=2e-3, min_lr=2e-4, muon_lr=0.04)
    assert _optimizer_text(c).startswith("Muon for the blocks' matrices (momentum 0.95")
    assert _schedule_text(c) == (
        "0.002 peak (Muon 0.04), 30 warm-up steps, stable, then a linear cool-down over the "
        "last 20% to 0.0002 (Muon 0.004)"
    )
    assert _schedule_text(TrainConfig()).endswith("cosine decay to 0.0001")
    assert recipe({"optimizer": "muon", "schedule": "wsd"}) == "muon + wsd"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_muon_learns_with_autocast_accumulation_and_clipping(tiny_data, tmp_path, dtype):
    cfg = tiny_config(
        tiny_data,
        tmp_path,
        "tracking.run_name=m",
        "train.optimizer=muon",
        f"train.dtype={dtype}",
        "train.grad_accum=2",
        "train.grad_clip=0.5",
        "train.max_iters=24",
        "train.eval_interval=12",
        "train.lr=3e-3",
    )
    summary = train(cfg, log=lambda *_: None)
    assert summary["best_val_loss"] < summary["first_val_loss"] - 0.5


def test_the_fp16_grad_scaler_sees_muons_gradients_and_skips_an_overflowing_step():
    model = _tiny_model()
    opt = build_optimizer(model, _cfg(optimizer="muon"), "cpu", log=lambda *_: None)
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(model(*_batch())[1]).backward()
    opt.muon.param_groups[0]["params"][0].grad[0, 0] = math.inf  # an fp16 overflow in a block
    scaler.unscale_(opt)  # as train_step does before clipping
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**9  # the overflow was found ...
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)  # ... and neither optimizer stepped


def test_resuming_a_wsd_run_with_more_steps_moves_its_cooldown(tiny_data, tmp_path):
    wsd = ["tracking.run_name=w", "train.schedule=wsd", "train.keep_last=3"]
    train(tiny_config(tiny_data, tmp_path, *wsd), log=lambda *_: None)
    lrs = {r["step"]: r["train/lr"] for r in read_jsonl(tmp_path / "w" / "metrics.jsonl")
           if "train/lr" in r}  # fmt: skip
    assert lrs[12] < lrs[9] == 1e-3  # the 12-step run cooled down at its end
    from hellolondon.train.run import config_for_resume

    longer = config_for_resume(str(tmp_path / "w" / "checkpoints" / "step-000006"), None,
                               ["train.max_iters=24"])  # fmt: skip
    train(longer, resume=str(tmp_path / "w" / "checkpoints" / "step-000006"), log=lambda *_: None)
    lrs = {r["step"]: r["train/lr"] for r in read_jsonl(tmp_path / "w" / "metrics.jsonl")
           if "train/lr" in r}  # fmt: skip
    assert sorted(lrs) == list(range(1, 25))
    assert all(lrs[s] == 1e-3 for s in range(3, 21))  # stable on, past the old cool-down
    assert lrs[24] < lrs[21] < 1e-3  # the cool-down: the last 20% of the 24 steps
