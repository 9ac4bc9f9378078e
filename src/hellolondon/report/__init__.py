"""`write_report`: a training report from run folders alone (no W&B needed) — the W&B guide's five
panels, the eval curves and GPU memory as a PNG and as a self-contained interactive HTML page,
several runs overlaid, with the health findings and a summary table."""

from __future__ import annotations

import sys
from pathlib import Path

from hellolondon.errors import UserError
from hellolondon.files import atomic_path, atomic_write, check_writable_folder, made_folder
from hellolondon.report.html import PAGE_MARK, render_html
from hellolondon.report.png import SOFTWARE, write_png
from hellolondon.report.rundata import RunData, load_run, load_runs, summarize

__all__ = ["RunData", "load_run", "load_runs", "summarize", "write_report"]


def write_report(run_dirs: list[Path], out_dir: Path, quiet: bool = False) -> dict[str, Path]:
    """Write `report.png` and `report.html` into `out_dir`; returns their paths by kind.
    Notes on odd input (a cut-short last line, a run without rows) go to stderr and the page."""
    runs, notes = load_runs(list(run_dirs))
    out_dir = Path(out_dir)
    with made_folder(out_dir, make=False):  # a report that fails leaves no folder it made
        check_writable_folder(out_dir, "the report", "choose another --out")
        _check_replaceable(out_dir)
        return _write(runs, notes, out_dir, quiet)


def _marked(path: Path, mark: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return mark in f.read(65536)
    except OSError:
        return False


def _check_replaceable(out_dir: Path) -> None:
    """An earlier report in `out_dir` is replaced; a file of the same name that is not one (a
    page of your own called report.html) is never: say so before anything is written. A PNG
    of a version that did not mark its PNGs counts as ours beside a page that is."""
    png, page = out_dir / "report.png", out_dir / "report.html"
    page_ours = _marked(page, f"<title>{PAGE_MARK}".encode())
    foreign = [page.name] if page.exists() and not page_ours else []
    if png.exists() and not (page_ours or _marked(png, SOFTWARE.encode())):
        foreign.append(png.name)
    if foreign:
        raise UserError(
            f"{out_dir} holds {' and '.join(foreign)} that `hellolondon report` did not write, "
            "and the report would replace them; move them away or choose another --out"
        )


def _write(runs: list[RunData], notes: list[str], out_dir: Path, quiet: bool) -> dict[str, Path]:
    if not quiet:
        for note in notes:
            print(f"report: {note}", file=sys.stderr)
    # an earlier report is never left half-replaced
    png, page = out_dir / "report.png", out_dir / "report.html"
    with atomic_path(png, fsync=False) as tmp:
        write_png(runs, tmp)
    atomic_write(page, render_html(runs, notes), fsync=False)
    return {"png": png, "html": page}
