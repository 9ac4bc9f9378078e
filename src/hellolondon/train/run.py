"""Everything a training run needs before its first step: process group, resolved config, run
folder, data, model, optimizer, restored checkpoint, tracker and health monitor."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hellolondon import hardware, provenance
from hellolondon.config import RunConfig
from hellolondon.errors import UserError
from hellolondon.model import GPT
from hellolondon.prepare import check_token_ids, check_tokenizer_matches, load_meta
from hellolondon.rundir import RunDir
from hellolondon.tracking.secrets import scrub
from hellolondon.tracking.setup import open_tracker
from hellolondon.train import checkpoint, fsdp, speed
from hellolondon.train.checkpoint import RunParts
from hellolondon.train.data import Batches
from hellolondon.train.distributed import Dist, batch_line, broadcast_object, init_distributed
from hellolondon.train.optim import build_optimizer
from hellolondon.train.resolve import resolve_config
from hellolondon.train.signals import ABORTED_BY
from hellolondon.train.state import TrainState
from hellolondon.units import fmt_duration


@dataclass
class Run:
    cfg: RunConfig  # resolved: the settings as used
    dist: Dist
    rundir: RunDir
    model: GPT  # the plain module: state_dict, generation
    step_model: nn.Module  # what the loop calls: compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]
    batches: Batches
    tracker: Any
    monitor: Any
    meta: dict[str, Any]
    peak_flops: float | None
    state: TrainState = field(default_factory=TrainState)
    eval_cache: dict[str, tuple] = field(default_factory=dict)  # the fixed held-out batches
    slow: bool = False  # steps take seconds (a GPU preset on a CPU): show more progress
    stop: Any = None  # the loop's StopSignal, so a long evaluation can give way to it
    cleared: list[str] = field(default_factory=list)  # summary keys of an abandoned line
    log: Callable[[str], None] = print

    @cached_property
    def flops_per_token(self) -> int:
        """Counted once: it walks every parameter."""
        return self.model.flops_per_token()

    @property
    def tokens_per_step(self) -> int:
        return self.samples_per_step * self.cfg.model.block_size

    @property
    def samples_per_step(self) -> int:
        c = self.cfg.train
        return c.batch_size * c.grad_accum * self.dist.world_size

    def parts(self) -> RunParts:
        stateful = {"trainer": self.state}
        if self.monitor is not None:
            stateful["monitor"] = self.monitor
        return RunParts(self.model, self.optimizer, self.scaler, stateful)

    def checkpoint_info(self) -> dict[str, Any]:
        return {
            "config": scrub(self.cfg.to_dict()),
            "tokenizer_fingerprint": self.meta.get("tokenizer_fingerprint"),
            "tracker_run_id": self.tracker.run_id if self.tracker is not None else None,
            "saved_at": time.time(),
        }


def precision(cfg: RunConfig, device: torch.device) -> torch.dtype:
    want = cfg.train.dtype
    if want == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if hardware.has_bf16_units(device) else torch.float16
    if want != "float32" and device.type == "cpu":
        return torch.bfloat16 if want == "bfloat16" else torch.float32
    return getattr(torch, want)


def setup_run(
    cfg: RunConfig,
    resume: str | None = None,
    log: Callable[[str], None] = print,
    global_batch: int | None = None,
    hashing: provenance.HashInBackground | None = None,
) -> Run:
    """Everything a run needs before its first step. `hashing`: the token files of
    `cfg.data.data_dir` hashed already by the command (`reproduce` compares them with the
    recorded run first), so that they are read once; else rank 0 hashes them here."""
    d = init_distributed(cfg.train.device, fsdp=cfg.train.fsdp)
    log = log if d.is_main else (lambda *_: None)
    # a run resumed in its own folder is taken before its checkpoint is read, so that two
    # resumes at once cannot both continue from it; given back if anything stops this start
    home = _resumed_run(resume) if d.is_main else None
    replaced = home.claim_to_resume() if home is not None else None
    try:
        return _setup(cfg, d, resume, log, global_batch, hashing)
    except BaseException:
        if home is not None:
            home.restore_record(replaced)
        raise


def _resumed_run(resume: str | None) -> RunDir | None:
    """The run folder a resume continues in (its config checked readable first), or None."""
    if resume is None:
        return None
    home = RunDir.of_checkpoint(checkpoint.resolve(resume))
    if home is not None:
        home.check_config_readable()
    return home


def _setup(
    cfg: RunConfig, d: Dist, resume: str | None, log: Callable[[str], None], global_batch, hashing
) -> Run:
    peak = peak_flops_for(d.device)  # a bad HELLOLONDON_PEAK_TFLOPS is refused before the folder
    meta, tokenizer, ckpt, state = _inputs(cfg, resume, log)
    # what the run trains on, hashed while the model is built: the record holds it, not meta.json's
    hashing = (hashing or provenance.HashInBackground(cfg.data.data_dir)) if d.is_main else None
    cfg = resolve_config(
        cfg, world=d.world_size, meta=meta, ckpt=ckpt, state=state, global_batch=global_batch,
        agree=partial(broadcast_object, d=d), log=log,
    )  # fmt: skip
    if d.is_main and _new_folder(cfg, ckpt):  # a name in use is said before the model is built
        RunDir(Path(cfg.out_dir) / cfg.tracking.run_name).check_new()
    if d.is_main:
        _check_run_tokenizer(cfg, meta, tokenizer, ckpt, log)
    batches = Batches(cfg.data.data_dir, cfg.model.block_size, cfg.train.seed, d.device)
    check_token_ids(cfg.data.data_dir, cfg.model.vocab_size)  # before the run folder
    dtype = precision(cfg, d.device)
    # before the run folder: a refusal leaves nothing behind
    check_fits_in_memory(cfg, d.device, dtype, d.world_size)
    # the speed options (fp8, attention kernel, micro-batches) are refused while building the
    # model: that too comes before the run folder
    model, step_model, optimizer, scaler = build_model(cfg, d, dtype, log)
    rundir = _run_folder(cfg, ckpt, d)
    run = Run(
        cfg=cfg, dist=d, rundir=rundir, model=model, step_model=step_model, optimizer=optimizer,
        scaler=scaler, autocast=autocast_for(d.device, dtype), batches=batches, tracker=None,
        monitor=_monitor(cfg, d, log), meta=meta, peak_flops=peak, log=log,
    )  # fmt: skip
    # from here on the run folder is there: a second Ctrl-C (W&B's start alone may take 15 s)
    # is recorded
    with _abort_recorded(run):
        if state is not None:
            _continue_from(run, ckpt, state)
        micro = speed.micro_batches(run.model, cfg.train)
        log(batch_line(d, cfg.train.batch_size, cfg.train.grad_accum, cfg.model.block_size, micro))
        if run.samples_per_step > batches.n_windows:  # said, not left to a falling loss to show
            log(
                f"warning: one step takes {run.samples_per_step:,} sequences, more than train.bin "
                f"holds ({batches.n_windows:,}): every step repeats the data; a smaller "
                "train.batch_size or a larger corpus"
            )
        if odd := cfg.train.schedule_warning():
            log(f"warning: {odd}")
        in_place = ckpt is not None and RunDir.of_checkpoint(ckpt) == run.rundir
        # the same W&B run only when the run goes on in its own folder (a loose checkpoint: a
        # new one)
        tokens = hashing.result() if hashing is not None else None
        if tokens is not None and (
            changed := provenance.changed_since_prepare(meta, tokens, cfg.data.data_dir)
        ):
            log(changed)
        resumed_id = state.get("tracker_run_id") if in_place else None
        _open_tracking(run, dtype, tokenizer, resumed_id, in_place, tokens)
        run.slow = announce_pace(run, cfg.train.max_iters - run.state.step, "steps to go")
        run.state.begin()
    return run


@contextlib.contextmanager
def _abort_recorded(run: Run) -> Iterator[None]:
    """A second Ctrl-C while the run gets going leaves its folder saying so, as one during
    training does (`failure_reported`), not looking killed. A run resumed in its own folder
    gets its earlier record back instead (`setup_run`): this start changed nothing."""
    try:
        yield
    except KeyboardInterrupt:
        if run.dist.is_main:
            run.rundir.mark_aborted(ABORTED_BY, run.state.step)
        raise


def _inputs(cfg: RunConfig, resume: str | None, log):
    """(token files' meta, their tokenizer, checkpoint, its state), checked to belong together."""
    meta = load_meta(Path(cfg.data.data_dir))
    ckpt, state = checkpoint.find_resumable(resume, log=log) if resume else (None, None)
    made_with = meta.get("tokenizer_fingerprint")
    if state is not None and state.get("tokenizer_fingerprint") != made_with:
        raise UserError(
            f"the token files in {cfg.data.data_dir} were made with another tokenizer than "
            f"checkpoint {ckpt}"
        )
    return meta, _run_tokenizer(meta, cfg.data.data_dir), ckpt, state


def _run_folder(cfg: RunConfig, ckpt: Path | None, d: Dist) -> RunDir:
    """The run's folder: the checkpoint's own when resuming one in place, else a new one
    (made by rank 0; the name is rank 0's, so every rank agrees on it)."""
    rundir = RunDir(Path(cfg.out_dir) / cfg.tracking.run_name)
    if d.is_main and _new_folder(cfg, ckpt):
        rundir = RunDir.create(cfg.out_dir, cfg.tracking.run_name)
    return rundir  # resumed in place: taken at the start (`setup_run`)


def _new_folder(cfg: RunConfig, ckpt: Path | None) -> bool:
    """A new run, or one continued from a loose checkpoint (not in its own run's folder)."""
    home = RunDir.of_checkpoint(ckpt) if ckpt is not None else None
    return home != RunDir(Path(cfg.out_dir) / cfg.tracking.run_name)


def _run_tokenizer(meta: dict[str, Any], data_dir: str):
    """The tokenizer the token files were made with, checked to be unchanged since."""
    from hellolondon.tokenizer import load_tokenizer

    path = meta.get("tokenizer_path")
    if not path or not (Path(path) / "tokenizer.json").is_file():
        return None  # moved away: the run works without it, but keeps no copy
    tok = load_tokenizer(path)
    if tok.fingerprint != meta.get("tokenizer_fingerprint"):
        raise UserError(
            f"the tokenizer at {path} has changed since the token files in {data_dir} were made "
            f"from it (fingerprint {tok.fingerprint[:12]}, not "
            f"{str(meta.get('tokenizer_fingerprint'))[:12]}); run `hellolondon prepare` again"
        )
    check_tokenizer_matches(meta, tok)  # meta.json edited: eval and export would refuse it
    return tok


def _monitor(cfg: RunConfig, d: Dist, log):
    if not (d.is_main and cfg.monitor.enabled):
        return None
    from hellolondon.tracking.monitor import HealthMonitor

    return HealthMonitor(
        cfg.monitor, None, max_iters=cfg.train.max_iters, console=log, schedule=cfg.train.schedule
    )


def build_model(cfg: RunConfig, d: Dist, dtype: torch.dtype, log):
    """Model, its compiled/wrapped twin, optimizer and grad scaler, freshly initialised."""
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for fp32 matmuls left by autocast
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank (FSDP needs it)
    model = GPT(cfg.model).to(d.device)
    torch.manual_seed(cfg.train.seed + d.rank)  # then per-rank streams (dropout)
    count = model.num_params()  # before FSDP shards the parameters
    scaler = torch.amp.GradScaler(d.device.type, enabled=dtype == torch.float16)
    step_model = _wrap(model, cfg, d, log)  # a speed option the machine lacks is refused here
    log(f"Model parameters: {count:,}")  # so a refusal is the only line
    if cfg.train.dtype not in ("auto", str(dtype).removeprefix("torch.")):  # said, not silent
        log(f"train.dtype={cfg.train.dtype} does not run on the CPU: {str(dtype)[6:]} instead")
    if d.device.type == "cpu" and dtype == torch.bfloat16 and hardware.cpu_lacks_bf16_matmul():
        log(
            "warning: this CPU has no bfloat16 matrix units (AVX512-BF16 or AMX): its bfloat16 "
            "matrix products run many times slower than float32's; train.dtype=float32 is faster here"
        )
    # after wrapping: FSDP replaces the parameters with shards, which the optimizer must hold
    optimizer = build_optimizer(model, cfg.train, d.device.type, log=log)
    return model, step_model, optimizer, scaler


def check_fits_in_memory(
    cfg: RunConfig, device: torch.device, dtype: torch.dtype, world: int = 1
) -> None:
    """The weights are made in float32 in this machine's memory first: a model too large for
    it is one line here instead of minutes of swapping or the OOM killer. So is a step whose
    activations cannot fit the device (a context or batch far too large): it would start one
    enormous operation that holds off SIGTERM for minutes or exhausts the memory. The step's
    estimate is a lower bound, so a setting that would fit is never refused."""
    m = cfg.model
    need, total = 4 * m.parameters, hardware.host_memory_bytes()
    if total and need > total:
        raise UserError(
            f"the model has {m.parameters:,} parameters, {need / 2**30:,.0f} GiB in float32 for "
            f"the weights alone, more than this machine's {total / 2**30:,.0f} GiB of memory; "
            "lower model.n_layer or model.n_embd"
        )
    floor = speed.training_memory_floor(cfg, dtype, device.type, world)
    have = hardware.available_memory_bytes(device)
    if have is None or sum(floor.values()) <= have:
        return
    size = speed.fewest_per_forward(cfg.train, device.type)
    parts = ", ".join(f"{name} {_gib(n)}" for name, n in floor.items())
    where = "free GPU memory" if device.type == "cuda" else "memory available"
    lower = (
        "train.batch_size or model.block_size, or take fewer sequences per forward with train.micro_batch=N"
        if size > 1
        else "model.block_size"
    )
    raise UserError(
        f"a training step of {size:,} x {m.block_size:,} tokens in {str(dtype)[6:]} needs at "
        f"least {_gib(sum(floor.values()))} ({parts}), more than the {_gib(have)} of {where} "
        f"on {device}; lower {lower}"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def autocast_for(
    device: torch.device, dtype: torch.dtype
) -> Callable[[], contextlib.AbstractContextManager]:
    if dtype == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def peak_flops_for(device: torch.device) -> float | None:
    """Peak FLOP/s for MFU; on a CPU only an explicit HELLOLONDON_PEAK_TFLOPS gives one."""
    name = hardware.device_name(device) if device.type == "cuda" else ""
    return hardware.peak_flops(name)


def _continue_from(run: Run, ckpt: Path, state: dict) -> None:
    checkpoint.restore_run(ckpt, state, run.parts(), run.dist, run.log)
    if run.dist.is_main and RunDir.of_checkpoint(ckpt) == run.rundir:
        checkpoint.continue_line(ckpt, run.log)
        run.rundir.cut_logs_after(run.state.step)  # the steps after it are logged again
        dropped = run.rundir.drop_eval_report_after(run.state.step)
        # W&B's at the end; its eval/iter is also training's, which logs it again
        run.cleared = [k for k in dropped if k != "eval/iter"]
    run.log(f"resumed from {ckpt} at iteration {run.state.step}")


def _open_tracking(
    run: Run, dtype: torch.dtype, tokenizer, resume_run_id: str | None, in_place: bool = False,
    tokens: str | None = None,
) -> None:  # fmt: skip
    d, cfg = run.dist, run.cfg
    full = run_config(run, dtype, tokenizer, tokens)  # asks the hardware: once
    if d.is_main and in_place:  # the run's first command, code and data stay on record
        full["reproduce"] = provenance.across_resume(run.rundir.read_config(), full, run.state.step)
    if d.is_main:
        run.rundir.write_config(scrub(full))
        run.rundir.mark_training()  # `compare`, `report` and `watch` can tell a killed run
        run.rundir.copy_tokenizer(tokenizer.path if tokenizer is not None else None)
    run.tracker = open_tracker(
        cfg, run.rundir, rank=d.rank, run_config=full, resume_run_id=resume_run_id
    )
    if run.monitor is not None:
        run.monitor.tracker = run.tracker


def _check_run_tokenizer(cfg: RunConfig, meta: dict, tokenizer, ckpt: Path | None, log) -> None:
    """The tokenizer the run keeps a copy of (samples, generate, eval and export read it),
    checked before the run folder is touched, not when the first sample is due, hours in: the
    token files' own, copied at the start; else the copy a resumed run has, which must be
    readable and the same."""
    from hellolondon.tokenizer import load_tokenizer

    if tokenizer is not None:
        return
    home = RunDir.of_checkpoint(ckpt) if ckpt is not None else None
    folder = home.tokenizer_dir if home is not None else None
    if folder is None or not (folder / "tokenizer.json").is_file():
        log(
            f"warning: the tokenizer the token files in {cfg.data.data_dir} were made with is "
            f"gone ({meta.get('tokenizer_path') or 'not recorded'}): this run writes no samples, "
            "and generate, eval and export need a copy of it in the run's tokenizer/ folder"
        )
        return
    try:
        found = load_tokenizer(folder).fingerprint
        fingerprint = f"fingerprint {found[:12]}"
    except UserError:
        found, fingerprint = None, "it cannot be read"
    made_with = meta.get("tokenizer_fingerprint")
    if made_with and found != made_with:
        raise UserError(
            f"the run's copy of its tokenizer in {folder} is not the one its token files were "
            f"made with ({fingerprint}); copy that tokenizer (fingerprint {made_with[:12]}) "
            "there and resume"
        )


def config_for_resume(resume: str, config_file: str | None, overrides: list[str]) -> RunConfig:
    """The saved config of the checkpoint to resume, with the given file and overrides on top
    (to extend max_iters, say). Architecture changes are refused later, by `resolve_config`."""
    from hellolondon.config import build_config, from_dict

    ckpt = checkpoint.resolve(resume)  # its own errors say what to give instead
    try:
        state = checkpoint.read_state(ckpt, verify=False)
    except checkpoint.NewerCheckpoint:
        raise
    except UserError as exc:  # the checkpoint named is unreadable: another may not be
        raise UserError(f"{exc}; resume an earlier checkpoint or the run folder") from None
    base = _with_recorded_data(from_dict(state["config"]), ckpt)
    return build_config(config_file=config_file, overrides=overrides, base=base)


def _with_recorded_data(cfg: RunConfig, ckpt: Path) -> RunConfig:
    """The run's data folder as `reproduce` finds it: the configured one may be relative to
    where training started, and the run records its absolute path too (`--data` still wins)."""
    import dataclasses

    run = RunDir.of_checkpoint(ckpt)
    found = provenance.recorded_data_dir(run.read_config()) if run is not None else None
    if not found or found == cfg.data.data_dir:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=found))


def _wrap(model: GPT, cfg: RunConfig, d: Dist, log=print) -> nn.Module:
    """Apply the speed options (train/speed.py), then shard, compile and wrap for DDP."""
    speed.prepare(model, cfg, d.device, precision(cfg, d.device), d.world_size, log)
    compiled: nn.Module = model
    use_compile = cfg.train.compiles(d.device.type)
    if not use_compile and cfg.train.compile_mode != "default":  # said, not silently ignored
        log(f"note: train.compile_mode={cfg.train.compile_mode} has no effect: the model is not "
            f"compiled (train.compile={cfg.train.compile} on {d.device.type}); "
            "train.compile=true compiles it")  # fmt: skip
    if d.fsdp:
        # sharded in place: `model` itself gathers its shards on every call, eval included
        fsdp.shard(model, precision(cfg, d.device))
        return speed.compiled(model, cfg) if use_compile else model
    if use_compile:
        compiled = speed.compiled(model, cfg)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [d.device.index] if d.device.type == "cuda" else None
        # compiled inside DDP: dynamo splits the graph at DDP's buckets, so each bucket's
        # all-reduce starts while the backward pass is still running
        compiled = DDP(compiled, device_ids=ids, **speed.ddp_options(cfg.train))
    return compiled


def _token_counts(tok) -> dict[str, int | None]:
    """Control tokens, and the historical terms that are one token each, of the run's tokenizer."""
    from hellolondon.tokenizer import historical_terms

    if tok is None:
        return {"special_tokens": None, "historical_tokens": None}
    single = sum(len(tok.encode(" " + term)) == 1 for term in historical_terms())
    return {"special_tokens": len(tok.hf.get_added_tokens_decoder()), "historical_tokens": single}


# (layers, heads, width) of the GPT-2 sizes
GPT2_SIZES = {
    (12, 12, 768): "Small",
    (24, 16, 1024): "Medium",
    (36, 20, 1280): "Large",
    (48, 25, 1600): "XL",
}


def architecture(n_layer: int, n_head: int, n_embd: int) -> str:
    """The model's name as the W&B guide's config shows it ("GPT-2 Medium"), with its shape."""
    size = GPT2_SIZES.get((n_layer, n_head, n_embd))
    name = f"GPT-2 {size}" if size else "GPT-2"
    layers, heads = _counted(n_layer, "layer"), _counted(n_head, "head")
    return f"{name} ({layers}, {heads}, {n_embd} wide)"


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def run_config(
    run: Run, dtype: torch.dtype, tokenizer=None, tokens: str | None = None
) -> dict[str, Any]:
    """The full run config for the tracker: settings, model, data and hardware facts; `tokens`,
    the token files' fingerprint as hashed at the start (rank 0)."""
    cfg, m, meta = run.cfg, run.cfg.model, run.meta
    return {
        **cfg.to_dict(),
        "model_info": {
            "architecture": architecture(m.n_layer, m.n_head, m.n_embd),
            "preset": cfg.preset,
            "n_layer": m.n_layer,
            "n_head": m.n_head,
            "n_embd": m.n_embd,
            "parameters": run.model.num_params(),
            "parameters_total": run.model.num_params(False),
            "vocab_size": m.vocab_size,
            "context_length": m.block_size,
            **_token_counts(tokenizer),
        },
        "data_info": {
            "corpus": cfg.data.corpus,
            "period": cfg.data.period,
            "documents": meta.get("train_documents", 0) + meta.get("val_documents", 0),
            "train_tokens": meta.get("train_tokens"),
            "val_tokens": meta.get("val_tokens"),
            # passes over train.bin that train.max_iters make: the guide's "Epochs"
            "epochs": run.batches.epoch_of(cfg.train.max_iters * run.samples_per_step),
            "tokenizer_fingerprint": meta.get("tokenizer_fingerprint"),
            # when the documents were written (token files older than this record have none)
            **{k: meta[k] for k in ("years", "periods") if k in meta},
            **({"data_sources": meta["sources"]} if "sources" in meta else {}),
        },
        "hardware": {
            **hardware.hardware_facts(run.dist.device),
            "dtype": str(dtype).replace("torch.", ""),  # the `auto` settings as decided here
            "compiled": cfg.train.compiles(run.dist.device.type),
            # [sequences, count] a step: train.micro_batch
            "micro_batches": list(speed.micro_batches(run.model, cfg.train)),
            "world_size": run.dist.world_size,
            "distributed": run.dist.enabled,
            "peak_flops": run.peak_flops,
            "tokens_per_step": run.tokens_per_step,
        },
        "reproduce": provenance.collect(meta, cfg.data.data_dir, cfg.train.seed, tokens=tokens),
    }


def announce_pace(run: Run, steps: int, what: str) -> bool:
    """On a CPU, a GPU-sized model takes seconds per step: before the first one, say how long
    a step and the `steps` to come will take (from this CPU's measured matmul speed) and what
    to use instead. Returns True when steps are that slow. With several processes each does
    its share of the step's tokens, on its own threads; rank 0 alone measures and says it, and
    so alone shows progress bars (the others would draw theirs over its lines)."""
    d = run.dist
    if d.device.type != "cpu" or not d.is_main:
        return False
    share = run.tokens_per_step // d.world_size
    step_s = _cpu_step_seconds(run.cfg.model, run.flops_per_token, share)
    if step_s < 2.0:
        return False
    total = step_s * steps
    advice = (
        "a smaller model or batch is faster (model.n_embd, model.n_layer, train.batch_size)"
        if run.cfg.preset == "tiny"
        else f"the {run.cfg.preset} preset is meant for GPUs (for a CPU try --preset tiny, "
        "or `hellolondon demo`)"
    )
    left = f", {fmt_duration(total)} for the {steps:,} {what}" if steps else ""
    run.log(f"estimated {step_s:,.0f} s per step on this CPU{left}; {advice}")
    return True


def _cpu_step_seconds(m, flops_per_token: float, tokens_per_step: int) -> float:
    """A CPU step's time from this CPU's speed on the model's two kinds of matmul, the blocks'
    (width × 4·width) and the output head's (width × vocabulary), each at the rows of a
    micro-batch: a narrow model's blocks run far below the head's speed. Training takes about
    1.4 times the bare matmuls' time (measured 0.6-2.2 times over widths 32-768, on 2 cores)."""
    rows = min(tokens_per_step, 2048)
    head = 6 * m.vocab_size * m.n_embd
    blocks = flops_per_token - head
    seconds = blocks / hardware.cpu_matmul_flops(rows, m.n_embd, 4 * m.n_embd)
    seconds += head / hardware.cpu_matmul_flops(rows, m.n_embd, min(m.vocab_size, 4096))
    return 1.4 * seconds * tokens_per_step
