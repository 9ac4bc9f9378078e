"""The report as one PNG: the W&B guide's five panels and the extra curves, runs overlaid, findings
marked on the loss panel, and the summary table underneath."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib import font_manager, rc_context
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
from matplotlib.lines import Line2D

from hellolondon.report.rundata import PANELS, Panel, RunData, summarize, summary_cells

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
STYLES = ("-", "--", ":")
LEVEL_COLORS = {"WARN": "#ff9900", "ERROR": "#d62728"}
OFF_SCALE = 5.0  # a step time this many times the typical one (compilation) is drawn off scale
# DejaVu Sans has no CJK glyphs: a run named in Chinese or Japanese would show boxes. Matplotlib
# falls back, glyph by glyph, to the first of these that is installed; none installed is no error.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "Microsoft YaHei",
    "PingFang SC",
    "Hiragino Sans",
)


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _short(key: str) -> str:
    return key.split("/", 1)[-1]


def _draw_panel(ax, panel: Panel, runs: list[RunData]) -> None:
    ax.set_title(panel.title, fontsize=11, loc="left")
    drawn, labelled = False, set()
    for i, run in enumerate(runs):
        for j, key in enumerate(panel.keys):
            steps, values = run.series(key)
            if not steps:
                continue
            label = _short(key) if len(panel.keys) > 1 and key not in labelled else None
            labelled.add(key)
            style = STYLES[j % len(STYLES)]
            marker = "o" if len(steps) < 3 else None
            ax.plot(steps, values, style, color=color(i), lw=1.3, label=label, marker=marker, ms=3)
            drawn = True
    if not drawn:
        ax.text(
            0.5,
            0.5,
            panel.empty,
            ha="center",
            va="center",
            color="#888",
            transform=ax.transAxes,
            wrap=True,
        )
        ax.set_xticks([])
        ax.set_yticks([])
        return
    ax.grid(alpha=0.3)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    if panel.unit:
        ax.set_ylabel(panel.unit, fontsize=8)
    if len(panel.keys) > 1:
        ax.legend(fontsize=7, loc="best")
    if panel.title == "train/dt_ms":
        _clip_compile_spike(ax, runs)
    if panel.title == "train/loss":
        _mark_findings(ax, runs)


def dt_off_scale(runs: list[RunData]) -> tuple[float, float] | None:
    """(top of the train/dt_ms axis, the highest step time) when a compile step would squash the
    rest, else None. The first step can take 15 s against ~600 ms after it. The typical step time
    is each run's own and the axis holds the slowest run's: pooled, a long fast run would push a
    short slow one off the top."""
    per_run = [v for v in (sorted(r.series("train/dt_ms")[1]) for r in runs) if v]
    if not per_run:
        return None
    typical = max(v[int(0.9 * (len(v) - 1))] for v in per_run)
    top = max(v[-1] for v in per_run)
    if top <= OFF_SCALE * typical:
        return None
    return 2 * typical, top


def _clip_compile_spike(ax, runs: list[RunData]) -> None:
    """Keep the steady part of train/dt_ms readable and say what went off the top."""
    clip = dt_off_scale(runs)
    if clip:
        ax.set_ylim(0, clip[0])
        ax.text(
            0.98,
            0.95,
            f"max {clip[1]:,.0f} ms (compilation) off scale",
            ha="right",
            va="top",
            fontsize=7,
            color="#555",
            transform=ax.transAxes,
        )


def _mark_findings(ax, runs: list[RunData]) -> None:
    for run in runs:
        for e in run.events:
            level, step = e.get("level"), e.get("step")
            if level in LEVEL_COLORS and isinstance(step, int | float):
                ax.axvline(step, color=LEVEL_COLORS[level], lw=0.8, ls=":", alpha=0.8)


def font_family() -> list[str]:
    """DejaVu Sans, then the installed CJK fonts to fall back to (only installed ones: a missing
    family would be a warning on every text)."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(name for name in CJK_FONTS if name in installed)]


def figure(runs: list[RunData]) -> Figure:
    """The report's figure; the header (title, run legend, note) is sized in inches, so a legend
    of several rows or a panel title raised by an exponent (1e21) never runs into it."""
    with rc_context({"font.family": font_family()}):  # each text keeps the family it was made with
        return _figure(runs)


def _figure(runs: list[RunData]) -> Figure:
    rows = [summary_cells(summarize(r)) for r in runs]
    height = 11 + 0.3 * len(runs)
    ncol = min(4, len(runs))
    header = 0.45 + 0.25 * math.ceil(len(runs) / ncol) + 0.45  # title, legend rows, panel title
    fig = Figure(figsize=(16, height), dpi=100)
    grid = fig.add_gridspec(
        4,
        3,
        height_ratios=[1, 1, 1, 0.25 + 0.12 * len(runs)],
        hspace=0.45,
        top=1 - header / height,
        bottom=0.02,
        left=0.05,
        right=0.98,
    )
    for n, panel in enumerate(PANELS):
        _draw_panel(fig.add_subplot(grid[n // 3, n % 3]), panel, runs)
    table_ax = fig.add_subplot(grid[3, :])
    table_ax.axis("off")
    if rows:
        table = table_ax.table(
            cellText=[list(r.values()) for r in rows],
            colLabels=list(rows[0]),
            loc="center",
            cellLoc="left",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.auto_set_column_width(list(range(len(rows[0]))))
        table.scale(1, 1.3)
        for i in range(len(rows)):
            table[i + 1, 0].get_text().set_color(color(i))
    top = 1 - 0.1 / height
    fig.suptitle("helloLondon training report", fontsize=14, x=0.01, y=top, ha="left", va="top")
    handles = [Line2D([], [], color=color(i), lw=2.5, label=r.name) for i, r in enumerate(runs)]
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(0.01, 1 - 0.45 / height),
        frameon=False,
        ncol=ncol,
        fontsize=10,
    )
    fig.text(
        0.99,
        top,
        "dotted lines on train/loss: health warnings (orange) and errors (red)",
        ha="right",
        va="top",
        fontsize=8,
        color="#555",
    )
    return fig


SOFTWARE = "hellolondon report"  # in the PNG's metadata: how a report's PNG is told from others


def write_png(runs: list[RunData], path: Path) -> Path:
    figure(runs).savefig(path, format="png", metadata={"Software": SOFTWARE})
    return path
