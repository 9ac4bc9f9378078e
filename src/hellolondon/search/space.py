"""A sweep file in W&B's format, checked against W&B's own schema and against our settings.

The same YAML drives `wandb agent` (online) and `hellolondon sweep` (offline). Its `command:`
runs our trainer with the trial's values as `key=value` settings:

    command: [${env}, ${interpreter}, -m, hellolondon, train, --preset, slm, ${args_no_hyphens}]

Everything a sweep could get wrong is found here, before any trial starts: the engine's schema,
a parameter that is not a setting (with the closest one), a distribution whose values the
setting's type cannot take, an empty grid, bounds the config refuses, a metric that training
never logs, and a command line that is not `hellolondon train`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hellolondon.config import SECTIONS, RunConfig, build_config
from hellolondon.errors import UserError

INSTALL_HINT = (
    "the offline sweep needs W&B's sweep engine (the `sweeps` package), which is not installed; "
    "install it with: pip install 'hellolondon[sweep]' && pip install --no-deps sweeps==0.3.0 "
    "(`bash scripts/setup.sh --dev` does both)"
)

# What training writes for every run: each logged row's keys, then the summary's.
LOGGED_METRICS = (
    "train/loss", "train/lr", "train/iter", "train/dt_ms", "train/steps_per_sec",
    "train/tokens_per_sec", "train/tokens_per_sec_per_gpu", "train/samples_per_sec",
    "train/tokens_seen", "train/epoch", "train/epoch_time_s", "train/grad_norm", "train/tflops",
    "train/tflops_per_gpu", "train/mfu", "eval/train_loss", "eval/val_loss", "eval/val_ppl",
    "eval/iter",
)  # fmt: skip
SUMMARY_METRICS = (
    "best_val_loss", "final_val_loss", "final_train_loss", "final_eval_train_loss",
    "first_val_loss", "mean_tokens_per_sec", "iterations", "tokens_seen", "wall_time_s",
)  # fmt: skip
EVAL_METRICS = {m for m in LOGGED_METRICS + SUMMARY_METRICS if "val" in m or m.startswith("eval/")}

INT_DISTRIBUTIONS = {"int_uniform"}
FLOAT_DISTRIBUTIONS = {
    "uniform", "log_uniform", "log_uniform_values", "inv_log_uniform", "inv_log_uniform_values",
    "q_uniform", "q_log_uniform", "q_log_uniform_values", "normal", "q_normal", "log_normal",
    "q_log_normal", "beta", "q_beta",
}  # fmt: skip
INT_VALUES_CHECKED = 1024  # an int_uniform range up to this size is checked value by value
NORMAL_DISTRIBUTIONS = {"normal", "q_normal", "log_normal", "q_log_normal"}
MACRO_ARGS = "${args_no_hyphens}"
TRIAL_FLAGS = ("--run-name", "--group", "--out-dir", "--resume")  # the sweep sets these
# the settings two of those flags make: a trial's values come last and would win over them,
# which would put every trial under one name (out_dir is no parameter: it is no config key)
SET_BY_SWEEP = {"tracking.run_name": "--run-name", "tracking.group": "--group"}


def import_engine() -> Any:
    """W&B's `sweeps` package, quietly (it still declares pydantic 1 options)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="pydantic")
        warnings.filterwarnings("ignore", message=".*config keys have changed.*")
        try:
            import sweeps
        except ImportError:
            raise UserError(INSTALL_HINT) from None
    return sweeps


@dataclass
class SweepSpec:
    source: str  # the file, for messages
    text: str  # the file as given
    config: dict[str, Any]  # the engine's filled-in config
    name: str
    fixed: list[str]  # our train flags and settings from `command:`, in order
    base: RunConfig  # the settings every trial starts from (the fixed part)
    params: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (section, field)

    @property
    def method(self) -> str:
        return str(self.config["method"])

    @property
    def metric(self) -> str | None:
        return (self.config.get("metric") or {}).get("name")

    @property
    def goal(self) -> str:
        return (self.config.get("metric") or {}).get("goal") or "minimize"

    @property
    def early_terminate(self) -> bool:
        return bool(self.config.get("early_terminate"))


def read_spec(path: str | Path) -> tuple[str, dict[str, Any]]:
    import yaml

    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"{path} is a folder, not a sweep file; give the sweep's YAML file (docs/tracking.md, Sweeps)"
        )
    if not path.is_file():
        raise UserError(f"sweep file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a sweep: not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = (
            getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        )
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        lines = text.splitlines()
        line = lines[mark.line] if mark and mark.line < len(lines) else ""
        if "${" in line and "[" in line:  # W&B's macros read as YAML mappings in a [...] list
            where += '; in a [...] list quote each macro ("${env}"), or write the list as lines'
        raise UserError(f"{path} is not valid YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a sweep: expected a mapping with method and parameters")
    return text, data


def _one_line(text: str) -> str:
    """The lines of a message as one line, each said once (the schema repeats some)."""
    lines = (line.strip() for line in str(text).splitlines() if line.strip())
    return "; ".join(dict.fromkeys(lines))


def engine_config(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The YAML as W&B's engine fills it in (distributions, defaults); its schema errors in one
    line. An empty list of values is named here, as an empty grid, before the schema speaks."""
    for name, p in (data.get("parameters") or {}).items():
        if isinstance(p, dict) and "values" in p and not p["values"]:
            what = "an empty grid" if data.get("method") == "grid" else "nothing to choose"
            raise UserError(f"{source}: parameter {name!r} has no values ({what})")
    sweeps = import_engine()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            filled = dict(sweeps.SweepConfig(data))
    except Exception as exc:  # jsonschema.ValidationError, ValueError
        raise UserError(f"{source}: W&B's sweep schema rejects it: {_one_line(exc)}") from None
    return filled


def _known_keys() -> list[str]:
    cfg = RunConfig()
    return [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(cfg, s))]


def resolve_parameter(name: str, source: str) -> tuple[str, str]:
    """(section, field) of a parameter; it must name one setting exactly (section.field)."""
    known = _known_keys()
    if name in known:
        section, fname = name.split(".", 1)
        return section, fname
    if name == "preset":
        raise UserError(
            f"{source}: parameter 'preset' is not a setting: the trials share the preset of the "
            "sweep's command (--preset NAME); sweep the shape's settings (model.n_layer, ...) "
            "instead"
        )
    owners = [k for k in known if k.split(".", 1)[1] == name]
    if len(owners) == 1:  # `lr` for train.lr: the trainer takes it, but say it whole
        raise UserError(f"{source}: parameter {name!r}: write the setting whole, {owners[0]!r}")
    hint = difflib.get_close_matches(name, known, n=1, cutoff=0.6) or difflib.get_close_matches(
        name.split(".")[-1], [k.split(".", 1)[1] for k in known], n=1
    )
    if hint and "." not in hint[0]:
        hint = [next(k for k in known if k.endswith("." + hint[0]))]
    more = f"; did you mean {hint[0]}?" if hint else "; see `hellolondon config` for every key"
    raise UserError(f"{source}: parameter {name!r} is not a config key{more}")


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list"}.get(
        type(value), type(value).__name__
    )


def _fits(value: Any, current: Any) -> bool:
    """Can a value the engine proposes be this setting, without a change of type?"""
    if isinstance(current, bool):
        return isinstance(value, bool)
    if isinstance(current, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(current, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(current, str):  # YAML's true/false for auto|true|false: the settings' checks
        return isinstance(value, str | bool)  # decide, as on the command line (True -> "true")
    if isinstance(current, list):
        return isinstance(value, str)
    return False


def _bounds(p: dict[str, Any]) -> list[Any]:
    """Values at the ends of a distribution's range, to try against the config's checks."""
    dist = p.get("distribution")
    if dist == "int_uniform" and p["max"] - p["min"] < INT_VALUES_CHECKED:
        return list(range(p["min"], p["max"] + 1))  # every one: n_head=3 of 1-4 may not divide
    if dist in (
        "uniform",
        "int_uniform",
        "q_uniform",
        "log_uniform_values",
        "q_log_uniform_values",
    ):
        return [p["min"], p["max"]]
    if dist in ("log_uniform", "q_log_uniform"):
        return [math.exp(p["min"]), math.exp(p["max"])]
    if dist == "inv_log_uniform_values":
        return [p["min"], p["max"]]
    if dist == "inv_log_uniform":
        return [math.exp(-p["max"]), math.exp(-p["min"])]
    if dist in ("beta", "q_beta"):
        return [0.0, 1.0]
    if dist in NORMAL_DISTRIBUTIONS:  # unbounded: the values 3 sigma out, proposed now and then
        low, high = p["mu"] - 3 * p["sigma"], p["mu"] + 3 * p["sigma"]
        return [math.exp(low), math.exp(high)] if "log" in dist else [low, high]
    return []


def check_parameter(name: str, p: dict[str, Any], section: str, fname: str, source: str):
    """The distribution must propose values of the setting's type."""
    current = getattr(getattr(RunConfig(), section), fname)
    kind = _type_name(current)
    dist = p.get("distribution")
    if dist in ("categorical", "constant"):
        values = p["values"] if dist == "categorical" else [p.get("value")]
        for v in values:
            if not _fits(v, current):
                raise UserError(
                    f"{source}: parameter {name!r} is a {kind} setting, but {dist} value "
                    f"{v!r} is a {_type_name(v)}"
                )
        return values
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise UserError(
            f"{source}: parameter {name!r} is a {kind} setting; a {dist} distribution cannot "
            f"give one (list its choices under values:)"
        )
    if isinstance(current, int) and dist not in INT_DISTRIBUTIONS:
        raise UserError(
            f"{source}: parameter {name!r} is an int setting, but {dist} gives floats; use "
            f"int_uniform (integer min and max) or values:"
        )
    if isinstance(current, float) and dist not in FLOAT_DISTRIBUTIONS | INT_DISTRIBUTIONS:
        raise UserError(f"{source}: parameter {name!r}: distribution {dist} is not supported")
    return _bounds(p)


def parse_fixed(fixed: list[str], source: str) -> RunConfig:
    """The settings of `hellolondon train <fixed>`, as the trainer itself would read them."""
    from hellolondon.cli import parse_command_line
    from hellolondon.cli.train_command import config_from_args

    for flag in TRIAL_FLAGS:
        if any(a == flag or a.startswith(flag + "=") for a in fixed):
            raise UserError(f"{source}: leave {flag} out of command:; the sweep sets it per trial")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parse_command_line(["train", *fixed])
    except SystemExit:
        last = err.getvalue().strip().splitlines()[-1:] or ["cannot parse"]
        raise UserError(
            f"{source}: command: is not a valid `hellolondon train` line: {last[0]}"
        ) from None
    assert isinstance(args, argparse.Namespace)
    try:
        return config_from_args(args)
    except UserError as exc:  # a setting in command: (model.n_layr=2): said with the file
        raise UserError(f"{source}: command: {exc}") from None


def check_not_set_by_sweep(name: str, spec_source: str) -> None:
    """A parameter for a setting the sweep gives each trial itself (its run name and group)."""
    if name in SET_BY_SWEEP:
        raise UserError(
            f"{spec_source}: parameter {name!r} is set by the sweep for each trial "
            f"({SET_BY_SWEEP[name]}); leave it out of parameters:"
        )


def split_command(command: Any, source: str) -> list[str]:
    """The fixed `hellolondon train` flags in `command:`; the command must run our trainer and
    pass the trial's values with ${args_no_hyphens}."""
    example = "[${env}, ${interpreter}, -m, hellolondon, train, ..., ${args_no_hyphens}]"
    if not isinstance(command, list) or not command:
        raise UserError(f"{source}: the sweep needs a command: list such as {example}")
    tokens = [str(t) for t in command]
    if MACRO_ARGS not in tokens:
        raise UserError(f"{source}: command: must pass the values with {MACRO_ARGS} ({example})")
    other = [t for t in tokens if t.startswith("${") and t not in ("${env}", "${interpreter}")]
    other = [t for t in other if t != MACRO_ARGS]
    if other:
        raise UserError(
            f"{source}: command: uses {other[0]}; our trainer takes key=value settings, so use "
            f"{MACRO_ARGS}"
        )
    for i in range(len(tokens) - 2):
        if tokens[i : i + 3] == ["-m", "hellolondon", "train"]:
            return [t for t in tokens[i + 3 :] if t != MACRO_ARGS]
    raise UserError(f"{source}: command: must run `-m hellolondon train` ({example})")


def check_metric(spec: SweepSpec) -> None:
    metric = spec.metric
    if metric is None:
        if spec.method == "bayes":
            raise UserError(f"{spec.source}: method bayes needs metric: name and goal")
        if spec.early_terminate:
            raise UserError(f"{spec.source}: early_terminate needs metric: name and goal")
        return
    if metric not in LOGGED_METRICS + SUMMARY_METRICS:
        hint = difflib.get_close_matches(metric, LOGGED_METRICS + SUMMARY_METRICS, n=1)
        more = f"; did you mean {hint[0]}?" if hint else ""
        raise UserError(f"{spec.source}: training never logs metric {metric!r}{more}")
    if spec.early_terminate and metric not in LOGGED_METRICS:
        hint = "eval/val_loss" if "val" in metric else "train/loss"
        raise UserError(
            f"{spec.source}: early_terminate judges the metric as training logs it, but "
            f"{metric!r} is written only once, at the end; use {hint}"
        )
    if metric in EVAL_METRICS and spec.base.train.eval_interval == 0:
        raise UserError(
            f"{spec.source}: metric {metric!r} comes from evaluations, but train.eval_interval=0 "
            "turns them off"
        )


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; see the module docstring. Raises UserError, one line."""
    source = str(path)
    text, data = read_spec(path)
    params = data.get("parameters")
    if not isinstance(params, dict) or not params:
        raise UserError(f"{source}: the sweep has no parameters")
    for name, p in params.items():
        if isinstance(p, dict) and "parameters" in p:
            raise UserError(
                f"{source}: parameter {name!r} is nested; write each setting as one dotted name "
                "(train.lr)"
            )
    resolved = {name: resolve_parameter(str(name), source) for name in params}
    filled = engine_config(data, source)
    fixed = split_command(data.get("command"), source)
    base = parse_fixed(fixed, source)
    name = str(data.get("name") or Path(path).stem)
    if any(c in name for c in "/\\"):
        raise UserError(
            f"{source}: name {name!r} names the sweep's folder and its trials' run folders "
            "(<name>-001 ...): no / or \\"
        )
    spec = SweepSpec(source, text, filled, name, fixed, base, resolved)
    for pname, (section, fname) in resolved.items():
        check_not_set_by_sweep(pname, source)
        values = check_parameter(pname, filled["parameters"][pname], section, fname, source)
        dist = filled["parameters"][pname].get("distribution")
        for v in values:  # the config's own checks on each choice and each end of a range
            try:
                build_config(base=base, overrides=[f"{pname}={v}"])
            except UserError as exc:
                what = f"value {v!r}"
                if dist in NORMAL_DISTRIBUTIONS:
                    what = f"{dist} proposes values such as {v:.4g} (mu ± 3 sigma)"
                raise UserError(f"{source}: parameter {pname!r} {what}: {exc}") from None
    check_metric(spec)
    _check_engine_runs(spec)
    return spec


def _check_engine_runs(spec: SweepSpec) -> None:
    """Ask the engine for a first proposal (and, with early_terminate, a stopping decision), so
    that what only it knows (grid needs discrete values, hyperband its bands) fails now."""
    sweeps = import_engine()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sweeps.next_run(spec.config, [])
            if spec.early_terminate:
                sweeps.stop_runs(spec.config, [])
    except Exception as exc:
        raise UserError(f"{spec.source}: W&B's sweep engine rejects it: {_one_line(exc)}") from None


def plain(value: Any) -> Any:
    """A value from the engine as a plain Python value (it proposes numpy numbers)."""
    return value.item() if hasattr(value, "item") else value


def settings_args(values: dict[str, Any]) -> list[str]:
    """The trial's values as `${args_no_hyphens}` gives them: `name=value`, in order."""
    return [f"{k}={plain(v)}" for k, v in values.items()]


def agent_command(command: list[Any], values: dict[str, Any]) -> list[str]:
    """The command line `wandb agent` runs for a trial, built with W&B's own helpers where the
    installed wandb has them (the online path, without a network)."""
    args = {k: {"value": plain(v)} for k, v in values.items()}
    try:
        from wandb.sdk.launch.sweeps import utils

        macros = utils.create_sweep_command_args({"args": args})
        command = utils.create_sweep_command([str(c) for c in command])
    except Exception:
        macros = {"args_no_hyphens": settings_args(values)}
    macros |= {"interpreter": ["python"], "env": ["/usr/bin/env"]}
    out: list[str] = []
    for c in map(str, command):
        if c.startswith("${") and c.endswith("}"):
            out += macros.get(c[2:-1]) or []
        else:
            out.append(c)
    return out
