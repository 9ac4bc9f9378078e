"""Configuration: a few dataclasses, named presets, TOML files and `key=value` overrides.

Every field has a one-line doc. Checks live in `__post_init__`, so a bad value fails where it is
made. The resolved config is saved with every run and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hellolondon.errors import UserError


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


@dataclass
class ModelConfig:
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 256  # residual stream width
    block_size: int = 256  # context length in tokens (learned positions)
    vocab_size: int = 30000  # tokenizer vocabulary (checked against the token files)
    dropout: float = 0.0  # 0 for pre-training, as nanoGPT and GPT-3 do

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            _check(getattr(self, name) > 0, f"model.{name} must be positive")
        _check(
            self.n_embd % self.n_head == 0,
            f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})",
        )
        _check(0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)")
        _check(self.vocab_size <= 65536, "model.vocab_size must fit uint16 token files (<= 65536)")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def parameters(self) -> int:
        """Every parameter of the model this describes (the tied matrix once, positions
        included), counted without building it: `GPT.num_params(False)`."""
        d = self.n_embd
        block = 12 * d * d + 2 * d  # attention 4·d², MLP 8·d², two LayerNorm weights
        return (self.vocab_size + self.block_size) * d + self.n_layer * block + d


@dataclass
class TrainConfig:
    batch_size: int = 16  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step (per process)
    max_iters: int = 300  # optimizer steps in the whole run
    optimizer: str = "adamw"  # adamw|muon: Muon for the blocks' matrices, AdamW for the rest
    lr: float = 1e-3  # peak AdamW learning rate
    min_lr: float = 1e-4  # floor of the decay (lr/10, as Chinchilla and nanoGPT); Muon decays alike
    schedule: str = "cosine"  # cosine|wsd: cosine decay, or warm-up-stable-decay (extendable)
    warmup_iters: int = 30  # linear warm-up steps from 0 to lr
    lr_decay_iters: int = 0  # step where the decay ends; 0 means max_iters
    cooldown_frac: float = 0.2  # wsd: share of the run spent cooling down at its end
    cooldown_shape: str = "linear"  # wsd: linear|1-sqrt, the cool-down's shape
    muon_lr: float = 0.02  # peak Muon learning rate (its updates are orthogonalised, not Adam's)
    muon_momentum: float = 0.95  # Muon's Nesterov momentum
    muon_weight_decay: float = 0.1  # Muon's decoupled weight decay (scaled by its lr)
    weight_decay: float = 0.1  # AdamW decay on matrices only (GPT-3)
    beta1: float = 0.9  # AdamW beta1 (GPT-3)
    beta2: float = 0.95  # AdamW beta2 (GPT-3)
    grad_clip: float = 1.0  # clip the global grad norm; 0 disables
    eval_interval: int = 50  # steps between evaluations
    eval_iters: int = 10  # fixed held-out batches per evaluation
    eval_seqs: int = 0  # held-out sequences per evaluation; 0: eval_iters x global batch
    log_interval: int = 10  # steps between console/tracker rows
    ckpt_interval: int = 100  # steps between checkpoints (one is also written at the end)
    keep_last: int = 2  # step checkpoints kept besides `best`
    sample_interval: int = 0  # steps between text samples in the run folder; 0: only at the end
    dtype: str = "auto"  # auto|float32|bfloat16|float16 (auto: bf16 on CUDA if supported, fp16 otherwise, fp32 on CPU)
    compile: str = "auto"  # auto|true|false: torch.compile (auto: on for CUDA)
    device: str = "auto"  # auto|cpu|cuda|cuda:N|mps
    seed: int = 1337  # base seed; rank r uses seed + r
    nonfinite: str = (
        "skip"  # skip|stop: on a NaN/inf loss skip the step untouched, or checkpoint and stop
    )
    fsdp: bool = False  # shard parameters with FSDP2 instead of DDP (multi-GPU only)
    prefetch: bool = True  # read and pin the next batch in a background thread during the step
    attention: str = (
        "auto"  # auto|flash|efficient|cudnn|math: the SDPA kernel (auto: PyTorch picks)
    )
    compile_mode: str = "default"  # default|reduce-overhead|max-autotune|max-autotune-no-cudagraphs
    compile_cache: str = ""  # compiled-kernel cache folder; empty: <out_dir>/.compile-cache
    micro_batch: str = "off"  # off|auto|N: sequences per forward, batch_size*grad_accum kept
    activation_checkpointing: bool = False  # recompute each block in backward: less memory
    fp8: bool = False  # float8 linear layers via torchao (CUDA, compute capability >= 8.9)
    ddp_bucket_mb: int = 25  # DDP gradient bucket size (MB); buckets all-reduce during backward
    ddp_static_graph: bool = False  # DDP static_graph: same parameters used every step

    @property
    def decay_end(self) -> int:
        """The step where the decay (cosine or the WSD cool-down) reaches min_lr."""
        return self.lr_decay_iters or self.max_iters

    @property
    def cooldown_start(self) -> int:
        """wsd: the step where the cool-down starts (the last `cooldown_frac` of the run)."""
        return self.decay_end - max(1, round(self.cooldown_frac * self.decay_end))

    def compiles(self, device_type: str) -> bool:
        """Whether the model is compiled on this kind of device (`auto`: on CUDA)."""
        return self.compile == "true" or (self.compile == "auto" and device_type == "cuda")

    def schedule_warning(self) -> str | None:
        """What is odd in a schedule that runs all the same: a warm-up that does not end before
        the decay does (the rate never reaches its peak), or with wsd one that runs into the
        cool-down (the rate drops as the warm-up ends). Short smoke tests do this on purpose, so
        training says it once and goes on; None when the schedule fits."""
        end = (
            f"train.lr_decay_iters={self.lr_decay_iters}"
            if self.lr_decay_iters
            else f"train.max_iters={self.max_iters}"
        )
        if self.warmup_iters >= self.decay_end:
            return (
                f"train.warmup_iters={self.warmup_iters} is not shorter than the schedule, whose "
                f"decay ends at step {self.decay_end} ({end}): the learning rate never reaches "
                "train.lr; lower train.warmup_iters for a run that does"
            )
        if self.schedule == "wsd" and self.warmup_iters > self.cooldown_start:
            return (
                f"train.warmup_iters={self.warmup_iters} runs into the wsd cool-down, which "
                f"starts at step {self.cooldown_start} (the last train.cooldown_frac="
                f"{self.cooldown_frac:g} of {end}); lower train.warmup_iters or "
                "train.cooldown_frac for a stable phase"
            )
        return None

    def __post_init__(self) -> None:
        self._check_numbers()
        self._check_optimizer_and_schedule()
        self._check_intervals()
        self._check_device_and_compilation()
        self._check_batching()

    def _check_numbers(self) -> None:
        """Counts, rates and coefficients: positive, finite and in range."""
        for name in ("batch_size", "grad_accum", "max_iters", "eval_iters", "log_interval"):
            _check(getattr(self, name) > 0, f"train.{name} must be positive")
        for name in ("lr", "muon_lr"):  # nan or inf would train to nan without a word
            value = getattr(self, name)
            _check(
                math.isfinite(value) and value > 0,
                f"train.{name} must be a positive finite number, not {value}",
            )
        _check(0 <= self.min_lr <= self.lr, "train.min_lr must be in [0, train.lr]")
        for name in ("weight_decay", "grad_clip"):  # a negative clip would flip every gradient
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, f"train.{name} must be >= 0, not {value}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"train.{name} must be in [0, 1), not {value}")
        _check(  # torch takes seeds below 2**64, and rank r seeds with seed + r
            0 <= self.seed < 2**63, f"train.seed must be from 0 to 2**63 - 1, not {self.seed}"
        )
        _check(self.sample_interval >= 0, "train.sample_interval must be >= 0 (0: only at the end)")
        _check(self.warmup_iters >= 0, "train.warmup_iters must be >= 0")

    def _check_optimizer_and_schedule(self) -> None:
        _check(self.optimizer in ("adamw", "muon"), "train.optimizer must be adamw or muon")
        _check(self.schedule in ("cosine", "wsd"), "train.schedule must be cosine or wsd")
        _check(0.0 < self.cooldown_frac <= 1.0, "train.cooldown_frac must be in (0, 1]")
        _check(
            self.lr_decay_iters >= 0,
            f"train.lr_decay_iters must be >= 0 (0: train.max_iters), not {self.lr_decay_iters}",
        )
        _check(
            self.cooldown_shape in ("linear", "1-sqrt"),
            "train.cooldown_shape must be linear or 1-sqrt",
        )
        _check(0.0 <= self.muon_momentum < 1.0, "train.muon_momentum must be in [0, 1)")
        _check(
            math.isfinite(self.muon_weight_decay) and self.muon_weight_decay >= 0,
            f"train.muon_weight_decay must be >= 0, not {self.muon_weight_decay}",
        )
        # Newton-Schulz orthogonalises whole matrices; an FSDP shard holds only some rows
        _check(
            not (self.fsdp and self.optimizer == "muon"),
            "train.optimizer=muon does not work with train.fsdp=true (Muon needs whole matrices, "
            "FSDP shards them); use DDP (train.fsdp=false) or train.optimizer=adamw",
        )

    def _check_intervals(self) -> None:
        """Evaluation and checkpoint intervals, and how many checkpoints are kept."""
        _check(self.eval_interval >= 0 and self.ckpt_interval >= 0, "intervals must be >= 0")
        _check(self.eval_seqs >= 0, "train.eval_seqs must be >= 0")
        _check(self.keep_last >= 1, "train.keep_last must be >= 1")

    def _check_device_and_compilation(self) -> None:
        """The device, dtype, compilation and attention kernel named (train.compile lower-cased),
        and what a non-finite loss does."""
        _check(  # whether this machine has it is known where the run starts
            re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
            f"unknown device {self.device!r}; use auto, cpu, cuda, cuda:N or mps",
        )
        _check(
            self.dtype in ("auto", "float32", "bfloat16", "float16"),
            f"train.dtype must be auto, float32, bfloat16 or float16, not {self.dtype!r}",
        )
        _check(
            str(self.compile).lower() in ("auto", "true", "false"),
            "train.compile must be auto, true or false",
        )
        self.compile = str(self.compile).lower()
        _check(self.nonfinite in ("skip", "stop"), "train.nonfinite must be skip or stop")
        _check(
            self.attention in ("auto", "flash", "efficient", "cudnn", "math"),
            f"train.attention must be auto, flash, efficient, cudnn or math, not {self.attention!r}",
        )
        modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        _check(
            self.compile_mode in modes,
            f"train.compile_mode must be one of {', '.join(modes)}, not {self.compile_mode!r}",
        )

    def _check_batching(self) -> None:
        """train.micro_batch (lower-cased) and the DDP bucket size."""
        self.micro_batch = str(self.micro_batch).lower()
        _check(
            self.micro_batch in ("off", "auto")
            or (self.micro_batch.isdigit() and int(self.micro_batch) > 0),
            f"train.micro_batch must be off, auto or a positive number, not {self.micro_batch!r}",
        )
        _check(self.ddp_bucket_mb > 0, "train.ddp_bucket_mb must be positive")


@dataclass
class DataConfig:
    data_dir: str = "work/data"  # folder with train.bin, val.bin and meta.json from `prepare`
    corpus: str = "sample"  # a name for the corpus, logged with the run
    period: str = "1500-1850"  # the period the corpus covers, logged with the run


@dataclass
class TrackingConfig:
    # online|offline|disabled; empty: WANDB_MODE, else online with a key, offline without
    wandb_mode: str = ""
    mode_reason: str = ""  # why that mode (filled in when the run starts)
    project: str = ""  # W&B project; empty: WANDB_PROJECT, else helloLondon
    entity: str = ""  # W&B entity (user or team); empty: WANDB_ENTITY
    run_name: str = ""  # empty: WANDB_NAME, else london-<kind>-YYYYMMDD-HHMMSS (the seed's names)
    tags: list[str] = field(default_factory=list)  # tags; the defaults are added at the start
    notes: str = ""  # free text shown on the W&B run; empty: WANDB_NOTES
    group: str = ""  # W&B group, to gather related runs; empty: WANDB_RUN_GROUP
    log_artifacts: bool = False  # upload checkpoints as W&B Artifacts (aliases latest, best)
    init_timeout: float = 15.0  # seconds W&B may take to start before falling back to offline

    def __post_init__(self) -> None:
        _check(  # below 1 s W&B cannot start even offline; inf would never fall back
            1 <= self.init_timeout <= 3600,
            f"tracking.init_timeout must be between 1 and 3600 seconds, not {self.init_timeout}",
        )
        _check(
            self.wandb_mode in ("", "online", "offline", "disabled"),
            f"tracking.wandb_mode must be online, offline or disabled, not {self.wandb_mode!r}",
        )
        _check(  # the run's folder is runs/<run_name>: one folder, inside runs/
            self.run_name not in (".", "..") and not any(c in self.run_name for c in "/\\"),
            f"tracking.run_name {self.run_name!r} (--run-name, WANDB_NAME) names the run's folder: "
            "no / or \\, and not . or ..",
        )
        _check(  # a line break or a tab in a folder name breaks every command that shows it
            not any(ord(c) < 32 or ord(c) == 127 for c in self.run_name)
            and (self.run_name == "" or self.run_name.strip() != ""),
            f"tracking.run_name {self.run_name!r} (--run-name, WANDB_NAME) names the run's "
            "folder: no control characters (line breaks, tabs), and not only spaces",
        )
        _check(  # file systems take names of 255 bytes; the run folder's own files add to it
            len(self.run_name) <= 128 and len(self.run_name.encode()) <= 200,
            f"tracking.run_name is {len(self.run_name)} characters (--run-name, WANDB_NAME); it "
            "names the run's folder: use at most 128 (and 200 bytes in UTF-8)",
        )
        # W&B refuses these even offline, after training has started: say so before
        _check(
            len(self.project) <= 128 and not any(c in self.project for c in "/\\#?%:"),
            f"tracking.project {self.project!r} (--wandb-project, WANDB_PROJECT): W&B takes "
            "up to 128 characters and none of / \\ # ? % :",
        )
        for tag in self.tags:
            _check(
                1 <= len(tag) <= 64,
                f"tracking.tags: {tag[:70]!r} is {len(tag)} characters (--tags, WANDB_TAGS); "
                "W&B takes tags of 1 to 64",
            )


@dataclass
class MonitorConfig:
    enabled: bool = True  # run the health monitor inside training (docs/monitoring.md)
    smooth_rows: int = 5  # logged rows in the running medians that the rules compare
    skip_rows: int = (
        3  # first logged rows left out of the MFU, step-time and memory rules (compilation)
    )
    rearm_rows: int = 10  # a rule that fired speaks again only after this many clear rows
    trend_rows: int = (
        20  # logged rows in the slower running median of the rising rule and phase checks
    )
    plateau_rows: int = 20  # logged rows needed in the compared span before a plateau is called
    plateau_min_drop: float = (
        0.01  # smoothed loss fell less than this share over the latest half of the run: plateau
    )
    plateau_learned_drop: float = 0.1  # a late plateau is expected only this far below the start
    rise_ratio: float = 1.10  # smoothed loss this much above its best: rising (WARN)
    diverge_ratio: float = 1.5  # smoothed loss this much above its best: diverging (ERROR)
    spike_zscore: float = (
        8.0  # one row this many robust deviations above the recent median: a spike
    )
    spike_min_rel: float = 0.15  # ... and at least this share above that median
    mfu_drop_ratio: float = 0.6  # MFU below this share of its running level: dropping
    mfu_low: float = 20.0  # MFU (%) below this throughout the smoothing window: low (0: off)
    dt_rise_ratio: float = 1.5  # step time above this multiple of its settled level: rising
    mem_growth_rows: int = 20  # GPU memory rising on this many rows in a row: a leak
    mem_limit_ratio: float = 0.95  # peak GPU memory above this share of the card: near the limit
    overfit_evals: int = (
        3  # evaluations with val loss above its best while train loss falls: overfitting
    )
    overfit_min_rise: float = 0.03  # ... each at least this share above the best val loss
    phase_min_iters: int = 20000  # shorter runs get phase lines but no loss-range warnings
    phase_range_slack: float = 0.25  # loss this share above the seed's range for a phase: a warning
    alert_wait_s: int = 300  # W&B waits this long between alerts of the same title

    def __post_init__(self) -> None:
        for name in ("smooth_rows", "trend_rows", "rearm_rows", "plateau_rows", "mem_growth_rows"):
            _check(getattr(self, name) >= 1, f"monitor.{name} must be >= 1")
        _check(
            self.skip_rows >= 0 and self.overfit_evals >= 1,
            "monitor.skip_rows must be >= 0 and overfit_evals >= 1",
        )
        _check(
            1.0 < self.rise_ratio < self.diverge_ratio,
            "monitor needs 1 < rise_ratio < diverge_ratio",
        )
        _check(
            0.0 <= self.plateau_learned_drop < 1.0, "monitor.plateau_learned_drop must be in [0, 1)"
        )
        _check(0.0 < self.mfu_drop_ratio < 1.0, "monitor.mfu_drop_ratio must be in (0, 1)")
        _check(
            0.0 <= self.mfu_low <= 100.0, "monitor.mfu_low must be a percentage (0 turns it off)"
        )
        _check(self.dt_rise_ratio > 1.0, "monitor.dt_rise_ratio must be > 1")
        _check(0.0 < self.mem_limit_ratio <= 1.0, "monitor.mem_limit_ratio must be in (0, 1]")
        _check(0.0 <= self.plateau_min_drop < 1.0, "monitor.plateau_min_drop must be in [0, 1)")
        _check(self.spike_zscore > 0.0, "monitor.spike_zscore must be > 0")
        for name in ("spike_min_rel", "overfit_min_rise", "phase_range_slack", "phase_min_iters"):
            _check(getattr(self, name) >= 0, f"monitor.{name} must be >= 0")
        _check(  # W&B takes 0 as "not given" and waits its own default of 60 s
            self.alert_wait_s >= 1,
            "monitor.alert_wait_s must be >= 1 (seconds W&B waits between two alerts of one title)",
        )


@dataclass
class RunConfig:
    preset: str = "tiny"  # the preset this run started from
    out_dir: str = "runs"  # runs/<run-name>/ is created below this folder
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def __post_init__(self) -> None:
        _check(  # empty would put the run folder wherever the command is started
            isinstance(self.out_dir, str) and self.out_dir.strip() != "",
            "out_dir must name a folder (--out-dir; default runs)",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Preset:
    """A named model size with the training settings that suit it, and the seed's run name."""

    name: str
    model: ModelConfig
    train: TrainConfig
    run_prefix: str
    about: str


# Sources: GPT-2 paper (sizes 124M/350M), GPT-3 paper table 2.1 (lr 6e-4 for 125M and 3e-4 for
# 350M, betas 0.9/0.95, weight decay 0.1, clip 1.0), nanoGPT (2000 warm-up steps, min_lr = lr/10,
# no dropout). Iteration counts follow the seed: an SLM run ~60,000 steps, a full run 100,000+.
# The recipe: Muon for the blocks' matrices with a warm-up-stable-decay schedule reached the
# tuned AdamW + cosine loss in about half the steps on the demo's model (docs/benchmarks.md).
# Muon's rate 0.02 and momentum 0.95 are Keller Jordan's defaults; with torch's default
# adjustment (updates scaled by sqrt(max(1, rows/cols))) the rate carries across widths, so the
# GPU presets use it unchanged; AdamW keeps GPT-3's rate for the embedding and the gains.
RECIPE: dict[str, Any] = dict(optimizer="muon", schedule="wsd", muon_lr=0.02)
GPU_RHYTHM: dict[str, int] = dict(  # warm-up, evaluation, logging and saving of the GPU presets
    warmup_iters=2000,
    eval_interval=1000,
    eval_iters=100,
    log_interval=10,
    ckpt_interval=1000,
    sample_interval=5000,
)
TINY = Preset(
    "tiny",
    ModelConfig(n_layer=4, n_head=4, n_embd=256, block_size=256),
    TrainConfig(**RECIPE),
    "london-tiny-demo",
    "4 layers, 4 heads, 256 wide, context 256: 300 steps on a 2-core CPU in about 15 minutes",
)
SLM = Preset(
    "slm",
    ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024),
    TrainConfig(
        batch_size=32, grad_accum=1, max_iters=60000, lr=6e-4, min_lr=6e-5, **RECIPE, **GPU_RHYTHM
    ),
    "london-slm-simple",
    "GPT-2 small shape (12 layers, 12 heads, 768 wide, context 1024), ~109M parameters",
)
REGULAR = Preset(
    "regular",
    ModelConfig(n_layer=24, n_head=16, n_embd=1024, block_size=1024),
    TrainConfig(
        batch_size=16, grad_accum=2, max_iters=100000, lr=3e-4, min_lr=3e-5, **RECIPE, **GPU_RHYTHM
    ),
    "london-historical-llm",
    "GPT-2 medium shape (24 layers, 16 heads, 1024 wide, context 1024), ~333M parameters",
)
PRESETS: dict[str, Preset] = {p.name: p for p in (TINY, SLM, REGULAR)}

SECTIONS = ("model", "train", "data", "tracking", "monitor")


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def _field_types(section_obj: Any) -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(section_obj)}


_KINDS = {
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number",
    "list": "a list of strings",
    "str": "text",
}


def expected(current: Any) -> str:
    """What a setting whose value is now `current` takes, in words (for error lines)."""
    return _KINDS.get(type(current).__name__, f"a {type(current).__name__}")


def _parse_value(text: str, current: Any, key: str) -> Any:
    """Turn the text of a `key=value` override into the type of the field it replaces."""
    try:
        if isinstance(current, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(current, int):
            return _whole(float(text)) if "e" in text.lower() else int(text)
        if isinstance(current, float):
            return _number(float(text))
        if isinstance(current, list):
            return [t.strip() for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{key}: expected {expected(current)}, got {text!r}") from None
    return text


def _number(value: float) -> float:
    """nan is no setting's value: compared with a threshold it is never above or below, so a
    rule given nan would be switched off without a word."""
    if math.isnan(value):
        raise ValueError(value)
    return value


def _whole(value: float) -> int:
    """`1e3` as an int; `2.5e0` or `inf` would be cut or fail later, so they are refused here."""
    if not value.is_integer():
        raise ValueError(value)
    return int(value)


# text settings whose values include true/false or a number, which a TOML file may write bare
TEXT_OF_SCALARS = ("compile", "micro_batch")


def _typed(value: Any, current: Any, key: str, text: bool = True) -> Any:
    """A value checked against the type of the field it replaces: `text` from the command line
    (parsed), else from a TOML file, whose types must match (`n_layer = 4.5`, `tags = [1]` or
    `lr = "0.1"` would otherwise fail deep in training, or pass as another type)."""
    if isinstance(value, str) and not isinstance(current, str):
        if not text and not isinstance(current, list):  # tags = "a,b" reads as a list
            raise UserError(
                f"{key}: expected {expected(current)}, got the string {value!r}; write it "
                "without quotes"
            )
        return _parse_value(value, current, key)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(current, bool) and isinstance(value, bool):
        return value
    if isinstance(current, int) and not isinstance(current, bool) and number:
        if isinstance(value, int) or value.is_integer():
            return int(value)
    elif isinstance(current, float) and number and not math.isnan(value):
        return float(value)
    elif isinstance(current, str) and isinstance(value, str | int | float):
        written = str(value).lower() if isinstance(value, bool) else str(value)
        if not isinstance(value, str) and key.rsplit(".", 1)[-1] not in TEXT_OF_SCALARS:
            raise UserError(
                f'{key}: expected {expected(current)}, got {value!r}; write it in quotes ("{written}")'
            )
        return written  # `compile = true`, `micro_batch = 4`: the text of the same key=value
    elif (
        isinstance(current, list)
        and isinstance(value, list)
        and all(isinstance(v, str) for v in value)
    ):
        return value
    raise UserError(f"{key}: expected {expected(current)}, got {value!r}")


def full_key(key: str) -> str:
    """`lr` or `train.lr` -> `train.lr`; a UserError for a key no section has (or several do)."""
    return ".".join(_resolve_key(key))


def _resolve_key(key: str) -> tuple[str, str]:
    """`train.lr` or plain `lr` (when only one section has that field) -> (section, field)."""
    defaults = RunConfig()
    if key == "preset":  # a starting point, not a setting: it decides the defaults of the rest
        raise UserError(
            'the preset is chosen with --preset NAME (or preset = "NAME" at the top of a TOML '
            "file), not as a key=value setting"
        )
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise UserError(
                f"unknown config section {section!r} in {key!r}; sections: {', '.join(SECTIONS)}"
            )
        if name not in _field_types(getattr(defaults, section)):
            known = list(_field_types(getattr(defaults, section)))
            hint = difflib.get_close_matches(name, known, n=1)
            more = (
                f"; did you mean {section}.{hint[0]}?" if hint else f"; known: {', '.join(known)}"
            )
            raise UserError(f"unknown config key {key!r}{more}")
        return section, name
    owners = [s for s in SECTIONS if key in _field_types(getattr(defaults, s))]
    if len(owners) == 1:
        return owners[0], key
    if owners:
        raise UserError(
            f"config key {key!r} is ambiguous; write one of: {', '.join(f'{s}.{key}' for s in owners)}"
        )
    every = [f"{s}.{n}" for s in SECTIONS for n in _field_types(getattr(defaults, s))]
    hint = difflib.get_close_matches(key, [e.split(".")[1] for e in every], n=1)
    raise UserError(f"unknown config key {key!r}" + (f"; did you mean {hint[0]}?" if hint else ""))


def _apply(values: dict[str, dict[str, Any]], key: str, raw: Any, text: bool = True) -> None:
    section, name = _resolve_key(key)
    current = getattr(getattr(RunConfig(), section), name)
    values.setdefault(section, {})[name] = _typed(raw, current, key, text)
    if (section, name) == ("tracking", "wandb_mode"):  # asked for now, whatever chose it before
        values[section]["mode_reason"] = ""


def build_config(
    preset: str = "tiny",
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: RunConfig | None = None,
    preset_flag: str | None = None,
    recorded: Any = None,
) -> RunConfig:
    """Preset (or `base`, a saved config), then TOML file, then `key=value` overrides, each
    replacing the one before. A JSON file is a run's saved config: it replaces the preset as
    the base, so `train --config` with it starts a new run with the same settings.
    `preset_flag`: the preset the command line named (`--preset`), refused when the file
    starts from another, whose settings would silently replace it. `recorded`: that JSON
    file's content where the caller has read it already (`read_run_record`)."""
    given, named = config_file, None
    if config_file is not None and Path(config_file).suffix == ".json":
        data = read_run_record(config_file) if recorded is None else recorded
        base, config_file = _run_settings(data, Path(config_file)), None
        named = base.preset
    from_file = _read_toml(Path(config_file)) if config_file is not None else {}
    if "preset" in from_file:  # the preset the file starts from (`config` writes it)
        preset = named = _file_preset(from_file.pop("preset"), config_file, base)
    if preset_flag and named and preset_flag != named:
        raise UserError(
            f"--preset {preset_flag} does not apply with --config {given}, which starts from "
            f"preset {named!r} and replaces its settings; leave out --preset, or change the "
            "file's preset"
        )
    if base is not None:
        values: dict[str, dict[str, Any]] = {
            k: v for k, v in base.to_dict().items() if k in SECTIONS
        }
        preset, top = base.preset, {"out_dir": base.out_dir}
    else:
        p = get_preset(preset)
        values = {"model": dataclasses.asdict(p.model), "train": dataclasses.asdict(p.train)}
        top = {}
    if from_file:
        for key, raw in from_file.items():
            if isinstance(raw, dict):
                for name, value in raw.items():
                    _apply(values, f"{key}.{name}", value, text=False)
            elif key in ("out_dir",):
                top[key] = _typed(raw, "", key, text=False)
            else:
                _apply(values, key, raw, text=False)
    for item in overrides or []:
        if "=" not in item:
            raise UserError(
                f"override {item!r} must look like key=value (for example train.lr=3e-4)"
            )
        key, raw = item.split("=", 1)
        if key.strip() == "out_dir":
            top["out_dir"] = raw
            continue
        _apply(values, key.strip(), raw.strip())
    if base is not None:
        _rederive_eval_seqs(values["train"], base.train)
    return from_dict({"preset": preset, **top, **values})


def _rederive_eval_seqs(train: dict[str, Any], base: TrainConfig) -> None:
    """A saved config holds the evaluation size as resolved (`eval_seqs`): a new
    `train.eval_iters` given on top of it, without an `eval_seqs` of its own, sizes it again."""
    if train.get("eval_iters") != base.eval_iters and train.get("eval_seqs") == base.eval_seqs:
        train["eval_seqs"] = 0


def _file_preset(name: Any, path: str | Path | None, base: RunConfig | None) -> str:
    """A config file's `preset = "..."`: it replaces the preset given on the command line, as
    the file's settings replace the preset's; a resumed run keeps the preset it started from."""
    if not isinstance(name, str) or name not in PRESETS:
        raise UserError(
            f"config file {path}: preset = {name!r} is not a preset; choose one of: "
            f"{', '.join(PRESETS)}"
        )
    if base is not None and name != base.preset:
        raise UserError(
            f"config file {path} names preset {name!r}, but this run started from "
            f"{base.preset!r} and keeps it; remove the preset line"
        )
    return name


def read_run_record(path: str | Path) -> Any:
    """A run's saved config file (config.json) as it is: its settings and the facts recorded
    beside them."""
    import json

    path = Path(path)
    if not path.is_file():
        what = "is a folder; give the config file in it" if path.is_dir() else "not found"
        raise UserError(f"config file {path} {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid JSON: {exc}") from None


def _run_settings(data: Any, path: Path) -> RunConfig:
    """The settings of a run's saved config (the facts recorded beside them are left out), under
    a new run name: the recorded one belongs to the run that wrote the file."""
    settings = settings_of_run(data, str(path))
    from hellolondon.provenance import recorded_data_dir

    # the data folder as given may be relative to where the run was started, not to here
    found = recorded_data_dir(data)
    if found and found != settings.data.data_dir:
        settings = dataclasses.replace(
            settings, data=dataclasses.replace(settings.data, data_dir=found)
        )
    return settings


def settings_of_run(data: Any, source: str) -> RunConfig:
    """The settings in a run's recorded config (a dict), under a new, empty run name."""
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        raise UserError(f"{source} is not a run's saved config (no [train] settings)")
    settings = {k: v for k, v in data.items() if k in (*SECTIONS, "preset", "out_dir")}
    tracking = settings.get("tracking") or {}
    if isinstance(tracking, dict):  # anything else is refused by from_dict
        settings["tracking"] = {**tracking, "run_name": ""}
    try:
        return from_dict(settings)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        what = "is a folder; give the config file in it" if path.is_dir() else "not found"
        raise UserError(f"config file {path} {what}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `to_dict()` output (a run's saved config, a checkpoint)."""
    kinds = {
        "model": ModelConfig,
        "train": TrainConfig,
        "data": DataConfig,
        "tracking": TrackingConfig,
        "monitor": MonitorConfig,
    }
    parts: dict[str, Any] = {}
    for section, cls in kinds.items():
        given = data.get(section) or {}
        if not isinstance(given, dict):
            raise UserError(
                f"config section {section!r}: expected a table of settings, got {given!r}"
            )
        defaults = cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise UserError(f"unknown config key {section}.{unknown[0]}")
        # a saved config edited by hand (`train --config run/config.json`) is checked as a TOML
        # file is: a wrong type would otherwise fail deep in training, after the run folder
        parts[section] = cls(
            **{k: _typed(v, getattr(defaults, k), f"{section}.{k}") for k, v in given.items()}
        )
    return RunConfig(
        preset=data.get("preset", "tiny"), out_dir=data.get("out_dir", "runs"), **parts
    )
