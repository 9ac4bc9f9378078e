"""Starting W&B for a run: offline-first, never a prompt, never a hang.

The mode is decided before W&B is touched: `disabled` imports nothing; no credentials means
offline; with credentials one small request checks the key, the network and the permissions
before `wandb.init` gets the rest of a fixed budget (`tracking.init_timeout`, 15 s). Any failure
on the way falls back to offline, under the same run id, with one line naming the cause in the
words of the W&B guide's troubleshooting list.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets as _random
import string
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from hellolondon.config import RunConfig
from hellolondon.rundir import RunDir
from hellolondon.tracking.secrets import scrub, scrub_text
from hellolondon.tracking.wandb_file import cut_unfinished_record
from hellolondon.tracking.wandb_options import (
    Credentials,
    WandbOptions,
    base_url,
    find_credentials,
)
from hellolondon.tracking.wandb_tracker import (
    Console,
    WandbTracker,
    is_synced,
    quiet_teardown,
    segment_dirs,
    show_path,
    wandb_finish_timeout,
)

PROBE_MAX_S = 4.0  # the key/network check gets at most this much of the start-up budget
# Kept back from wandb.init for the fallback: tearing down a failed online start takes ~2 s when
# the server hangs, starting offline ~1 s.
FALLBACK_RESERVE_S = 5.0


# ---------------------------------------------------------------------------- causes


def probe(base_url: str, api_key: str, timeout: float) -> str | None:
    """One small authenticated request to the W&B API. Returns the cause of failure in the
    words of the W&B guide's troubleshooting list, or None when the key and network are fine."""
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
    except ValueError:  # W&B's own start would fail on it too, and call it a network timeout
        return f"server error: {base_url} answered with malformed JSON, not the W&B API: check WANDB_BASE_URL"
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


def classify(exc: BaseException, status: int | None = None) -> str:
    """The cause of a failed `wandb.init`, from its message (W&B gives no status code) or
    the failing HTTP `status` its service logged (`server_status`)."""
    message = scrub_text(
        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    )
    text = message.lower()
    detail = f" ({message[:200]})"
    # status codes as whole numbers: a port such as :40353 in the message is not a 403
    codes = set(re.findall(r"\b[1-5]\d\d\b", re.sub(r":\d+\b", "", text)))
    if "not found" in text or "404" in codes:
        return "project not found: create it in the W&B dashboard or check the entity" + detail
    if "403" in codes or any(w in text for w in ("permission", "forbidden", "not authorized")):
        return "permission denied: check the API key's permissions and the entity" + detail
    if "401" in codes or any(w in text for w in ("unauthorized", "not logged in", "api key")):
        return "API key rejected: check WANDB_API_KEY or run `wandb login --relogin`" + detail
    # W&B retries these until the start-up budget runs out, then says it "timed out"
    server = re.search(r"\b(?:http|status|code|error)[ :=]*(5\d\d|429)\b", text)
    if status is not None or server:
        return (
            f"server error: W&B answered HTTP {status or server.group(1)} and kept failing; "
            "try again later or check WANDB_BASE_URL" + detail
        )
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


def _earlier_id(run: RunDir) -> dict[str, str]:
    """The W&B run id an earlier start of this run used, kept when this start has no W&B: its
    folders may still wait for `wandb sync`, which `hellolondon runs` finds by that id."""
    earlier = run.read_tracker_state().get("run_id")
    return {"run_id": earlier} if earlier else {}


def _import_wandb() -> Any:
    import wandb

    return wandb


def _quiet_terminal(wandb: Any, debug: bool) -> None:
    """W&B's console lines (credentials loaded, artifact staging, ...) only with WANDB_DEBUG;
    the run's own lines say what matters."""
    if not debug:
        # loading the settings says "Loading settings from wandb/settings" unless W&B is silent
        saved = os.environ.get("WANDB_SILENT")
        os.environ["WANDB_SILENT"] = "true"
        try:
            with contextlib.suppress(Exception):
                from wandb.sdk import wandb_setup

                wandb_setup.singleton().settings  # noqa: B018 -- loads them, resets the terminal
                wandb.termsetup(wandb.Settings(silent=True), None)
        finally:
            if saved is None:
                del os.environ["WANDB_SILENT"]
            else:
                os.environ["WANDB_SILENT"] = saved


def choose_mode(opts: WandbOptions) -> tuple[str, str, Credentials | None]:
    """(mode, why, credentials) without any network: the resolved mode, unless online lacks a
    usable key here."""
    if opts.mode != "online":
        asked = opts.mode_reason in ("WANDB_MODE", "tracking.wandb_mode")
        why = f"{opts.mode_reason}={opts.mode}" if asked else opts.mode_reason
        raw = os.environ.get("WANDB_MODE", "").strip()
        if opts.mode_reason == "WANDB_MODE" and raw and raw.lower() != opts.mode:
            why = f"WANDB_MODE={raw} (W&B's name for {opts.mode})"  # dryrun, as it was set
        return opts.mode, why, None
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
        "finish_timeout": wandb_finish_timeout(),
        "finish_timeout_raises": True,
    }
    known = getattr(wandb.Settings, "model_fields", wanted)  # older W&B: pass what we can
    return wandb.Settings(**{k: v for k, v in wanted.items() if k in known})


def _init(
    wandb: Any, opts: WandbOptions, mode: str, run_id: str, run: RunDir, timeout: float
) -> Any:
    with _argv_scrubbed():
        return wandb.init(
            project=opts.project,
            entity=opts.entity,
            name=opts.name,
            id=run_id,
            resume="allow",
            dir=str(run.path),
            mode=mode,
            config=opts.config,
            # free text: scrubbed here, once the key found by choose_mode is known too
            tags=[scrub_text(tag) for tag in opts.tags],
            notes=scrub_text(opts.notes) if opts.notes else None,
            group=scrub_text(opts.group) if opts.group else None,
            job_type="train",
            reinit="create_new",
            settings=_settings(wandb, opts, timeout),
        )


UNSYNCED = "earlier parts of this run are not synced yet; staying offline so `wandb sync` uploads them in order"


def start_wandb(
    cfg: RunConfig,
    run: RunDir,
    run_config: dict[str, Any] | None = None,
    resume_run_id: str | None = None,
    console: Console = print,
) -> WandbTracker | None:
    """Open the W&B side of a run, or None when it is disabled or cannot start even offline."""
    t0 = time.monotonic()
    opts = _options(cfg, run, run_config)
    local = show_path(run.metrics_file)
    if opts.mode == "disabled":  # nothing of W&B is imported, no process started
        _say_disabled(opts, run, local, console)
        return None
    _no_error_reports()
    try:
        wandb = _import_wandb()
    except Exception as exc:  # missing or broken: the run must not die of its bookkeeping
        _say_not_imported(exc, run, local, console)
        return None
    _quiet_terminal(wandb, opts.debug)
    opts.base_url = opts.base_url or base_url()  # `wandb login --host` is stored
    mode, why, creds = choose_mode(opts)
    run_id = _run_id(run, resume_run_id, console)
    if mode == "online" and _unsynced_parts(run, run_id):
        mode, why = "offline", UNSYNCED
    deadline = t0 + opts.init_timeout
    wb_run = None
    if mode == "online":
        wb_run, cause = _start_online(wandb, opts, creds, run_id, run, deadline)
        if wb_run is None:
            mode, why = "offline", f"could not go online: {cause}"
    if wb_run is None:
        try:
            # offline needs no network: never starve it, even when the online try used the budget
            wb_run = _init(
                wandb, opts, "offline", run_id, run, max(5.0, deadline - time.monotonic())
            )
        except Exception as exc:
            _say_offline_failed(wandb, exc, run, local, console)
            return None
    tracker = WandbTracker(wandb, wb_run, opts, mode, why, run, console)
    tracker.begin(resumed=resume_run_id is not None, started_s=time.monotonic() - t0)
    return tracker


def _options(cfg: RunConfig, run: RunDir, run_config: dict[str, Any] | None) -> WandbOptions:
    """The W&B options of the config, named after the run, with the run's config scrubbed."""
    opts = WandbOptions.from_config(cfg)
    opts.name = opts.name or run.name
    opts.config = scrub(run_config if run_config is not None else cfg.to_dict())
    return opts


def _say_disabled(opts: WandbOptions, run: RunDir, local: str, console: Console) -> None:
    why = choose_mode(opts)[1]
    console(f"wandb: disabled ({why}); metrics go to {local} only")
    run.write_tracker_state({**_earlier_id(run), "mode": "disabled", "reason": why})


def _no_error_reports() -> None:
    """W&B's own error reports go to the same server from exit handlers; when that server hangs
    they hold the finished process for ~20 s. An explicit WANDB_ERROR_REPORTING still wins."""
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")


def _say_not_imported(exc: Exception, run: RunDir, local: str, console: Console) -> None:
    reason = f"{type(exc).__name__}: {scrub_text(str(exc))[:200]}"
    console(f"wandb: could not import W&B ({reason}); metrics go to {local} only")
    run.write_tracker_state({**_earlier_id(run), "mode": "failed", "reason": reason})


def _run_id(run: RunDir, resume_run_id: str | None, console: Console) -> str:
    """The W&B run id: the resumed run's (its earlier parts mended), the sweep agent's, or new."""
    # under `wandb agent` the trial's run already exists: W&B names it in WANDB_RUN_ID
    run_id = resume_run_id or os.environ.get("WANDB_RUN_ID", "").strip() or new_run_id()
    if resume_run_id:
        mend_earlier_parts(run, run_id, console)
    return run_id


def _unsynced_parts(run: RunDir, run_id: str) -> bool:
    """Whether an earlier offline part of this run still waits for `wandb sync`."""
    return any(
        s.name.startswith("offline-") and not is_synced(s) for s in segment_dirs(run, run_id)
    )


def _say_offline_failed(
    wandb: Any, exc: Exception, run: RunDir, local: str, console: Console
) -> None:
    quiet_teardown(wandb)
    console(f"wandb: could not start even offline ({classify(exc)}); metrics go to {local} only")
    run.write_tracker_state({"mode": "failed", "reason": scrub_text(str(exc))[:300]})


def mend_earlier_parts(run: RunDir, run_id: str, console: Console) -> None:
    """Cut the record a killed W&B process left unfinished at the end of an earlier part of the
    run: `wandb sync` stops at such a file and uploads none of the parts after it. The parts are
    those of ended processes: a resume has claimed the run folder."""
    for segment in segment_dirs(run, run_id):
        cut = cut_unfinished_record(segment / f"run-{run_id}.wandb")
        if cut:
            console(
                f"wandb: {show_path(segment)} ended in a record its killed W&B process left "
                f"unfinished; cut those {cut} bytes so that `wandb sync` reads it to the end "
                "(the local log holds the rows)"
            )


def _start_online(
    wandb: Any,
    opts: WandbOptions,
    creds: Credentials | None,
    run_id: str,
    run: RunDir,
    deadline: float,
) -> tuple[Any, str | None]:
    """(run, None) or (None, the cause), within the budget up to `deadline` less the fallback."""
    if creds is not None and creds.api_key:
        cause = probe(
            opts.base_url, creds.api_key, min(PROBE_MAX_S, max(1.0, opts.init_timeout / 3))
        )
        if cause is not None:
            return None, cause
    began = time.time()
    try:
        timeout = deadline - time.monotonic() - FALLBACK_RESERVE_S
        return _init(wandb, opts, "online", run_id, run, timeout), None
    except Exception as exc:
        quiet_teardown(wandb)  # else the half-started run keeps its id busy for the offline one
        return None, classify(exc, server_status(run, run_id, began))


def server_status(run: RunDir, run_id: str, since: float) -> int | None:
    """The last failing HTTP status (5xx, 429) W&B's service logged for an online try of
    `run_id` made after `since` (a time.time()). W&B retries those until its start-up time is
    spent and then reports only a timeout, so the cause is read from its log."""
    online = [d for d in segment_dirs(run, run_id) if not d.name.startswith("offline-")]
    log = online[-1] / "logs" / "debug-internal.log" if online else None
    try:
        if log is None or log.stat().st_mtime < since - 1:  # an earlier start's log
            return None
        lines = log.read_text(errors="replace")
    except OSError:
        return None
    found = None
    for line in lines.splitlines():
        match = re.search(r'"status":\s*(\d{3})\b', line)
        if match and (match.group(1)[0] == "5" or match.group(1) == "429"):
            found = int(match.group(1))
    return found
