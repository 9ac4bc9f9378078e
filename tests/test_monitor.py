"""The health monitor on synthetic metric streams: each rule fires on its pattern, healthy runs
raise no alarm, findings reach the console, the tracker and events.jsonl; and a real training
run with an injected NaN follows the configured policy."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
import torch
from tinyrun import tiny_config

from hellolondon.config import MonitorConfig
from hellolondon.rundir import read_jsonl
from hellolondon.tracking.base import FanoutTracker, JsonlTracker
from hellolondon.tracking.monitor import HealthMonitor


def _lr(step: int, max_iters: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    p = min(1.0, (step - warmup) / max(1, max_iters - warmup))
    return peak / 10 + 0.5 * (1 + math.cos(math.pi * p)) * (peak - peak / 10)


def healthy_stream(seed: int, rows: int, noise: float, gpu: bool, log_every: int = 10):
    """A healthy run as the W&B guide describes one: loss as a power law of the learning done so
    far (the cumulative LR of a warm-up + cosine schedule), noisy with a mildly heavy tail; a run
    of 20,000 steps or more ends within 10% of the guide's late range (2-4); eval rows every 5
    rows with a small steady generalisation gap; step time with a compile spike first; on a GPU,
    MFU ramping up and steady memory."""
    rng = random.Random(seed)
    max_iters = rows * log_every
    warmup = int(rng.choice([0, 0.01, 0.03, 0.1]) * max_iters)
    total = sum(_lr(s, max_iters, warmup, 1.0) for s in range(max_iters))
    while True:
        floor, start, alpha = rng.uniform(1.5, 3.5), rng.uniform(9.5, 11.0), rng.uniform(0.3, 0.7)
        tau, gap = rng.uniform(50, 300), rng.uniform(0.0, 0.1)
        end = floor + (start - floor) * (1 + total / tau) ** -alpha
        if max_iters < 20000 or end <= 4.4:
            break
    dt0, mfu0, mem0 = rng.uniform(50, 1000), rng.uniform(10, 60), rng.uniform(2, 55)
    done = 0.0  # learning so far, in steps at peak LR
    out = [({"eval/train_loss": start, "eval/val_loss": start * 1.01, "eval/iter": 0}, 0)]
    for r in range(1, rows + 1):
        step = r * log_every
        done += sum(_lr(s, max_iters, warmup, 1.0) for s in range(step - log_every, step))
        base = floor + (start - floor) * (1 + done / tau) ** -alpha
        tail = 2.0 if rng.random() < 0.01 else 1.0
        row = {
            "train/loss": base * (1 + noise * tail * rng.gauss(0, 1)),
            "train/lr": _lr(step, max_iters, warmup, 6e-4),
            "train/iter": step,
            "train/dt_ms": dt0
            * (rng.uniform(5, 30) if r == 1 else 1 + 0.05 * abs(rng.gauss(0, 1))),
        }
        if gpu:
            row["train/mfu"] = mfu0 * min(1.0, r / 3) * (1 - 0.03 * abs(rng.gauss(0, 1)))
            row["gpu/mem_allocated_gb"] = mem0 + rng.uniform(-0.01, 0.01)
            row["gpu/max_mem_allocated_gb"] = mem0 * 1.3 + 1
            row["gpu/mem_total_gb"] = 80.0
        out.append((row, step))
        if r % 5 == 0:
            val_gap = 1 + gap * min(1.0, 10 * r / rows)
            out.append(
                (
                    {
                        "eval/train_loss": base * (1 + 0.005 * rng.gauss(0, 1)),
                        "eval/val_loss": base * val_gap * (1 + 0.005 * rng.gauss(0, 1)),
                        "eval/iter": step,
                    },
                    step,
                )
            )
    return out, max_iters


def _run(stream, max_iters=0, cfg=None, tracker=None):
    lines: list[str] = []
    m = HealthMonitor(cfg or MonitorConfig(), tracker, max_iters=max_iters, console=lines.append)
    for row, step in stream:
        m.observe(row, step)
    return m, lines


def _rules(m, levels=("WARN", "ERROR")):
    return [f.rule for f in m.findings if f.level in levels]


HEALTHY_RUNS = int(os.environ.get("HELLOLONDON_HEALTHY_RUNS", "60"))  # more for a longer sweep


def test_no_false_alarm_over_healthy_runs():
    lengths = [30, 60, 200, 600, 2000]  # 2,000 rows = 20,000 iterations: phase ranges checked
    noises = [0.005, 0.01, 0.02, 0.03, 0.05]
    alarms, infos, flattening = [], 0, 0
    for seed in range(HEALTHY_RUNS):
        rows, noise = lengths[seed % len(lengths)], noises[(seed // 5) % len(noises)]
        stream, max_iters = healthy_stream(seed, rows, noise, gpu=seed % 2 == 0)
        m, _ = _run(stream, max_iters)
        alarms += [(seed, rows, noise, f.line()) for f in m.findings if f.level != "INFO"]
        infos += sum(f.rule == "phase" for f in m.findings)
        flattening += sum(f.rule == "plateau" for f in m.findings)  # INFO, late in a run
    print(
        f"{HEALTHY_RUNS} healthy runs: {len(alarms)} false alarms, {flattening} late plateau notes"
    )
    assert alarms == []
    assert infos >= 2 * HEALTHY_RUNS  # each run announces its phases (a 300-step run starts mid)


def _train(losses, **extra):
    return [
        ({"train/loss": x, "train/lr": 6e-4, "train/iter": 10 * i, **extra}, 10 * i)
        for i, x in enumerate(losses, start=1)
    ]


def _decay(n, start=8.0, end=3.0, noise=0.02, seed=0):
    rng = random.Random(seed)
    return [
        (end + (start - end) * math.exp(-i / (n / 5))) * (1 + noise * rng.gauss(0, 1))
        for i in range(n)
    ]


def test_plateau_fires_once_and_is_a_warning_before_the_late_phase():
    rng = random.Random(1)
    losses = _decay(40, end=5.0) + [5.0 * (1 + 0.02 * rng.gauss(0, 1)) for _ in range(200)]
    m, _ = _run(_train(losses))
    assert _rules(m) == ["plateau"]
    late, _ = _run(_train(losses), max_iters=10 * len(losses) // 3)  # all of it late
    assert [f.level for f in late.findings if f.rule == "plateau"] == ["INFO"]


def test_a_late_plateau_at_the_starting_loss_is_a_warning_not_the_expected_flattening():
    # a run that never learned (an LR of ~0, say) is flat from its first row: in a short run
    # the plateau is first called in the late phase, and must not pass for the guide's 2-4
    rng = random.Random(2)
    stuck = [9.01 * (1 + 0.002 * rng.gauss(0, 1)) for _ in range(80)]
    m, _ = _run(_train(stuck), max_iters=800)
    plateaus = [f for f in m.findings if f.rule == "plateau"]
    assert [f.level for f in plateaus] == ["WARN"]
    assert "not learning" in plateaus[0].text and m._phase == "late"


def test_rising_loss_warns_and_diverging_loss_is_an_error():
    rising = _decay(100) + [3.0 + 0.02 * i for i in range(60)]
    m, _ = _run(_train(rising))
    assert "rising" in _rules(m) and "diverging" not in _rules(m)
    blowup = _decay(100) + [3.0 * 3 for _ in range(10)]
    m, _ = _run(_train(blowup))
    assert m.findings[-1].rule == "diverging" and m.findings[-1].level == "ERROR"
    assert _rules(m).count("diverging") == 1  # de-duplicated while it persists


def test_a_run_that_blows_up_in_its_first_rows_is_diverging_against_its_first_loss():
    losses = [7.64, 49.6, 161.0, 194.0, 212.0] + [215.0 + i for i in range(40)]
    m, _ = _run(_train(losses))
    diverging = [f for f in m.findings if f.rule == "diverging"]
    assert [(f.step, f.level) for f in diverging] == [(50, "ERROR")]  # the first full median
    assert "its best 7.640" in diverging[0].text
    assert "plateau" not in _rules(m)  # flat at 28x the start is the divergence, not a plateau


def test_a_run_that_blows_up_before_its_first_row_is_diverging_against_the_untrained_eval():
    """The first train row comes `log_interval` steps in: by then the loss may already be far
    above the untrained model's, which the evaluation at iteration 0 measured."""
    untrained = ({"eval/val_loss": 8.32, "eval/train_loss": 8.30, "eval/iter": 0}, 0)
    m, _ = _run([untrained, *_train([111.6, 71.6, 36.2, 42.0, 44.3, 14.9])])
    diverging = [f for f in m.findings if f.rule == "diverging"]
    assert [(f.step, f.level) for f in diverging] == [(50, "ERROR")]
    assert "its best 8.300" in diverging[0].text
    m, _ = _run(_train([111.6, 71.6, 36.2, 42.0, 44.3, 14.9]))  # without it: nothing to go by
    assert "diverging" not in _rules(m)


def test_a_spike_fires_and_re_arms_after_the_loss_recovers():
    losses = _decay(100, noise=0.01)
    losses[60] *= 1.6
    losses[90] *= 1.6
    m, _ = _run(_train(losses))
    assert [(f.rule, f.step) for f in m.findings] == [("spike", 610), ("spike", 910)]


def test_mfu_drop_fires_once_against_the_running_level():
    rows = _train(_decay(120), **{"train/mfu": 40.0})
    for row, _ in rows[60:]:
        row["train/mfu"] = 15.0
    m, _ = _run(rows)
    assert _rules(m) == ["mfu"]
    assert m.findings[0].step >= 610 and "running level" in m.findings[0].text


def test_mfu_low_throughout_is_one_info_note_and_can_be_turned_off():
    rows = _train(_decay(120), **{"train/mfu": 12.0})
    for row, _ in rows[:3]:
        row["train/mfu"] = 1.0  # compilation rows: left out
    rows[40][0]["train/mfu"] = 25.0  # one row above the line re-arms nothing: still one note
    m, _ = _run(rows)
    notes = [f for f in m.findings if f.rule == "mfu_low"]
    assert [(f.level, f.step) for f in notes] == [("INFO", 80)]  # rows 4-8 settle the median
    assert "under 20%" in notes[0].text and "batch_size" in notes[0].text
    assert _rules(m) == []  # a steady low MFU is not a drop
    assert not [
        f for f in _run(rows, cfg=MonitorConfig(mfu_low=0))[0].findings if f.rule == "mfu_low"
    ]
    fine = _train(_decay(120), **{"train/mfu": 21.0})
    assert not [f for f in _run(fine)[0].findings if f.rule == "mfu_low"]


def test_step_time_rising_ignores_the_compile_step():
    rows = _train(_decay(120), **{"train/dt_ms": 100.0})
    rows[0][0]["train/dt_ms"] = 15000.0  # the W&B guide's 15 s first step
    assert _rules(_run(rows)[0]) == []
    for i, (row, _) in enumerate(rows[40:]):
        row["train/dt_ms"] = 100.0 + 3.0 * i  # a slow leak
    m, _ = _run(rows)
    assert _rules(m) == ["step_time"]


def test_gpu_memory_growing_and_near_the_limit():
    rows = _train(_decay(60), **{"gpu/mem_allocated_gb": 10.0, "gpu/mem_total_gb": 80.0})
    for i, (row, _) in enumerate(rows[20:]):
        row["gpu/mem_allocated_gb"] = 10.0 + 0.05 * i
    assert _rules(_run(rows)[0]) == ["memory_growth"]
    rows = _train(_decay(30), **{"gpu/max_mem_allocated_gb": 78.5, "gpu/mem_total_gb": 80.0})
    assert _rules(_run(rows)[0]) == ["memory_limit"]


def _evals(vals, trains):
    return [
        ({"eval/val_loss": v, "eval/train_loss": t, "eval/iter": 100 * i}, 100 * i)
        for i, (v, t) in enumerate(zip(vals, trains, strict=True))
    ]


def test_overfitting_needs_val_up_while_train_down():
    trains = [6.0, 5.0, 4.5, 4.0, 3.6, 3.2, 2.9, 2.6]
    overfit = [6.1, 5.2, 4.8, 4.9, 5.0, 5.1, 5.2, 5.3]
    m, _ = _run(_evals(overfit, trains))
    assert _rules(m) == ["overfit"] and m.findings[0].step == 600  # 4.9 is within 3%
    assert "best 4.800 (iter 200)" in m.findings[0].text
    both_up = [4.0 + 0.1 * i for i in range(8)]  # val and train rise together: rising, not this
    assert _rules(_run(_evals(both_up, both_up))[0]) == []


def test_phase_lines_say_what_this_run_will_do():
    """No MFU where none is measured, and WSD's late phase at its peak until the cool-down."""
    from hellolondon.tracking.monitor import expectation

    rows = [({"train/loss": 9.0, "train/lr": 1e-3, "train/iter": s}, s) for s in (10, 150)]
    m = HealthMonitor(MonitorConfig(), None, max_iters=300, console=None, schedule="wsd")
    for row, step in rows:
        m.observe(row, step)
    early, late = (f.text for f in m.findings if f.rule == "phase")
    assert "MFU" not in early and "MFU" not in late  # a CPU run: no train/mfu in its rows
    assert "LR at its peak until the cool-down of the last steps" in late
    assert "LR decays" in expectation("late", "cosine", mfu=True)
    assert "MFU stays high" in expectation("late", "cosine", mfu=True)


def test_phase_lines_scale_to_the_run_and_ranges_only_for_long_runs():
    stuck = _train([9.0] * 30)  # steps 10..300 of a 300-step run: early is steps 0-10
    m, _ = _run(stuck, max_iters=300)
    phases = [(f.title, f.step, f.level) for f in m.findings if f.rule == "phase"]
    # the first row is always early training, whichever step it logs
    assert phases == [("early training", 10, "INFO"), ("mid training", 20, "INFO"),
                      ("late training", 100, "INFO")]  # fmt: skip
    assert "steps 10-100 of 300 (the W&B guide's 2000-20000 of 60000)" in m.findings[1].text
    # while the LR still rises the run is in early training: mid has the LR at its peak
    warm = [({"train/loss": 9.0, "train/lr": 1e-4 * min(s, 10), "train/iter": s}, s)
            for s in range(2, 41, 2)]  # fmt: skip
    m, _ = _run(warm, max_iters=40)  # scaled: early 0-1, mid 1-13, late from 13
    phases = [(f.title, f.step) for f in m.findings if f.rule == "phase"]
    assert phases == [("early training", 2), ("mid training", 12), ("late training", 14)]
    assert "phase_range" not in _rules(m)  # a short run: the W&B guide's ranges do not apply
    long_stuck = [({"train/loss": 9.0, "train/lr": 6e-4}, s) for s in range(50, 3001, 50)]
    m, _ = _run(long_stuck, max_iters=60000)
    assert [f.title for f in m.findings if f.rule == "phase_range"] == [
        "loss high for early training"
    ]
    fine = [({"train/loss": 6.5, "train/lr": 6e-4}, s) for s in range(50, 3001, 50)]
    assert "phase_range" not in _rules(_run(fine, max_iters=60000)[0])


def test_nonfinite_policies_and_no_flood():
    m = HealthMonitor(MonitorConfig(), None, max_iters=100, console=None)
    fired = [bool(m.nonfinite(step, "skip")) for step in range(1, 10)]
    assert fired == [True, True, False, True, False, False, False, True, False]  # 1, 2, 4, 8
    assert "8 skipped so far" in m.findings[-1].text
    stop = m.nonfinite(50, "stop")
    assert stop[0].level == "ERROR" and "checkpoint of the weights before it" in stop[0].text


def test_a_stopped_step_is_not_counted_as_skipped_after_the_resume():
    m = HealthMonitor(MonitorConfig(), None, max_iters=100, console=None)
    m.nonfinite(4, "stop")  # the stop's checkpoint holds the monitor's state
    resumed = HealthMonitor(MonitorConfig(), None, max_iters=100, console=None)
    resumed.load_state_dict(m.state_dict())
    assert "(1 skipped so far)" in resumed.nonfinite(4, "skip")[0].text
    assert "(2 skipped so far)" in resumed.nonfinite(5, "skip")[0].text


def test_findings_reach_console_tracker_and_events_jsonl(tmp_path):
    jsonl = JsonlTracker(tmp_path)
    lines: list[str] = []
    m = HealthMonitor(MonitorConfig(), FanoutTracker(jsonl), max_iters=0, console=lines.append)
    for row, step in _train(_decay(100) + [9.0] * 10):
        m.observe(row, step)
    m.nonfinite(1200, "skip")
    jsonl.finish()
    events = read_jsonl(tmp_path / "events.jsonl")
    assert [(e["level"], e["rule"], e["step"], e["title"]) for e in events] == [
        ("WARN", "spike", 1010, "loss spike"),
        ("ERROR", "diverging", 1030, "loss diverging"),
        ("ERROR", "nonfinite", 1200, "non-finite loss"),
    ]
    assert lines[1].startswith("health: [ERROR] loss diverging at iter 1030: smoothed loss 9.000")
    assert lines[2].startswith("health: [ERROR] non-finite loss at iter 1200: loss NaN/inf;")
    assert [e["text"] for e in events] == [f.text for f in m.findings]


def test_a_monitor_restored_from_its_state_judges_like_one_that_never_stopped():
    import json

    rows = _train(_decay(100) + [9.0] * 10)
    whole = HealthMonitor(MonitorConfig(), None, max_iters=2000, console=None)
    first = HealthMonitor(MonitorConfig(), None, max_iters=2000, console=None)
    for row, step in rows:
        whole.observe(row, step)
    for row, step in rows[:95]:
        first.observe(row, step)
    saved = json.loads(json.dumps(first.state_dict()))  # as a checkpoint's state.json keeps it
    again = HealthMonitor(MonitorConfig(), None, max_iters=2000, console=None)
    again.load_state_dict(saved)
    later = [f for row, step in rows[95:] for f in again.observe(row, step)]
    assert [(f.rule, f.step) for f in later] == [
        (f.rule, f.step) for f in whole.findings if f.step > rows[94][1]
    ]
    assert later  # the spike and the divergence after the restart are still seen


def test_odd_rows_do_not_break_the_rules():
    m = HealthMonitor(MonitorConfig(), None, max_iters=1000, console=None)
    odd = [
        {"train/loss": "nan"},
        {"train/loss": None, "train/mfu": "x"},
        {"train/loss": math.inf},
        {"eval/val_loss": "nan"},
        {"gpu/mem_total_gb": 0, "train/loss": 5.0},
        {},
    ]
    for i, row in enumerate(odd * 20):
        m.observe(row, i)
    assert _rules(m) == []
    off = HealthMonitor(MonitorConfig(enabled=False), None, console=None)
    assert all(off.observe(row, s) == [] for row, s in _train([9.0] * 5 + [90.0] * 20))


# -- the real loop ----------------------------------------------------------------------------


@pytest.fixture
def random_tokens(tmp_path):
    """Token files of random ids: enough for a model to train on, with no tokenizer needed."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 20000), ("val", 4000)):
        rng.integers(0, 64, n, dtype=np.uint16).tofile(data / f"{split}.bin")
    meta = {"vocab_size": 64, "train_tokens": 20000, "val_tokens": 4000}
    (data / "meta.json").write_text(json.dumps(meta))
    return data


def _nan_run(tmp_path, data, policy, monkeypatch, bad_call=4, poison="loss"):
    """Train 8 steps of a tiny model; the forward of the `bad_call`-th step returns a NaN loss
    (`poison="loss"`), or a finite loss whose gradients are inf (`"grad"`). Returns the run
    folder and the parameters seen at each forward."""
    from hellolondon.model import GPT
    from hellolondon.train.loop import train

    seen: list[dict[str, torch.Tensor]] = []
    forward = GPT.forward

    def poisoned(self, idx, targets=None, cache=None):
        seen.append({k: v.detach().clone() for k, v in self.state_dict().items()})
        logits, loss = forward(self, idx, targets, cache)
        if len(seen) == bad_call and loss is not None:
            if poison == "loss":
                loss = loss * float("nan")
            else:  # the same value, an infinite slope
                loss = loss + (loss * float("inf")).clamp(max=0.0) * 0.0
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    cfg = tiny_config(
        data,
        tmp_path,
        "train.max_iters=8",
        "train.eval_interval=0",
        "train.ckpt_interval=0",
        "train.device=cpu",
        "train.compile=false",
        f"train.nonfinite={policy}",
        "monitor.enabled=true",
        "tracking.run_name=nan-test",
    )
    train(cfg, log=lambda _: None)
    return tmp_path / "nan-test", seen


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_a_finite_loss_with_a_non_finite_gradient_norm_is_named_as_such(
    tmp_path, random_tokens, monkeypatch
):
    run_dir, seen = _nan_run(tmp_path, random_tokens, "skip", monkeypatch, poison="grad")
    events = [e for e in read_jsonl(run_dir / "events.jsonl") if e.get("rule") == "nonfinite"]
    assert [e["step"] for e in events] == [4]
    assert events[0]["text"].startswith("gradient norm nan (loss ")  # the loss was finite
    assert _same(seen[3], seen[4])  # not applied


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_injected_nan_follows_the_configured_policy(tmp_path, random_tokens, monkeypatch, policy):
    from hellolondon.train import checkpoint

    run_dir, seen = _nan_run(tmp_path, random_tokens, policy, monkeypatch)
    events = [e for e in read_jsonl(run_dir / "events.jsonl") if e.get("rule") == "nonfinite"]
    # the 4th step: train/iter 4, as its row would have said; the loss was not finite
    assert [(e["level"], e["step"]) for e in events] == [("ERROR", 4)]
    assert events[0]["text"].startswith("loss nan;")
    if policy == "skip":
        assert len(seen) == 8  # training went on to max_iters
        assert _same(seen[3], seen[4])  # the bad step changed no weight
        assert not _same(seen[4], seen[5])  # the next good step trained again
    else:
        assert len(seen) == 4  # stopped at the bad step
        ckpt = checkpoint.step_dirs(run_dir / "checkpoints")[0]
        assert ckpt.name == "step-000003"
        weights = checkpoint.load_weights(ckpt)
        assert _same(seen[3], {k: weights[k] for k in seen[3]})  # saved before the bad step
