"""What W&B is asked to do for a run, decided once before training: the mode (config, then
WANDB_MODE, then the mode `wandb offline` and the like saved, then online with a key and
offline without), project, entity, tags, notes, group
and run name (config, then the W&B environment variables, then the defaults).
`resolve_tracking` writes the decisions into the config, so the run's saved config shows the
values used; `WandbOptions` carries them, with what only start-up needs, to `wandb_start`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from hellolondon.config import RunConfig, TrackingConfig
from hellolondon.errors import UserError
from hellolondon.tracking.secrets import remember_secret

DEFAULT_PROJECT = "helloLondon"
DEFAULT_TAGS = ("london", "historical", "llm", "gpt2", "1500-1850")
DEFAULT_BASE_URL = "https://api.wandb.ai"
ASKED = "tracking.wandb_mode"  # the mode_reason of a mode set in the config or by a flag


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def base_url() -> str:
    """The W&B server as W&B itself finds it (`wandb login` stores its key for that host):
    WANDB_BASE_URL, else the host `wandb login --host` saved in W&B's settings, else the
    installed W&B's default."""
    env = os.environ.get("WANDB_BASE_URL", "").strip().rstrip("/")
    if env:
        return env
    if saved := _saved_setting("base_url"):
        return saved[0].rstrip("/")
    with contextlib.suppress(Exception):  # the class default: no settings file read, no output
        import wandb

        return str(wandb.Settings().base_url).rstrip("/")
    return DEFAULT_BASE_URL


def env_run_name() -> str:
    """WANDB_NAME, W&B's own variable for a run's name: it names the run (and its folder) when
    neither --run-name nor the config does."""
    return os.environ.get("WANDB_NAME", "").strip()


def resolve_tracking(t: TrackingConfig, preset: str, run_name: str) -> TrackingConfig:
    """The tracking settings with every default decided; no network, W&B itself not started."""
    mode, reason = t.wandb_mode, t.mode_reason or (ASKED if t.wandb_mode else "")
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    env_mode = {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
    if not mode and env_mode:
        if env_mode not in ("online", "offline", "disabled"):
            # ignored, a typo such as `ofline` would send a run meant to stay local online
            raise UserError(f"WANDB_MODE={env_mode} is not a mode: use online, offline or disabled")
        mode, reason = env_mode, "WANDB_MODE"
    if not mode and (saved := _saved_mode()) is not None:
        mode, reason = saved
    if not mode:
        creds, problem = find_credentials(base_url())
        if creds is not None:
            mode, reason = "online", f"API key from {creds.source}"
        else:
            mode = "offline"
            reason = problem or "API key not found: set WANDB_API_KEY or run `wandb login`"
    env_tags = [s.strip() for s in os.environ.get("WANDB_TAGS", "").split(",") if s.strip()]
    return dataclasses.replace(
        t,
        wandb_mode=mode,
        mode_reason=reason,
        project=t.project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        entity=t.entity or os.environ.get("WANDB_ENTITY", ""),
        run_name=run_name,
        tags=list(dict.fromkeys([*DEFAULT_TAGS, preset, *t.tags, *env_tags])),
        notes=t.notes or os.environ.get("WANDB_NOTES", ""),
        group=t.group or os.environ.get("WANDB_RUN_GROUP", "").strip(),
    )


def _saved_mode() -> tuple[str, str] | None:
    """The mode `wandb offline` / `wandb online` / `wandb disabled` saved; (mode, where) or
    None."""
    found = _saved_setting("mode")
    saved = found[0].lower() if found else ""
    saved = {"dryrun": "offline", "run": "online"}.get(saved, saved)
    if found and saved in ("online", "offline", "disabled"):
        return saved, f"`wandb {saved}` saved it in {found[1]}"
    return None


def _saved_setting(name: str) -> tuple[str, str] | None:
    """A setting W&B's commands saved, as W&B itself reads it: this folder's wandb/settings
    first, then the user's (WANDB_CONFIG_DIR or ~/.config/wandb); (value, file) or None."""
    import configparser
    from pathlib import Path

    home = os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb"
    for path in (Path("wandb") / "settings", Path(home) / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if value := parser.get("default", name, fallback="").strip():
            return value, str(path)
    return None


def automatic(t: TrackingConfig) -> TrackingConfig:
    """The settings with the mode chosen by circumstance undone, so that a resumed run decides
    it again (a key set since, say); a mode that was asked for stays."""
    if t.mode_reason == ASKED or (t.wandb_mode and not t.mode_reason):
        return t
    return dataclasses.replace(t, wandb_mode="", mode_reason="")


@dataclass
class WandbOptions:
    """Everything W&B start-up needs: the resolved tracking settings and a few facts of the
    environment."""

    mode: str  # online|offline|disabled, as resolved
    mode_reason: str  # why that mode, for the console line
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
    def from_config(cls, cfg: RunConfig) -> WandbOptions:
        # resolving a resolved config changes nothing; an older run's config gets its defaults
        t = resolve_tracking(cfg.tracking, cfg.preset, cfg.tracking.run_name)
        return cls(
            mode=t.wandb_mode,
            mode_reason=t.mode_reason,
            project=t.project or DEFAULT_PROJECT,
            entity=t.entity or None,
            name=t.run_name,
            tags=list(t.tags),
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
            found = netrc.netrc(os.environ.get("NETRC")).authenticators(urlparse(base_url).netloc)
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
