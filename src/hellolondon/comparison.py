"""Runs side by side: the settings that differ between them and what each run achieved.

Used by `hellolondon compare`, by the HTML report of several runs and by the sweep's ranking.
Everything is read back from the run folders through `report.rundata`.
"""

from __future__ import annotations

import bisect
import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hellolondon.errors import UserError
from hellolondon.provenance import recorded_data_dir
from hellolondon.report.rundata import RunData, summarize, to_float
from hellolondon.units import fmt_count, fmt_duration, fmt_value

SETTING_SECTIONS = ("model", "train", "data", "tracking", "monitor")
# Settings that differ between any two runs without changing what they compute.
NOT_SETTINGS = {"tracking.run_name", "tracking.notes", "tracking.tags", "tracking.group"}
NOT_SETTINGS |= {"tracking.wandb_mode", "tracking.mode_reason", "out_dir"}
NOT_SETTINGS |= {"tracking.project", "tracking.entity"}
NOT_SETTINGS |= {"tracking.init_timeout", "tracking.log_artifacts"}

# Outcome columns: (column, summary key, better direction: +1 higher is better, -1 lower)
OUTCOMES: tuple[tuple[str, str, int], ...] = (
    ("best val loss", "best_val_loss", -1),
    ("final val loss", "final_val_loss", -1),
    ("best val bpb", "best_val_bpb", -1),
    ("steps to best", "best_val_step", -1),
    ("tokens to best", "tokens_to_best", -1),
    ("tokens/s", "tokens_per_sec", +1),
    ("MFU %", "mfu", +1),
    ("wall time", "wall_time_s", -1),
    ("warnings", "warnings", -1),
    ("errors", "errors", -1),
)


def flat_settings(config: dict[str, Any]) -> dict[str, Any]:
    """`section.name -> value` for every setting of a recorded run config, and the preset."""
    flat: dict[str, Any] = {"preset": config.get("preset")}
    for section in SETTING_SECTIONS:
        for name, value in (config.get(section) or {}).items():
            flat[f"{section}.{name}"] = value
    # the data folder as the run resolved it: work/data and /home/me/work/data are one folder
    if "data.data_dir" in flat and (where := recorded_data_dir(config)):
        flat["data.data_dir"] = str(Path(where).resolve())
    return flat


def differing(runs: list[RunData], always: list[str] = ()) -> list[str]:
    """Settings whose values are not the same in every run, in config order (runs without a
    readable config are left out: they would make every setting differ); `always` (a sweep's
    parameters) come first, differing or not."""
    flats = [flat_settings(r.config) for r in runs if r.config]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return list(always) + [
        k
        for k in keys
        if k not in NOT_SETTINGS
        and k not in always
        and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1
    ]


def _mean(values: list[float]) -> float | None:
    values = values[1:] or values  # the first row carries start-up and compilation
    return sum(values) / len(values) if values else None


def _tokens_at(run: RunData, step: int | None, per_step: float | None) -> float | None:
    """Training tokens seen by `step`: `train/tokens_seen` where a row logged it (right across
    a resume that changed the batch), else counted on from the last row before it at the
    latest tokens per step."""
    if step is None:
        return None
    steps, seen = run.series("train/tokens_seen")
    i = bisect.bisect_right(steps, step) - 1  # the last row at or before it
    if i >= 0:
        return seen[i] + (step - steps[i]) * (per_step or 0)
    return per_step * step if per_step else (0 if step == 0 else None)


def outcomes(run: RunData) -> dict[str, Any]:
    """The numbers behind the outcome columns (None where the run did not record them)."""
    row = summarize(run)
    v_steps, vals = run.series("eval/val_loss")
    best = min(vals) if vals else row["best_val_loss"]
    best_step = v_steps[vals.index(min(vals))] if vals else row["best_val_step"]
    per_step = to_float((run.config.get("hardware") or {}).get("tokens_per_step"))
    bpb = run.series("eval/val_bpb")[1]
    return {
        "status": row["status"],
        "iterations": row["iterations"],
        "best_val_loss": best,
        "final_val_loss": vals[-1] if vals else to_float(run.summary.get("final_val_loss")),
        "best_val_bpb": min(bpb) if bpb else None,
        "best_val_step": best_step,
        "tokens_to_best": _tokens_at(run, best_step, per_step),
        "tokens_per_sec": row["tokens_per_sec"],
        "mfu": _mean(run.series("train/mfu")[1]),
        "wall_time_s": row["wall_time_s"],
        "warnings": row["warnings"],
        "errors": row["errors"],
    }


def metric_best(run: RunData, metric: str, goal: str = "minimize") -> float | None:
    """The best value a run logged for `metric`, or its summary value."""
    values = run.series(metric)[1]
    summary = to_float(run.summary.get(metric))
    values = values + ([summary] if summary is not None else [])
    if not values:
        return None
    return max(values) if goal == "maximize" else min(values)


def metric_final(run: RunData, metric: str) -> float | None:
    """A metric's value as W&B's run summary holds it, which a sweep on W&B's servers ranks
    and searches by: the value the run's summary set, else the last one it logged."""
    summary = to_float(run.summary.get(metric))
    if summary is not None:
        return summary
    values = run.series(metric)[1]
    return values[-1] if values else None


@dataclass
class Comparison:
    settings: list[str]  # the differing settings, as columns
    runs: list[RunData]
    outcomes: list[dict[str, Any]]
    extra: str | None = None  # one more outcome column: a sweep's metric
    extra_goal: str = "minimize"
    extra_final: bool = False  # that column as W&B's summary holds it, not the best logged

    def extra_value(self, run: RunData) -> float | None:
        if self.extra_final:
            return metric_final(run, self.extra)
        return metric_best(run, self.extra, self.extra_goal)

    @property
    def columns(self) -> list[str]:
        kind = "final, " if self.extra_final else ""
        extra = [f"{self.extra} ({kind}{self.extra_goal[:3]})"] if self.extra else []
        return ["run", *self.settings, "status", *extra, *(c for c, _, _ in OUTCOMES)]

    def values(self, i: int) -> dict[str, Any]:
        """Column -> raw value for run `i`."""
        settings = flat_settings(self.runs[i].config)
        out: dict[str, Any] = {"run": self.runs[i].name}
        out |= {k: settings.get(k) for k in self.settings}
        out["status"] = self.outcomes[i]["status"]
        if self.extra:
            out[self.columns[len(self.settings) + 2]] = self.extra_value(self.runs[i])
        out |= {col: self.outcomes[i][key] for col, key, _ in OUTCOMES}
        return out

    def sort(self, column: str | None) -> None:
        if column is not None and not column.strip():
            raise UserError(f"--sort is blank; give one of the columns: {', '.join(self.columns)}")
        if column is None:
            column = self.columns[len(self.settings) + 2] if self.extra else "best val loss"
        col = _match_column(column, self.columns)
        sign = _direction(col, self.extra_goal)
        rows = list(range(len(self.runs)))

        def key(i: int) -> tuple:
            v = self.values(i)[col]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return (1, 0, "")
            if isinstance(v, int | float) and not isinstance(v, bool):
                return (0, -sign * v, "")
            return (0, 0, json.dumps(v, sort_keys=True))

        order = sorted(rows, key=key)
        self.runs = [self.runs[i] for i in order]
        self.outcomes = [self.outcomes[i] for i in order]

    def cells(self) -> list[dict[str, str]]:
        return [{c: _cell(c, v) for c, v in self.values(i).items()} for i in range(len(self.runs))]

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "runs": [
                {
                    "run": r.name,
                    "path": str(r.path),
                    "settings": {k: flat_settings(r.config).get(k) for k in self.settings},
                    "outcomes": self.outcomes[i]
                    | ({self.extra: self.extra_value(r)} if self.extra else {}),
                }
                for i, r in enumerate(self.runs)
            ],
        }

    def text(self) -> str:
        cells = self.cells()
        widths = {c: max(len(c), *(len(row[c]) for row in cells)) for c in self.columns}
        lines = ["  ".join(c.ljust(widths[c]) for c in self.columns)]
        lines += ["  ".join(row[c].ljust(widths[c]) for c in self.columns) for row in cells]
        return "\n".join(line.rstrip() for line in lines)


def _direction(column: str, goal: str) -> int:
    for col, _, sign in OUTCOMES:
        if col == column:
            return sign
    if column.endswith("(max)"):
        return +1
    if column.endswith("(min)"):
        return -1
    return -1  # settings and text: ascending


def _match_column(column: str, columns: list[str]) -> str:
    lowered = {c.lower(): c for c in columns}
    if column.lower() in lowered:
        return lowered[column.lower()]
    starts = [c for c in columns if c.lower().startswith(column.lower())]
    if len(starts) == 1:
        return starts[0]
    if starts:
        raise UserError(
            f"--sort {column!r} could be any of: {', '.join(starts)}; give more of the name"
        )
    hint = difflib.get_close_matches(column, columns, n=1)
    raise UserError(
        f"no column {column!r} to sort by"
        + (f"; did you mean {hint[0]!r}?" if hint else f"; columns: {', '.join(columns)}")
    )


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "wall time":
        return fmt_duration(value)
    if column in ("tokens to best", "tokens/s"):
        return fmt_count(value)
    if column == "MFU %":
        return f"{value:.1f}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):  # a measured outcome, rounded; a setting, exactly as set
        is_outcome = "loss" in column or "bpb" in column or "(" in column
        return fmt_value(value) if is_outcome else repr(value)
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def compare(
    runs: list[RunData],
    sort: str | None = None,
    metric: str | None = None,
    goal: str = "minimize",
    final: bool = False,
    settings: list[str] = (),
) -> Comparison:
    """The comparison of `runs`, sorted by `sort` (a column name; default: the best first by
    `metric`, else by best val loss). `final`: the metric as W&B's summary holds it (a
    sweep's objective), not its best logged value. `settings`: columns shown even where every
    run has the same value (a sweep's parameters)."""
    if goal == "minimize" and metric == ("final_val_loss" if final else "best_val_loss"):
        metric = None  # a column already is that metric
    if goal == "minimize" and metric == "eval/val_loss":
        metric = None
        if sort is None:
            sort = "final val loss" if final else None
    table = Comparison(
        differing(runs, settings), list(runs), [outcomes(r) for r in runs], metric, goal, final
    )
    table.sort(sort)
    return table
