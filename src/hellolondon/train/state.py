"""The loop's own state: how far the run is, its best evaluation and the accumulators of its
summary. Saved in every checkpoint (`state_dict`) and restored on resume (`load_state_dict`), so
a resumed run continues its counters and its summary covers the whole run, not the last part."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    samples_seen: int = 0  # sequences consumed (the data order depends only on this)
    best_val_loss: float = math.inf
    best_step: int | None = None
    first_val_loss: float | None = None
    final_val_loss: float | None = None
    final_eval_train_loss: float | None = None
    final_train_loss: float | None = None
    train_seconds: float = 0.0  # timed training, evaluation and checkpoints left out
    train_tokens: int = 0  # tokens of the timed steps, for the mean tokens/s
    wall_seconds: float = 0.0  # wall time of the run up to the last start
    starts: int = 0  # how often the run was started: 1 plus each resume
    stop_reason: str = ""  # why the run stopped before max_iters, if it did
    eval_pending: bool = False  # a stop cut this step's evaluation short: a resume runs it
    last_eval_step: int | None = None  # the step of the latest finished evaluation
    first_step_s: float | None = None  # the latest start's first step, compilation included
    started_at: float = field(default_factory=time.perf_counter, repr=False, compare=False)

    def begin(self) -> None:
        """A new start of the run (the first or a resume): its wall clock starts now."""
        self.starts += 1
        self.started_at = time.perf_counter()

    @property
    def wall_time(self) -> float:
        return self.wall_seconds + time.perf_counter() - self.started_at

    def record_eval(self, val: float, train: float) -> bool:
        """Note an evaluation; True when the val loss is the best so far (after step 0)."""
        if self.first_val_loss is None:
            self.first_val_loss = val
        self.final_val_loss, self.final_eval_train_loss = val, train
        self.last_eval_step = self.step
        improved = val < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_step = val, self.step
        return improved and self.step > 0

    def summary(self) -> dict[str, Any]:
        best = self.best_val_loss if math.isfinite(self.best_val_loss) else None
        return {
            "best_val_loss": best,
            "best_step": self.best_step if best is not None else None,
            "first_val_loss": self.first_val_loss,
            "final_val_loss": self.final_val_loss,
            "final_eval_train_loss": self.final_eval_train_loss,
            "final_train_loss": self.final_train_loss,
            "iterations": self.step,
            "wall_time_s": round(self.wall_time, 2),
            "mean_tokens_per_sec": self.train_tokens / self.train_seconds
            if self.train_seconds
            else None,
            "starts": self.starts,
            "first_step_s": self.first_step_s,
            "stopped_early": bool(self.stop_reason),
            "stop_reason": self.stop_reason or None,
        }

    def state_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("started_at")
        out["wall_seconds"] = self.wall_time
        out["best_val_loss"] = None if math.isinf(self.best_val_loss) else self.best_val_loss
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key in self.__dataclass_fields__ and key != "started_at":
                setattr(self, key, value)
        if self.best_val_loss is None:
            self.best_val_loss = math.inf
        self.stop_reason = ""  # a resumed run is running again
