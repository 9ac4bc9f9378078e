"""The sweep folder: the one module that knows its layout.

<sweep folder>/
    sweep.yaml      the sweep file as given (a resumed sweep must be the same sweep)
    trials.json     every proposed trial: name, values, state, the engine's notes
    trials/         the trials' run folders, ordinary ones (`report`, `compare` read them)
    logs/           each trial's console output
    ranking.txt     the ranked table at the end (ranking.json: the same as JSON)
    .lock           the process id of the sweep running here (held while it runs)
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hellolondon.errors import UserError
from hellolondon.files import atomic_write, exclusive_lock

# finished: trained to the end; stopped: ended early by the sweep's early_terminate;
# failed: the trainer exited with an error; killed: ended by a signal of its own (the OOM
# killer, a `kill`, a second Ctrl-C that aborted it), resumed when the sweep runs again;
# running: started, not known to have ended
STATES = ("running", "finished", "stopped", "killed", "failed")


@dataclass
class Trial:
    name: str
    values: dict[str, Any]
    state: str = "running"
    search_info: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    note: str = ""
    pid: int | None = None  # the trial's process while it runs


class SweepFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def trials_dir(self) -> Path:
        return self.path / "trials"

    def trial_dir(self, trial: Trial) -> Path:
        return self.trials_dir / trial.name

    @classmethod
    def of_trial(cls, run: str | Path) -> SweepFolder | None:
        """The sweep whose trial `run` is, or None for a run of its own."""
        folder = cls(Path(run).resolve().parent.parent)
        return (
            folder if folder.exists() and Path(run).resolve().parent == folder.trials_dir else None
        )

    def log_path(self, trial: Trial) -> Path:
        return self.path / "logs" / f"{trial.name}.log"

    @property
    def _spec(self) -> Path:
        return self.path / "sweep.yaml"

    @property
    def _trials(self) -> Path:
        return self.path / "trials.json"

    def exists(self) -> bool:
        return self._spec.is_file()

    def check_or_create(self, spec_text: str) -> bool:
        """True when the folder already holds this very sweep (a resume); creates it when new.
        A folder with other content or another sweep is refused. sweep.yaml is created
        exclusively, so of two sweeps started at once on a new folder one is refused."""
        if not self._spec.is_file() and self._create(spec_text):
            return False
        stored = self._spec.read_text(encoding="utf-8")
        if not _reads_as_yaml(stored):
            raise UserError(
                f"{self._spec} is not valid YAML (damaged?); the sweep cannot resume: restore it "
                "(a copy of the sweep file it was started with), or choose another --out-dir"
            )
        if not _same_sweep(stored, spec_text):
            raise UserError(
                f"{self.path} holds another sweep (its sweep.yaml differs); "
                "choose another --out-dir, or give the same sweep file to resume it"
            )
        return True

    def _create(self, spec_text: str) -> bool:
        """Make a new sweep folder; False when another process made it first."""
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            if self._spec.is_file():
                return False
            raise UserError(
                f"{self.path} exists and is not a sweep folder; choose another --out-dir"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self._spec, "x", encoding="utf-8") as f:  # never over another sweep's
                f.write(spec_text)
        except FileExistsError:
            return False
        except OSError as exc:
            raise UserError(f"cannot write the sweep folder {self.path} ({exc.strerror})") from None
        return True

    def load(self) -> list[Trial]:
        """The trials of trials.json; refused when it cannot be read, or when trials/ holds a
        trial folder it does not list (trials.json deleted, or an older copy put back): a new
        trial of that name would go on with that folder's run under other values."""
        trials = []
        if self._trials.is_file():
            try:
                trials = _trials_of(json.loads(self._trials.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                raise UserError(
                    f"{self._trials} cannot be read; the sweep cannot resume: restore it, or "
                    "move the sweep folder away to start the sweep again"
                ) from None
        listed = {t.name for t in trials}
        unlisted = sorted(p.name for p in _folders(self.trials_dir) if p.name not in listed)
        if unlisted:
            what = "is missing" if not self._trials.is_file() else "does not list them"
            raise UserError(
                f"{self.trials_dir} holds trials ({', '.join(unlisted[:3])}"
                f"{', ...' if len(unlisted) > 3 else ''}) and {self._trials} {what}; the sweep "
                "cannot resume: restore trials.json, or move the sweep folder away to start the "
                "sweep again"
            )
        return trials

    def save(self, trials: list[Trial]) -> None:
        """Atomically: a sweep killed mid-write keeps the previous list."""
        atomic_write(
            self._trials,
            json.dumps({"trials": [asdict(t) for t in trials]}, indent=1, default=str),
        )

    def write_ranking(self, text: str, data: dict[str, Any]) -> tuple[Path, Path]:
        """Atomically, each file: a sweep killed mid-write keeps the previous ranking."""
        txt, js = self.path / "ranking.txt", self.path / "ranking.json"
        atomic_write(txt, text + "\n")
        atomic_write(js, json.dumps(data, indent=1, default=str))
        return txt, js

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """One sweep process per folder: a second one is refused while the first lives."""
        return exclusive_lock(
            self.path / ".lock",
            lambda pid: UserError(f"sweep {self.path} is already running (process {pid})"),
        )


def _folders(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:  # no trials yet
        return []


def _trials_of(data: Any) -> list[Trial]:
    """The trials of trials.json as `save` writes it; TypeError for anything else (a file
    edited by hand, or another program's)."""
    if not isinstance(data, dict) or not isinstance(data.get("trials", []), list):
        raise TypeError("not a list of trials")
    trials = [Trial(**t) if isinstance(t, dict) else None for t in data.get("trials", [])]
    if not all(_well_formed(t) for t in trials):
        raise TypeError("a trial of another shape")
    return trials


def _well_formed(trial: Trial | None) -> bool:
    return (
        trial is not None
        and isinstance(trial.name, str)
        and isinstance(trial.values, dict)
        and trial.state in STATES
    )


def _reads_as_yaml(text: str) -> bool:
    import yaml

    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return True


def _same_sweep(stored: str, given: str) -> bool:
    """The same sweep when the YAML means the same: comments and layout may differ."""
    import yaml

    if stored == given:
        return True
    try:
        return yaml.safe_load(stored) == yaml.safe_load(given)
    except yaml.YAMLError:
        return False
