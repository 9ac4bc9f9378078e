"""Upload an export folder to the Hugging Face Hub.

The token comes from the HF_TOKEN environment variable, else from the file `hf auth login` saves
it in, and goes straight to `HfApi`: it is never printed, logged or written, and it is scrubbed
from any error message that might echo it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from hellolondon.errors import UserError

REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "README.md")
NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"  # the Hub's rule: up to 96 characters
REPO_ID = re.compile(rf"^{NAME}/{NAME}$")
TOKEN_URL = "https://huggingface.co/settings/tokens"
ANSWER_TIMEOUT_S = 120  # a Hub that takes a request and never answers: the upload fails then


def upload_list(folder: str | Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(relative path, bytes) of every file that would be uploaded, and the names of those
    edited since the export (the model card); hidden files are left out (temporary files of an
    interrupted export, editor files)."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give a folder written by `hellolondon export`")
    missing = [n for n in REQUIRED if not (root / n).is_file()]
    if missing:
        raise UserError(
            f"{root} is not an export folder (missing {', '.join(missing)}); run `hellolondon export` first"
        )
    from hellolondon.export import EXPORT_FILES, check_export

    edited = check_export(root)  # a damaged folder is named before anything goes up
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (
            any(part.startswith(".") for part in rel.parts)
            or path.is_dir()
            and not path.is_symlink()
        ):
            continue
        if path.is_symlink() or rel.as_posix() not in EXPORT_FILES:  # never ours to publish
            what = "a link" if path.is_symlink() else "not a file export writes"
            raise UserError(
                f"{path} is {what}; publish uploads an export folder as `hellolondon export` "
                "wrote it: move it out, or export again into an empty folder"
            )
        files.append((rel.as_posix(), path.stat().st_size))
    return files, edited


def check_repo_id(repo: str) -> None:
    """The Hub's rules for a repository id, checked here so that a dry run catches them too."""
    if not REPO_ID.match(repo) or "--" in repo or ".." in repo or repo.endswith(".git"):
        raise UserError(
            "--repo must look like user/name: letters, digits, '.', '_' or '-', each part "
            "starting and ending with a letter, digit or '_', at most 96 characters, no '--' or "
            f"'..', not ending in .git; not {repo!r}"
        )


def _detail(exc: Exception, token: str) -> str:
    """The error's first line of text, with the HTTP status where the Hub answered one, and no
    token. The message can start with a blank line or a request id alone, and a heading such
    as "Bad request:" has its reason on the next line, which is joined to it."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.fullmatch(r"\(Request ID: [^)]*\)", ln)] or lines
    said: list[str] = []
    for line in lines:
        said.append(line)
        if not line.endswith(":"):
            break
    text = " ".join(said)[:300] if said else type(exc).__name__
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None and str(status) not in text:
        text = f"HTTP {status}: {text}"
    return _scrub(text, token)


def _hint(exc: Exception) -> str:
    """What to do about a refusal by the Hub (401 or 403: the token cannot write there)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return f"; the token must be a write token with access to that repository ({TOKEN_URL})"
    return ""


def _unanswered(exc: Exception, endpoint: str) -> str | None:
    """What to say of a server that did not answer as the Hub does: no answer in time, or an
    answer that is not the Hub's JSON (another server at HF_ENDPOINT, a proxy's page)."""
    if "Timeout" in type(exc).__name__:
        return f"no answer from {endpoint} within {ANSWER_TIMEOUT_S} s; try again later"
    if isinstance(exc, json.JSONDecodeError):
        return f"{endpoint} answered with something other than the Hub's JSON; check HF_ENDPOINT"
    return None


def hub_token() -> tuple[str, str]:
    """The Hub token and where it comes from: HF_TOKEN, else the token `hf auth login` saved
    (read from its file, so that a dry run contacts nothing); ("", "") when there is none."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        return token, "HF_TOKEN"
    try:
        from huggingface_hub import constants

        path = Path(constants.HF_TOKEN_PATH)
        saved = path.read_text(encoding="utf-8").strip()
    except (ImportError, OSError, UnicodeDecodeError):
        return "", ""
    return (saved, f"the token `hf auth login` saved in {path}") if saved else ("", "")


NO_TOKEN = (
    f"HF_TOKEN is not set and no token is saved by `hf auth login`; create a write token at "
    f"{TOKEN_URL} and export HF_TOKEN=... or run `hf auth login`"
)


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def publish(
    folder: str | Path,
    repo: str,
    dry_run: bool = False,
    private: bool = False,
    message: str = "Upload model exported with hellolondon",
    log=print,
) -> str:
    """Create `repo` if needed and upload the folder in one commit; returns the repository URL."""
    check_repo_id(repo)
    files, edited = upload_list(folder)
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    url = f"{endpoint}/{repo}"
    token, source = hub_token()
    total = sum(size for _, size in files)
    for name in edited:
        log(f"note: {name} was edited since the export; your version is uploaded")
    if dry_run:
        log(
            f"dry run: would upload {len(files)} files ({total / 1e6:.1f} MB) to {url}"
            + (" (private)" if private else "")
        )
        for name, size in files:
            log(f"  {name:32} {size:>14,} bytes")
        log(f"token: {source}" if token else f"note: {NO_TOKEN}")
        return url
    if not token:
        raise UserError(f"{NO_TOKEN} (or use --dry-run)")
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError("publishing needs huggingface_hub: pip install 'hellolondon[hf]'") from None
    api = HfApi(endpoint=endpoint, token=token)
    try:
        with _answer_timeout():
            api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(
                folder_path=str(folder),
                repo_id=repo,
                repo_type="model",
                commit_message=message,
                allow_patterns=[name for name, _ in files],
            )
    except Exception as exc:  # the hub raises many types; all become one clear line
        said = _unanswered(exc, endpoint) or f"{_detail(exc, token)}{_hint(exc)}"
        raise UserError(f"upload to {url} failed: {said}") from None
    log(f"uploaded {len(files)} files ({total / 1e6:.1f} MB) to {url}")
    return url


@contextlib.contextmanager
def _answer_timeout() -> Iterator[None]:
    """huggingface_hub's client waits for an answer without end (its timeout is None): bound
    each wait, so a server that takes the request and never answers fails in one line. A slow
    upload that goes on sending is not cut: the bound is on each wait, not on the whole. Large
    files the Hub sends to its Xet storage go through hf_xet's own client, whose retries stop
    after HF_XET_CLIENT_RETRY_MAX_DURATION (6 minutes by default)."""
    try:
        from huggingface_hub.utils import get_session

        session = get_session()
        before = session.timeout
    except (ImportError, AttributeError):  # an older hub (requests): its own timeouts stand
        yield
        return
    session.timeout = ANSWER_TIMEOUT_S
    try:
        yield
    finally:
        session.timeout = before
