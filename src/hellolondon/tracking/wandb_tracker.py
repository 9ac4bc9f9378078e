"""Weights & Biases beside the local log: offline-first, never a prompt, never a hang.

Start-up decides the mode before W&B is touched: `disabled` imports nothing; no credentials means
offline; with credentials one small request checks the key, the network and the permissions
before `wandb.init` gets the rest of a fixed budget (`tracking.init_timeout`, 15 s). Any failure
on the way falls back to offline with one line naming the cause, and a failure mid-run turns W&B
off with one line: `metrics.jsonl` holds every row whatever W&B does.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets as _random
import shlex
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hellolondon.config import RunConfig
from hellolondon.tracking.history import read_jsonl
from hellolondon.tracking.secrets import remember_secret, scrub, scrub_row, scrub_text

DEFAULT_PROJECT = "helloLondon"
DEFAULT_TAGS = ("london", "historical", "llm", "gpt2", "1500-1850")
DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_MAX_S = 4.0  # the key/network check gets at most this much of the start-up budget
# Kept back from wandb.init for the fallback: tearing down a failed online start takes ~2 s when
# the server hangs, starting offline ~1 s.
FALLBACK_RESERVE_S = 5.0
FINISH_TIMEOUT_S = 120.0  # upload at the end waits this long; the rest stays for `wandb sync`
STATE_FILE = "tracking.json"  # what `hellolondon runs` reads: run id, mode, sync command
LEVELS = {"INFO": "INFO", "WARN": "WARN", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "ERROR"}
Console = Callable[[str], Any]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class WandbOptions:
    """Everything W&B start-up needs, resolved from the config first and the environment second."""

    mode: str  # online|offline|disabled as asked; "" when nobody asked
    mode_source: str  # where the mode came from, for the console line
    project: str
    entity: str | None
    name: str
    tags: list[str]
    notes: str | None = None
    group: str | None = None
    log_artifacts: bool = False
    init_timeout: float = 15.0
    alert_wait_s: int = 300
    debug: bool = False
    base_url: str = ""  # WANDB_BASE_URL, else what `wandb login --host` stored, else W&B's cloud
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: RunConfig, run_dir: Path) -> WandbOptions:
        t = cfg.tracking
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        env_mode = {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
        if t.wandb_mode:
            mode, source = t.wandb_mode, "tracking.wandb_mode"
        elif env_mode in ("online", "offline", "disabled"):
            mode, source = env_mode, "WANDB_MODE"
        else:
            mode, source = "", ""
        env_tags = [s.strip() for s in os.environ.get("WANDB_TAGS", "").split(",") if s.strip()]
        tags = list(dict.fromkeys([*DEFAULT_TAGS, cfg.preset, *t.tags, *env_tags]))
        return cls(
            mode=mode,
            mode_source=source,
            project=t.project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            entity=t.entity or os.environ.get("WANDB_ENTITY") or None,
            name=t.run_name or run_dir.name,
            tags=tags,
            notes=t.notes or None,
            group=t.group or None,
            log_artifacts=t.log_artifacts,
            init_timeout=float(t.init_timeout),
            alert_wait_s=int(cfg.monitor.alert_wait_s),
            debug=_env_flag("WANDB_DEBUG"),
            base_url=os.environ.get("WANDB_BASE_URL", "").rstrip("/"),
        )


# ---------------------------------------------------------------------------- credentials


@dataclass
class Credentials:
    api_key: str | None  # None for an identity-token login, which the probe cannot check
    source: str


def find_credentials(base_url: str) -> tuple[Credentials | None, str | None]:
    """(credentials, problem) from the environment or a stored `wandb login`, with no network.
    A key that is there but malformed is a problem: W&B would refuse it anyway."""
    key = os.environ.get("WANDB_API_KEY", "").strip()
    source = "WANDB_API_KEY"
    if not key and os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return Credentials(None, "WANDB_IDENTITY_TOKEN_FILE"), None
    if not key:
        key, source = _stored_key(base_url), "wandb login"
    if not key:
        return None, None
    remember_secret(key)
    problem = _key_format_problem(key)
    if problem:
        return None, f"API key from {source} rejected: {problem}"
    return Credentials(key, source), None


def _stored_key(base_url: str) -> str | None:
    """The key `wandb login` saved for this host (in ~/.netrc), if any."""
    try:
        from wandb.sdk.lib import wbauth

        return wbauth.read_netrc_auth(host=base_url)
    except ImportError:
        import netrc
        from urllib.parse import urlparse

        try:
            found = netrc.netrc(os.environ.get("NETRC")).authenticators(
                urlparse(base_url).hostname or ""
            )
        except (OSError, netrc.NetrcParseError):
            return None
        return found[2] if found else None
    except Exception:  # a malformed entry: W&B itself would stop on it
        return None


def _key_format_problem(key: str) -> str | None:
    try:
        from wandb.sdk.lib.wbauth import check_api_key
    except ImportError:
        return None
    return check_api_key(key)


# ---------------------------------------------------------------------------- causes


def probe(base_url: str, api_key: str, timeout: float) -> str | None:
    """One small authenticated request to the W&B API. Returns the cause of failure in the
    words of the seed's troubleshooting list, or None when the key and network are fine."""
    query = json.dumps({"query": "query Viewer { viewer { id username entity } }"}).encode()
    auth = base64.b64encode(f"api:{api_key}".encode()).decode()
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=query,
        headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            data = json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return http_cause(exc.code, exc.reason, base_url)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return f"network: no answer from {base_url} within {timeout:.0f} s"
        return f"network: cannot reach {base_url} ({_reason_text(reason)})"
    except ValueError:
        return None  # not JSON: let wandb.init judge
    if (
        isinstance(data, dict)
        and isinstance(data.get("data"), dict)
        and not data["data"].get("viewer")
    ):
        return f"API key rejected by {base_url} (no user has this key): check WANDB_API_KEY"
    return None


def _reason_text(reason: Any) -> str:
    text = getattr(reason, "strerror", None) or str(reason)
    return text.lower() if isinstance(text, str) else str(reason)


def http_cause(code: int, reason: str, base_url: str) -> str:
    if code == 401:
        return f"API key rejected ({code} {reason}): check WANDB_API_KEY or run `wandb login --relogin`"
    if code == 403:
        return (
            f"permission denied ({code} {reason}): check the API key's permissions and the entity"
        )
    if code == 404:
        return f"project not found ({code} {reason} at {base_url}): create it in the W&B dashboard, or check the entity and WANDB_BASE_URL"
    return f"server error: {base_url} answered {code} {reason}"


def classify(exc: BaseException) -> str:
    """The cause of a failed `wandb.init`, from its message (W&B gives no status code)."""
    message = scrub_text(
        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    )
    text = message.lower()
    detail = f" ({message[:200]})"
    if "not found" in text or "404" in text:
        return "project not found: create it in the W&B dashboard or check the entity" + detail
    if any(w in text for w in ("permission", "forbidden", "403", "not authorized")):
        return "permission denied: check the API key's permissions and the entity" + detail
    if any(w in text for w in ("401", "unauthorized", "not logged in", "api key")):
        return "API key rejected: check WANDB_API_KEY or run `wandb login --relogin`" + detail
    network = (
        "timed out",
        "timeout",
        "deadline",
        "refused",
        "dial tcp",
        "no such host",
        "eof",
        "reset",
    )
    if any(w in text for w in network):
        return "network: W&B did not answer in time" + detail
    return "W&B could not start" + detail


# ---------------------------------------------------------------------------- start-up


def new_run_id() -> str:
    """Made here rather than by W&B so that a failed online start and its offline fallback
    (and a later `wandb sync`) share one id."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(_random.choice(alphabet) for _ in range(8))


def _import_wandb() -> Any:
    import wandb

    return wandb


def _quiet_terminal(wandb: Any, debug: bool) -> None:
    """W&B's console lines (credentials loaded, artifact staging, ...) only with WANDB_DEBUG;
    the run's own lines say what matters."""
    if not debug:
        with contextlib.suppress(Exception):
            from wandb.sdk import wandb_setup

            wandb_setup.singleton().settings  # noqa: B018 -- loads them, which resets the terminal
            wandb.termsetup(wandb.Settings(silent=True), None)


def _wandb_base_url(wandb: Any) -> str:
    """The server W&B itself would use (a `wandb login --host` is stored in its settings)."""
    with contextlib.suppress(Exception):
        from wandb.sdk import wandb_setup  # singleton(): settings only, no service process

        return str(wandb_setup.singleton().settings.base_url or DEFAULT_BASE_URL).rstrip("/")
    return DEFAULT_BASE_URL


def choose_mode(opts: WandbOptions) -> tuple[str, str, Credentials | None]:
    """(mode, why, credentials) without any network: what was asked, else what is possible."""
    if opts.mode == "disabled":
        return "disabled", f"{opts.mode_source}=disabled", None
    if opts.mode == "offline":
        return "offline", f"{opts.mode_source}=offline", None
    creds, problem = find_credentials(opts.base_url)
    if problem:
        return "offline", problem, None
    if creds is None:
        return "offline", "API key not found: set WANDB_API_KEY or run `wandb login`", None
    return "online", "", creds


@contextlib.contextmanager
def _argv_scrubbed() -> Iterator[None]:
    """W&B records the command line with the run: keep any secret on it out."""
    saved = sys.argv
    sys.argv = [scrub_text(a) for a in saved]
    try:
        yield
    finally:
        sys.argv = saved


def _settings(wandb: Any, opts: WandbOptions, timeout: float) -> Any:
    wanted = {
        "init_timeout": max(1.0, timeout),
        "silent": not opts.debug,  # our own lines instead; silence also skips a slow lookup
        "finish_timeout": FINISH_TIMEOUT_S,
        "finish_timeout_raises": True,
    }
    known = getattr(wandb.Settings, "model_fields", wanted)  # older W&B: pass what we can
    return wandb.Settings(**{k: v for k, v in wanted.items() if k in known})


def _init(
    wandb: Any, opts: WandbOptions, mode: str, run_id: str, run_dir: Path, timeout: float
) -> Any:
    with _argv_scrubbed():
        return wandb.init(
            project=opts.project,
            entity=opts.entity,
            name=opts.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=mode,
            config=opts.config,
            tags=opts.tags,
            notes=opts.notes,
            group=opts.group,
            job_type="train",
            reinit="create_new",
            settings=_settings(wandb, opts, timeout),
        )


def _quiet_teardown(wandb: Any) -> None:
    """Stop W&B's service after a failure, so that it neither blocks the next start nor prints
    a traceback at exit."""
    with contextlib.suppress(Exception):
        wandb.teardown()


def start_wandb(
    cfg: RunConfig,
    run_dir: Path,
    run_config: dict[str, Any] | None = None,
    resume_run_id: str | None = None,
    console: Console = print,
) -> WandbTracker | None:
    """Open the W&B side of a run, or None when it is disabled or cannot start even offline."""
    t0 = time.monotonic()
    run_dir = Path(run_dir)
    opts = WandbOptions.from_config(cfg, run_dir)
    opts.config = scrub(run_config if run_config is not None else cfg.to_dict())
    if opts.mode == "disabled":  # nothing of W&B is imported, no process started
        console(
            f"wandb: disabled ({opts.mode_source}=disabled); metrics go to {show_path(run_dir / 'metrics.jsonl')} only"
        )
        _write_state(
            run_dir,
            {"mode": "disabled", "reason": f"{opts.mode_source}=disabled", "name": opts.name},
        )
        return None
    # W&B's own error reports go to the same server from exit handlers; when that server hangs
    # they hold the finished process for ~20 s. An explicit WANDB_ERROR_REPORTING still wins.
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    wandb = _import_wandb()
    _quiet_terminal(wandb, opts.debug)
    opts.base_url = opts.base_url or _wandb_base_url(wandb)
    mode, why, creds = choose_mode(opts)
    run_id = resume_run_id or new_run_id()
    segments = segment_dirs(run_dir, run_id)
    if mode == "online" and any(
        s.name.startswith("offline-") and not is_synced(s) for s in segments
    ):
        mode, why = (
            "offline",
            "earlier parts of this run are not synced yet; staying offline so `wandb sync` uploads them in order",
        )
    run = None
    deadline = t0 + opts.init_timeout
    if mode == "online":
        cause = None
        if creds is not None and creds.api_key:
            cause = probe(
                opts.base_url, creds.api_key, min(PROBE_MAX_S, max(1.0, opts.init_timeout / 3))
            )
        if cause is None:
            try:
                run = _init(
                    wandb,
                    opts,
                    "online",
                    run_id,
                    run_dir,
                    deadline - time.monotonic() - FALLBACK_RESERVE_S,
                )
            except Exception as exc:
                cause = classify(exc)
                _quiet_teardown(wandb)
        if run is None:
            mode, why = "offline", f"could not go online: {cause}"
    if run is None:
        try:
            run = _init(
                wandb, opts, "offline", run_id, run_dir, max(5.0, deadline - time.monotonic())
            )
        except Exception as exc:
            _quiet_teardown(wandb)
            console(
                f"wandb: could not start even offline ({classify(exc)}); metrics go to {show_path(run_dir / 'metrics.jsonl')} only"
            )
            _write_state(
                run_dir, {"mode": "failed", "reason": scrub_text(str(exc))[:300], "name": opts.name}
            )
            return None
    tracker = WandbTracker(wandb, run, opts, mode, why, run_dir, console)
    tracker.begin(resumed=resume_run_id is not None, started_s=time.monotonic() - t0)
    return tracker


# ---------------------------------------------------------------------------- the tracker


class WandbTracker:
    """One W&B run. Never raises into the loop: the first W&B failure prints one line and
    turns it off, and the local log carries on."""

    def __init__(
        self,
        wandb: Any,
        run: Any,
        opts: WandbOptions,
        mode: str,
        why: str,
        run_dir: Path,
        console: Console,
    ) -> None:
        self.wandb, self.run, self.opts = wandb, run, opts
        self.mode, self.why = mode, why
        self.run_dir, self.console = Path(run_dir), console
        self.run_id: str | None = run.id
        self.skip_through = -1  # steps W&B already holds from before a restart
        self.replayed_through: int | None = None
        self.status = "running"

    # ---- start

    def begin(self, resumed: bool, started_s: float) -> None:
        self._call(self._define_metrics)
        if self.run is None:
            return
        if resumed:
            self.skip_through = self._last_step_held()
            self._replay_local_rows()
        self._save_state()
        self.console(self._start_line(resumed, started_s))

    def _define_metrics(self) -> None:
        # The seed's panels plot against iterations: train/* (and gpu/*) on train/iter,
        # eval/* on eval/iter, so a train row and an eval row can share a step.
        run = self.run
        run.define_metric("train/iter")
        run.define_metric("train/*", step_metric="train/iter")
        run.define_metric("gpu/*", step_metric="train/iter")
        run.define_metric("eval/iter")
        run.define_metric("eval/*", step_metric="eval/iter")

    def _last_step_held(self) -> int:
        """The last step this run already has in W&B: the server's word online, the earlier
        local parts offline. Rows up to it are not sent again (the local log has them)."""
        if self.mode == "online":
            start = int(getattr(self.run, "starting_step", 0) or 0)
            return start - 1
        steps = [
            last_step(d)
            for d in segment_dirs(self.run_dir, self.run_id or "")
            if d != self.sync_dir
        ]
        return max((s for s in steps if s is not None), default=-1)

    def _replay_local_rows(self) -> None:
        """Send the rows that metrics.jsonl has and W&B lost (a hard kill drops W&B's unwritten
        tail, which can reach back before the checkpoint the loop restarts from)."""
        replayed = -1
        for row in read_jsonl(self.run_dir / "metrics.jsonl"):
            step = row.get("step")
            if isinstance(step, int) and step > self.skip_through and self.run is not None:
                values = {k: _number(v) for k, v in row.items() if k not in ("step", "time")}
                self._call(lambda v=values, s=step: self.run.log(v, step=s))
                replayed = max(replayed, step)
        if replayed >= 0:
            self.replayed_through = replayed
            self.skip_through = replayed

    @property
    def sync_dir(self) -> Path | None:
        with contextlib.suppress(Exception):
            return Path(self.run.settings.sync_dir).resolve()
        return None

    @property
    def sync_command(self) -> str:
        return sync_command(self.run_dir, self.run_id or "")

    @property
    def url(self) -> str | None:
        if self.mode != "online" or self.run is None:
            return None
        with contextlib.suppress(Exception):
            return self.run.url
        return None

    def _start_line(self, resumed: bool, started_s: float) -> str:
        verb = "Resuming" if resumed else "Syncing"
        line = f"wandb: {verb} run {self.opts.name} (mode: {self.mode}"
        if self.mode == "online":
            where = (
                f"{self.opts.entity}/{self.opts.project}" if self.opts.entity else self.opts.project
            )
            line += f", project {where}) {self.url or ''}".rstrip()
        else:
            line += f": {self.why}); upload later with: {self.sync_command}"
        if resumed and self.skip_through >= 0:
            held = f"W&B already holds steps up to {self.skip_through}"
            if self.replayed_through is not None:
                held += " (the last of them re-sent from metrics.jsonl)"
            line += f" [{held}]"
        if self.opts.debug:
            line += (
                f" [started in {started_s:.1f} s; W&B logs in {show_path(self.run_dir / 'wandb')}]"
            )
        return line

    # ---- the loop's calls

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.run is None or step <= self.skip_through:
            return
        clean = {k: v for k, v in scrub_row(row).items() if v is not None}
        self._call(lambda: self.run.log(clean, step=int(step)))

    def alert(self, title: str, text: str, level: str = "WARN", **extra: Any) -> None:
        if self.run is None:
            return
        step = extra.get("step")
        body = scrub_text(text if step is None else f"{text} (iteration {step})")
        alert_level = getattr(self.wandb.AlertLevel, LEVELS.get(level.upper(), "WARN"))
        self._call(
            lambda: self.run.alert(
                title=scrub_text(title),
                text=body,
                level=alert_level,
                wait_duration=self.opts.alert_wait_s,
            )
        )

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is None:
            return
        clean = {k: v for k, v in scrub(values).items() if v is not None}
        self._call(lambda: self.run.summary.update(clean))

    def log_checkpoint(
        self, path: str | Path, aliases: list[str] | tuple[str, ...] = ("latest",)
    ) -> None:
        """A checkpoint folder (or file) as a versioned `model` Artifact, when asked for."""
        if self.run is None or not self.opts.log_artifacts:
            return
        path = Path(path)
        try:
            artifact = self.wandb.Artifact(
                f"{_artifact_name(self.opts.name)}-model",
                type="model",
                metadata=_checkpoint_meta(path),
            )
            if path.is_dir():
                artifact.add_dir(str(path))
            else:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact, aliases=list(aliases))
        except (ConnectionError, BrokenPipeError) as exc:
            self._lost(exc)
        except Exception as exc:  # a missing file or a full disk: the next checkpoint may work
            self.console(
                f"wandb: checkpoint {path.name} not logged as an artifact ({type(exc).__name__}: {scrub_text(str(exc))[:200]})"
            )

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            self._save_state()
            return
        run, self.run = self.run, None
        try:
            run.finish(exit_code=exit_code)
            self.status = "finished"
        except TimeoutError:
            self.status = "upload_incomplete"
            self.console(
                f"wandb: upload did not finish within {FINISH_TIMEOUT_S:.0f} s; the rest is on disk: {self.sync_command}"
            )
        except Exception as exc:
            self.run = run
            self._lost(exc)
            return
        self._save_state()
        if self.mode == "offline":
            self.console(
                f"wandb: run {self.opts.name} saved offline; upload it with: {self.sync_command}"
            )

    # ---- failures

    def _call(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:
            self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        if self.run is None:
            return
        self.run = None
        self.status = "failed"
        _quiet_teardown(self.wandb)
        self._save_state()
        saved = f"; what it had is on disk: {self.sync_command}" if self.mode == "offline" else ""
        self.console(
            f"wandb: W&B stopped working ({type(exc).__name__}: {scrub_text(str(exc))[:200]}); "
            f"training goes on and every row is in {show_path(self.run_dir / 'metrics.jsonl')}{saved}"
        )

    def _save_state(self) -> None:
        _write_state(
            self.run_dir,
            {
                "run_id": self.run_id,
                "name": self.opts.name,
                "mode": self.mode,
                "reason": self.why,
                "project": self.opts.project,
                "entity": self.opts.entity,
                "url": self.url
                if self.status == "running"
                else _read_state(self.run_dir).get("url"),
                "status": self.status,
                "sync_command": self.sync_command
                if self.mode == "offline" or self.status != "finished"
                else None,
            },
        )


# ---------------------------------------------------------------------------- local run folders


def segment_dirs(run_dir: Path, run_id: str) -> list[Path]:
    """W&B's folders for this run id (one per start: the first, each resume, a failed online
    try), oldest first."""
    root = Path(run_dir) / "wandb"
    if not run_id or not root.is_dir():
        return []
    found = [
        d.resolve() for d in root.glob(f"*run-*-{run_id}") if (d / f"run-{run_id}.wandb").exists()
    ]
    return sorted(found, key=lambda d: d.name.split("run-", 1)[1])


def is_synced(segment: Path) -> bool:
    """`wandb sync` leaves `run-<id>.wandb.synced` beside the file it uploaded."""
    return any(segment.glob("*.wandb.synced"))


def sync_command(run_dir: Path, run_id: str) -> str:
    return f"wandb sync {shlex.quote(show_path(Path(run_dir) / 'wandb'))}/offline-run-*-{run_id}"


def last_step(segment: Path) -> int | None:
    """The last step W&B wrote in one folder, read with W&B's own reader (`wandb leet inspect`).
    A run killed hard loses W&B's unwritten tail, so this can be below what the loop logged."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(segment)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        step = json.loads(out.stdout).get("step")
    except (OSError, ValueError, subprocess.SubprocessError, AttributeError):
        return None
    return int(step) if isinstance(step, (int, float)) else None


def _number(value: Any) -> Any:
    """The JSONL log writes NaN and infinities as text; W&B takes them as floats."""
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value


def _artifact_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def _checkpoint_meta(path: Path) -> dict[str, Any]:
    state = path / "state.json" if path.is_dir() else path.with_name("state.json")
    meta: dict[str, Any] = {"path": str(path)}
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(state.read_text(encoding="utf-8"))
        meta.update({k: saved[k] for k in ("step", "best_val_loss", "samples_seen") if k in saved})
    return meta


def show_path(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    return str(path)


def _read_state(run_dir: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((Path(run_dir) / STATE_FILE).read_text(encoding="utf-8"))
    return {}


def _write_state(run_dir: Path, values: dict[str, Any]) -> None:
    path = Path(run_dir) / STATE_FILE
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(values, indent=2), encoding="utf-8")
        os.replace(tmp, path)
