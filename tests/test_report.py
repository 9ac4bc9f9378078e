"""The offline report from synthetic run folders: PNG and self-contained HTML, several runs with
different metric sets, findings and summary, and bad input handled with clear messages."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hellolondon.cli import main
from hellolondon.errors import UserError
from hellolondon.report import load_runs, summarize, write_report
from hellolondon.report.html import thin
from hellolondon.rundir import RunDir


def make_run(
    root: Path,
    name: str,
    iters: int = 300,
    gpu: bool = False,
    log_every: int = 10,
    eval_every: int = 50,
    finished: bool = True,
    seed: int = 0,
    events: list[dict] | None = None,
) -> Path:
    """A run folder as training writes one: config.json, metrics.jsonl (train and eval rows;
    MFU and gpu/* only on a GPU), events.jsonl and, when finished, summary.json."""
    rng = random.Random(seed)
    run = root / name
    run.mkdir(parents=True)
    per_step = 4096
    config = {
        "preset": "tiny",
        "train": {"max_iters": iters},
        "tracking": {"run_name": name},
        "hardware": {"tokens_per_step": per_step},
    }
    (run / "config.json").write_text(json.dumps(config))
    rows, t = [], 1_700_000_000.0
    for step in range(0, iters + 1, log_every):
        loss = 3.0 + 7.5 * math.exp(-step / (iters / 4)) + 0.05 * rng.gauss(0, 1)
        if step:
            dt = 15000.0 if step == log_every else 600 + 20 * rng.random()
            t += dt / 1000 * log_every
            row = {
                "step": step,
                "time": t,
                "train/loss": loss,
                "train/iter": step,
                "train/lr": 6e-4 * min(1.0, step / 30),
                "train/dt_ms": dt,
                "train/tokens_per_sec": per_step / (dt / 1000),
                "train/grad_norm": 1.0,
                "train/tokens_seen": step * per_step,
            }
            if gpu:
                row |= {
                    "train/mfu": 40.0 + rng.random(),
                    "gpu/mem_allocated_gb": 5.0,
                    "gpu/max_mem_allocated_gb": 7.5,
                    "gpu/mem_total_gb": 80.0,
                }
            rows.append(row)
        if step % eval_every == 0:
            rows.append(
                {
                    "step": step,
                    "time": t,
                    "eval/train_loss": loss,
                    "eval/iter": step,
                    "eval/val_loss": loss + 0.1,
                    "eval/val_ppl": math.exp(loss + 0.1),
                }
            )
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    events = (
        events
        if events is not None
        else [
            {
                "time": t,
                "level": "INFO",
                "title": "mid training",
                "text": "steps 10-100",
                "rule": "phase",
                "step": 10,
            },
            {
                "time": t,
                "level": "WARN",
                "title": "loss spike",
                "text": "loss 9 <b>",
                "rule": "spike",
                "step": 120,
            },
        ]
    )
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if finished:
        summary = {
            "best_val_loss": min(r["eval/val_loss"] for r in rows if "eval/val_loss" in r),
            "iterations": iters,
            "tokens_seen": iters * per_step,
            "wall_time_s": 123.4,
            "mean_tokens_per_sec": 6800.0,
            "stopped_early": False,
        }
        (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_report_of_one_run_writes_png_and_self_contained_html(tmp_path):
    run = make_run(tmp_path, "london-tiny-demo-1")
    out = write_report([run], run / "report")
    assert out == {"png": run / "report" / "report.png", "html": run / "report" / "report.html"}
    assert (
        out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out["png"].stat().st_size > 50_000
    )
    page = out["html"].read_text()
    # nothing to fetch when the page opens: no src/href to anywhere, no imports, no fetches
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "import(" not in page and "fetch(" not in page
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))
    assert [p["title"] for p in data["panels"]][:5] == [
        "train/loss",
        "train/mfu",
        "train/lr",
        "train/iter",
        "train/dt_ms",
    ]  # the W&B guide's five
    series = data["runs"][0]["series"]
    assert {"train/loss", "eval/val_loss", "eval/train_loss", "train/dt_ms"} <= set(series)
    assert "train/mfu" not in series  # a CPU run
    assert data["panels"][4]["clip"] < 15000  # the compile spike is drawn off scale
    assert data["panels"][4]["note"] == "max 15,000 ms (compilation) off scale"
    assert "loss 9 &lt;b&gt;" in page  # finding text escaped
    assert "123.4" not in page and "2m03s" in page  # wall time from summary.json, formatted
    assert "1.23M" in page  # tokens from summary.json: 300 * 4096


def test_several_runs_with_different_metric_sets_overlay(tmp_path):
    cpu = make_run(tmp_path, "cpu-run", seed=1)
    gpu = make_run(tmp_path, "gpu-run", gpu=True, iters=400, seed=2, finished=False)
    out = write_report([cpu, gpu], tmp_path / "cmp")
    page = out["html"].read_text()
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))
    assert [r["name"] for r in data["runs"]] == ["cpu-run", "gpu-run"]
    assert (
        "train/mfu" in data["runs"][1]["series"]
        and "gpu/mem_allocated_gb" in data["runs"][1]["series"]
    )
    runs, _ = load_runs([cpu, gpu])
    rows = [summarize(r) for r in runs]
    assert rows[0]["status"] == "finished" and rows[1]["status"] == "not finished (killed?)"
    assert rows[1]["tokens"] == 400 * 4096  # from the last train/tokens_seen row
    # tokens over training time, the compile row's 15 s included, as a finished run's summary
    assert rows[1]["tokens_per_sec"] == pytest.approx(
        400 * 4096 / (15 * 10 + 39 * 0.61 * 10), rel=0.02
    )
    assert rows[1]["best_val_loss"] == min(data["runs"][1]["series"]["eval/val_loss"][1])
    assert rows[0]["recipe"] == "adamw + cosine"  # a config from before the choice


def test_a_killed_run_with_a_truncated_last_line_still_renders(tmp_path, capsys):
    run = make_run(tmp_path, "killed", finished=False)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 310, "train/lo')
    out = write_report([run], tmp_path / "r")
    assert out["png"].is_file()
    assert "cut short" in capsys.readouterr().err
    assert "cut short" in out["html"].read_text()


def test_non_finite_values_are_left_out_of_the_curves(tmp_path):
    run = make_run(tmp_path, "nan")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 310, "train/loss": "nan", "train/lr": "inf"}) + "\n")
        f.write(json.dumps({"step": 320, "train/loss": 3.0, "train/lr": None}) + "\n")
    (runs, _) = load_runs([run])
    steps, losses = runs[0].series("train/loss")
    assert 310 not in steps and steps[-1] == 320 and all(math.isfinite(x) for x in losses)
    assert runs[0].series("train/lr")[0][-1] == 300


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        write_report([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="is a file, not a run folder"):
        write_report([tmp_path / "file.txt"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no metrics.jsonl"):
        write_report([tmp_path / "empty"], tmp_path / "out")
    make_run(tmp_path / "runs", "a")
    with pytest.raises(UserError, match="holds run folders.*runs/a"):
        write_report([tmp_path / "runs"], tmp_path / "out")
    started = tmp_path / "started"
    started.mkdir()
    (started / "config.json").write_text("{}")
    (started / "metrics.jsonl").write_text("")
    with pytest.raises(UserError, match="no metric rows"):
        write_report([started], tmp_path / "out")
    (started / "metrics.jsonl").unlink()
    (started / "metrics.jsonl").mkdir()  # said as it is, as `watch` says it, not "no rows"
    with pytest.raises(UserError, match=r"metrics.jsonl is a folder, not a file of rows"):
        write_report([started], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written on error
    (tmp_path / "notes.md").write_text("mine")
    with pytest.raises(UserError, match=r"notes.md cannot be created .*; choose another --out$"):
        write_report([tmp_path / "runs" / "a"], tmp_path / "notes.md")
    assert (tmp_path / "notes.md").read_text() == "mine"


@pytest.mark.parametrize("command", [["compare"], ["report"], ["watch", "--once"], ["reproduce"]])
def test_a_sweep_folder_is_named_as_one_with_its_trials(tmp_path, capsys, command):
    from hellolondon.cli import main

    sweep = tmp_path / "sweep-lr"
    make_run(sweep / "trials", "lr-001")
    (sweep / "sweep.yaml").write_text("name: lr\n")
    assert main([*command, str(sweep)]) == 2
    assert capsys.readouterr().err == (
        f"error: {sweep} is a sweep folder, not a run folder; give its trials, such as: "
        f"{sweep / 'trials' / 'lr-001'}\n"
    )
    assert sorted(p.name for p in sweep.iterdir()) == ["sweep.yaml", "trials"]


def test_cli_report_defaults_to_the_first_runs_folder_and_fails_in_one_line(tmp_path, capsys):
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", gpu=True)
    assert main(["report", str(a), str(b)]) == 0
    assert (a / "report" / "report.html").is_file()
    assert "report.png" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err and "\n" not in err


def test_a_blank_out_is_refused_not_read_as_the_current_folder(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path, "a")
    here = tmp_path / "here"
    here.mkdir()
    (here / "report.html").write_text("mine")
    monkeypatch.chdir(here)
    assert main(["report", str(run), "--out", ""]) == 2
    assert capsys.readouterr().err == (
        "error: --out is blank; give a path, or leave --out out for the default\n"
    )
    assert sorted(p.name for p in here.iterdir()) == ["report.html"]
    assert (here / "report.html").read_text() == "mine"


def test_a_page_or_png_of_your_own_is_not_replaced_by_a_report(tmp_path, capsys):
    run = make_run(tmp_path, "a")
    here = tmp_path / "site"
    here.mkdir()
    (here / "report.html").write_text("<html><title>my report</title></html>")
    (here / "notes.txt").write_text("kept")
    assert main(["report", str(run), "--out", str(here)]) == 2
    assert capsys.readouterr().err == (
        f"error: {here} holds report.html that `hellolondon report` did not write, and the "
        "report would replace them; move them away or choose another --out\n"
    )
    assert sorted(p.name for p in here.iterdir()) == ["notes.txt", "report.html"]
    assert (here / "report.html").read_text() == "<html><title>my report</title></html>"
    (here / "report.html").unlink()
    (here / "report.png").write_bytes(b"\x89PNG my own picture")
    assert main(["report", str(run), "--out", str(here)]) == 2
    assert "holds report.png that" in capsys.readouterr().err
    assert (here / "report.png").read_bytes() == b"\x89PNG my own picture"
    # an earlier report is replaced, its PNG alone too, and one whose PNG was not yet marked
    (here / "report.png").unlink()
    assert main(["report", str(run), "--out", str(here)]) == 0
    (here / "report.html").unlink()
    assert main(["report", str(run), "--out", str(here)]) == 0
    (here / "report.png").write_bytes(b"\x89PNG an unmarked PNG of an earlier version")
    assert main(["report", str(run), "--out", str(here)]) == 0
    assert sorted(p.name for p in here.iterdir()) == ["notes.txt", "report.html", "report.png"]


def test_a_report_that_fails_to_be_written_leaves_no_folder_it_made(tmp_path, monkeypatch, capsys):
    import errno

    import hellolondon.report as report

    def disk_full(runs, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    run = make_run(tmp_path, "a")
    monkeypatch.setattr(report, "write_png", disk_full)
    assert main(["report", str(run), "--out", str(tmp_path / "new" / "report")]) == 1
    assert capsys.readouterr().err.startswith("error: the disk is full")
    assert not (tmp_path / "new").exists()


def test_thinning_keeps_spikes():
    xs = list(range(10_000))
    ys = [1.0] * 10_000
    ys[5_000] = 50.0
    tx, ty = thin(xs, ys, limit=500)
    assert len(tx) <= 1000 and 50.0 in ty and tx[0] == 0 and tx[-1] == 9_999


# The page's script run in Node against a minimal stand-in for the DOM: enough for `draw`, which
# builds each chart as SVG elements. Skipped where Node is not installed.
DOM_STUB = r"""
class Node {
  constructor(tag) { this.tag = tag; this.attrs = {}; this.children = []; this.text = ''; this.style = {}; this.html = ''; }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  appendChild(c) { this.children.push(c); return c; }
  set innerHTML(v) { this.children = []; this.html = String(v); }
  get innerHTML() { return this.html; }
  set textContent(v) { this.text = String(v); }
  get textContent() { return this.text; }
  get offsetWidth() { return 0; }
  getBoundingClientRect() { return {left: 0, top: 0, width: W, height: H}; }  // 1 px a unit
  all() { return [this, ...this.children.flatMap(c => c.all())]; }
}
const DATA = new Node('script');
const document = {
  createElementNS: (ns, tag) => new Node(tag),
  getElementById: id => id === 'data' ? DATA : new Node('div'),
};
// One chart drawn into a stand-in panel: its svg, its tooltip and all the svg's nodes.
function drawPanel(title) {
  const svg = new Node('svg'), tip = new Node('div');
  draw(D.panels.find(p => p.title === title), {querySelector: s => s === 'svg' ? svg : tip});
  return {svg, tip, nodes: svg.all()};
}
const texts = (nodes, cls) => nodes.filter(n => n.attrs.class === cls).map(n => n.text);
"""


def run_page_script(page: str, probe: str, timeout: float = 20) -> Any:
    """Run the page's own script (all but its last line, `build();`) in Node, then `probe`: JS
    whose value is printed as JSON."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js to run the page's script")
    data = re.search(r'id="data">(.*?)</script>', page, re.S).group(1)
    script = re.search(r"<script>(.*?)</script>", page.split('id="data">', 1)[1], re.S).group(1)
    script = script.rstrip().removesuffix("build();")
    source = (
        DOM_STUB
        + f"DATA.textContent = {json.dumps(data)};\n"
        + script
        + f"\nprocess.stdout.write(JSON.stringify((() => {{ {probe} }})()));\n"
    )
    try:
        out = subprocess.run(
            [node, "--max-old-space-size=256", "-e", source],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the page's script ran longer than {timeout}s")
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_log_scale_on_a_step_time_with_a_compile_spike_draws_the_chart(tmp_path):
    page = write_report([make_run(tmp_path, "a")], tmp_path / "r")["html"].read_text()
    drawn = run_page_script(
        page,
        """
        const i = D.panels.findIndex(p => p.title === 'train/dt_ms');
        const svg = new Node('svg'), box = {querySelector: s => s === 'svg' ? svg : new Node('div')};
        logY.add('train/dt_ms');
        draw(D.panels[i], box);
        const nodes = svg.all();
        return {
          lines: nodes.filter(n => n.tag === 'polyline').length,
          ticks: texts(nodes, 'ytick'),
          notes: nodes.filter(n => n.attrs.class === 'note').map(n => n.text),
          bad: nodes.filter(n => Object.values(n.attrs).some(v => /NaN|Infinity/.test(v))).length,
        };
        """,
    )
    assert drawn["lines"] == 1 and drawn["bad"] == 0
    assert drawn["notes"] == ["max 15,000 ms (compilation) off scale"]
    assert 2 <= len(drawn["ticks"]) <= 10 and "0" not in drawn["ticks"]  # no zero on a log axis


@pytest.mark.parametrize("n", [2_001, 2_999, 3_999, 5_999, 60_000])
def test_thinning_keeps_about_the_limit_whatever_the_length(n):
    xs = list(range(n))
    ys = [float(x % 7) for x in xs]
    tx, ty = thin(xs, ys, limit=2_000)
    assert 1_000 <= len(tx) <= 2_001 and tx[0] == 0 and tx[-1] == n - 1
    assert tx == sorted(set(tx)) and all(ys[x] == y for x, y in zip(tx, ty, strict=True))


def test_the_step_time_axis_holds_a_short_slow_run_beside_a_long_fast_one(tmp_path):
    fast = make_run(tmp_path, "fast", iters=3000)  # 300 rows at ~600 ms, one 15 s compile step
    slow = make_run(tmp_path, "slow", iters=300, seed=3)  # 30 rows at ~2,000 ms
    rows = [json.loads(line) for line in (slow / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        if row.get("train/dt_ms", 15000.0) < 15000.0:
            row["train/dt_ms"] *= 3.3
    (slow / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_report([fast, slow], tmp_path / "r")["html"].read_text()
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))
    panel = next(p for p in data["panels"] if p["title"] == "train/dt_ms")
    slow_steady = sorted(data["runs"][1]["series"]["train/dt_ms"][1])[:-1]  # the spike left out
    assert max(slow_steady) < panel["clip"] < 15000  # the slow run in view, the spike still off
    assert panel["note"] == "max 15,000 ms (compilation) off scale"


@pytest.mark.parametrize("n_runs", [1, 4, 8])
def test_png_header_never_runs_into_the_panel_titles(tmp_path, n_runs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from hellolondon.report.png import figure

    paths = [make_run(tmp_path, f"run {i} with a long name", seed=i) for i in range(n_runs)]
    diverged = paths[0] / "metrics.jsonl"  # a loss of 1e21: the panel title rises over "1e21"
    rows = [json.loads(line) for line in diverged.read_text().splitlines()]
    for row in rows:
        if "train/loss" in row:
            row["train/loss"] *= 1e21
    diverged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs, _ = load_runs(paths)
    fig = figure(runs)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # places the titles above the exponents
    renderer = canvas.get_renderer()
    header = [*fig.legends, *fig.texts]  # the texts: the title and the note
    panel_tops = [a.title for a in fig.axes] + [a.yaxis.offsetText for a in fig.axes]
    boxes = [(h, h.get_window_extent(renderer)) for h in header]
    for artist in panel_tops:
        if artist.get_text():
            box = artist.get_window_extent(renderer)
            assert not any(box.overlaps(b) for _, b in boxes), artist.get_text()
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), (a, b)


def test_the_charts_label_their_x_axis_keep_the_last_tick_and_key_their_line_styles(tmp_path):
    page = write_report([make_run(tmp_path, "a", iters=3000, gpu=True)], tmp_path / "r")
    drawn = run_page_script(
        page["html"].read_text(),
        """
        const out = {};
        for (const p of D.panels) {
          const {nodes} = drawPanel(p.title);
          const at = cls => nodes.filter(n => n.attrs.class === cls).map(n => [n.text, +n.attrs.x]);
          out[p.title] = {
            xlabel: texts(nodes, 'xlabel'),
            xticks: at('xtick'),
            key: at('key'),
            dashes: nodes.filter(n => n.tag === 'line' && n.attrs.stroke === '#444').map(n => n.attrs['stroke-dasharray']),
          };
        }
        out.W = W;
        return out;
        """,
    )
    width = drawn.pop("W")
    for title, panel in drawn.items():
        assert panel["xlabel"] == ["step"], title  # as the PNG's x axes
        # 10 px digits are about 6.4 px wide: the centred last label stays inside the chart
        assert all(x + 3.2 * len(t) <= width for t, x in panel["xticks"]), (title, panel["xticks"])
    assert drawn["train/loss"]["xticks"][-1][0] == "3000"
    assert [t for t, _ in drawn["eval loss"]["key"]] == ["train_loss", "val_loss"]
    assert drawn["eval loss"]["dashes"] == ["", "6 3"]  # solid and dashed, as the curves
    key = drawn["GPU memory"]["key"]  # only the metrics this run logged
    assert [t for t, _ in key] == ["mem_allocated", "max_mem_allocated"]
    assert key[-1][1] + 5.4 * len(key[-1][0]) <= width  # 9 px text
    assert drawn["train/loss"]["key"] == []  # one line per run: the run legend says it all


def test_hover_shows_a_run_only_where_it_has_data_in_view(tmp_path):
    long, short = make_run(tmp_path, "long", iters=3000), make_run(tmp_path, "short", iters=60)
    page = write_report([long, short], tmp_path / "r")["html"].read_text()
    tips = run_page_script(
        page,
        """
        const hover = (z, step) => {
          zoom = z;
          const {svg, tip} = drawPanel('train/loss');
          svg.onmousemove({clientX: L + (step - z[0]) / (z[1] - z[0]) * (W - L - R), clientY: 50});
          return tip.style.display === 'block' ? tip.innerHTML : '';
        };
        return {
          inside: hover([0, 3000], 50),
          past_end: hover([0, 3000], 200),
          zoomed: hover([100, 400], 110),
          short_only: (hidden.add(0), hover([0, 3000], 200)),
        };
        """,
    )
    assert "long" in tips["inside"] and "short" in tips["inside"] and "@ 50" in tips["inside"]
    assert "long" in tips["past_end"] and "short" not in tips["past_end"]  # short ended at 60
    assert "long" in tips["zoomed"] and "@ 110" in tips["zoomed"]
    assert "short" not in tips["zoomed"]  # its last point, 60, is outside the zoom
    assert tips["short_only"] == ""  # no run with data there: no empty tooltip


def test_a_narrow_log_axis_still_gets_two_labelled_ticks(tmp_path):
    page = write_report([make_run(tmp_path, "a", gpu=True)], tmp_path / "r")["html"].read_text()
    drawn = run_page_script(
        page,
        """
        logY.add('train/mfu');  // MFU between 40 and 41
        return {log: texts(drawPanel('train/mfu').nodes, 'ytick'), narrow: ticks(40.01, 40.99, 4)};
        """,
    )
    assert len(drawn["log"]) >= 2 and len(drawn["narrow"]) >= 2
    assert all(40 <= t <= 41 for t in drawn["narrow"])


def test_huge_losses_print_compactly_in_the_tables_and_the_page(tmp_path):
    from hellolondon.report.png import figure
    from hellolondon.units import fmt_value, perplexity

    assert fmt_value(3316053041453541097472.0) == "3.32e21" and fmt_value(3.14159) == "3.1416"
    # exp(loss), not capped where it would read as measured: a diverged loss's is inf
    assert perplexity(2.0) == pytest.approx(7.389056) and perplexity(60.0) > 1e26
    assert perplexity(2609139.09) == float("inf")
    assert fmt_value(-2.5e-5) == "-2.50e-5" and fmt_value(0.0) == "0.0000"
    diverged = make_run(tmp_path, "diverged", finished=False)
    rows = [json.loads(line) for line in (diverged / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        for key in ("train/loss", "eval/train_loss", "eval/val_loss"):
            if key in row:
                row[key] *= 1e21
    (diverged / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = [diverged, make_run(tmp_path, "ok", seed=1)]
    page = write_report(paths, tmp_path / "r")["html"].read_text()
    tables = page.split('id="data"')[0]  # the summary and the comparison
    assert tables.count("e21") >= 3 and not re.search(r"\d{9,}", tables)
    cells = figure(load_runs(paths)[0]).axes[-1].tables[0].get_celld().values()
    png_text = [c.get_text().get_text() for c in cells]
    assert any(t.startswith("3.") and t.endswith("e21") for t in png_text)
    assert not any(re.search(r"\d{9,}", t) for t in png_text)
    assert run_page_script(page, "return fmt(3316053041453541097472);") == "3.32e21"


def test_png_texts_fall_back_to_an_installed_cjk_font(tmp_path, monkeypatch):
    from matplotlib.text import Text

    from hellolondon.report import png

    runs, _ = load_runs([make_run(tmp_path, "伦敦 run")])
    monkeypatch.setattr(png, "CJK_FONTS", ())
    assert all(t.get_family() == ["DejaVu Sans"] for t in png.figure(runs).findobj(Text))
    monkeypatch.setattr(png, "CJK_FONTS", ("No Such Font", "DejaVu Serif"))  # stands in for one
    fig = png.figure(runs)
    assert fig.legends[0].get_texts()[0].get_text() == "伦敦 run"
    families = {tuple(t.get_family()) for t in fig.findobj(Text)}
    assert families == {("DejaVu Sans", "DejaVu Serif")}  # the installed ones only, on every text


def test_on_a_phone_the_page_does_not_scroll_sideways(tmp_path):
    """A 390 px wide phone: the chart grid's columns shrink to the screen and each table
    (the summary, the comparison, the findings) scrolls inside its own box."""
    paths = [make_run(tmp_path, f"run-{i}", seed=i) for i in range(3)]
    page = write_report(paths, tmp_path / "r")["html"].read_text()
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    grid = re.search(r"#panels \{[^}]*grid-template-columns:([^;]*);", css).group(1)
    assert re.search(r"minmax\(min\(\d+px, 100%\), 1fr\)", grid), grid  # never wider than the page
    assert re.search(r"\.wide \{[^}]*overflow-x: auto", css)
    body = page.split('id="data"')[0]
    assert body.count("<table>") == 3
    assert body.count('<div class="wide"><table>') == body.count("<table>")


def contrast(fg: str, bg: str = "#fff") -> float:
    """WCAG's contrast ratio of two #rgb or #rrggbb colours (4.5 is the minimum for text)."""

    def luminance(colour: str) -> float:
        h = colour.lstrip("#")
        h = "".join(c * 2 for c in h) if len(h) == 3 else h
        rgb = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_page_texts_are_readable_against_their_white_background(tmp_path):
    page = write_report([make_run(tmp_path, "a")], tmp_path / "r")["html"].read_text()
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    for rule in ("tr.INFO td.level", "tr.WARN td.level", "tr.ERROR td.level", ".muted", ".empty"):
        colour = re.search(re.escape(rule) + r" \{[^}]*(?:color|fill): (#[0-9a-f]+)", css).group(1)
        assert contrast(colour) >= 4.5, (rule, colour, contrast(colour))


def test_the_charts_have_names_and_the_run_legend_works_from_the_keyboard(tmp_path):
    paths = [make_run(tmp_path, "a <b>"), make_run(tmp_path, "b", seed=1)]
    page = write_report(paths, tmp_path / "r")["html"].read_text()
    built = run_page_script(
        page,
        r"""
        // the stand-in DOM, enough for build(): elements kept by id, a box's svg found again
        const byId = {};
        document.getElementById = id => id === 'data' ? DATA : (byId[id] ||= new Node('div'));
        document.createElement = tag => new Node(tag);
        document.querySelectorAll = () => [];
        Node.prototype.querySelector = function (s) { return this.children.find(c => c.tag === s) || (this[s] ||= new Node(s)); };
        Node.prototype.classList = {toggle() {}};
        const append = Node.prototype.appendChild;
        Node.prototype.appendChild = function (c) { if (c.id) byId[c.id] = c; return append.call(this, c); };
        build();
        const svgs = Object.keys(byId).filter(k => /^panel\d+$/.test(k)).map(k => byId[k].querySelector('svg'));
        const legend = byId.legend.children;
        const before = legend.map(b => b.attrs['aria-pressed']);
        legend[0].onclick();
        return {
          tags: legend.map(b => b.tag), before, after: legend.map(b => b.attrs['aria-pressed']),
          roles: svgs.map(s => s.attrs.role), labels: svgs.map(s => s.attrs['aria-label']),
        };
        """,
    )
    assert built["tags"] == ["button", "button"]  # reached with Tab, pressed with Enter or Space
    assert built["before"] == ["true", "true"] and built["after"] == ["false", "true"]
    assert set(built["roles"]) == {"img"}
    labels = built["labels"]
    assert labels[0] == "train/loss by step: b"  # run "a <b>" hidden by the click
    assert "train/mfu by step: no MFU" in labels[1]  # an empty chart says why


def test_a_tooltip_wider_than_its_chart_stays_on_the_screen(tmp_path):
    """A long run name on a phone: the tooltip wraps within the chart instead of running off its
    left edge, where it was cut off."""
    page = write_report([make_run(tmp_path, "x" * 120)], tmp_path / "r")["html"].read_text()
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    tip_css = re.search(r"\.tip \{([^}]*)\}", css).group(1)
    assert "max-width" in tip_css and "nowrap" not in tip_css
    left = run_page_script(
        page,
        """
        const svg = new Node('svg'), tip = new Node('div');
        Object.defineProperty(tip, 'offsetWidth', {get: () => 2 * W});  // wider than the chart
        draw(D.panels[0], {querySelector: s => s === 'svg' ? svg : tip});
        svg.onmousemove({clientX: W / 2, clientY: 50});
        return [tip.style.display, parseFloat(tip.style.left)];
        """,
    )
    assert left[0] == "block" and left[1] >= 0


def test_the_table_says_how_a_run_failed_or_was_aborted_as_runs_and_watch_do(tmp_path):
    failed, aborted = make_run(tmp_path, "failed"), make_run(tmp_path, "aborted")
    for run in (failed, aborted):  # a training process's record, as a start writes it
        (run / "process.json").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    RunDir(failed).mark_failed("OutOfMemoryError at step 40")
    RunDir(aborted).mark_aborted("a second Ctrl-C", 12)
    runs, _ = load_runs([failed, aborted])
    assert [summarize(r)["status"] for r in runs] == [
        "failed: OutOfMemoryError at step 40",
        "aborted by a second Ctrl-C at step 12",
    ]


def _killed_resume(tmp_path: Path) -> Path:
    """A run that finished 300 steps (its summary), was resumed to 400 and killed at 360."""
    run = make_run(tmp_path, "resumed", iters=360, finished=False)
    summary = {"best_val_loss": 9.9, "best_step": 50, "iterations": 300, "tokens_seen": 300 * 4096}
    summary |= {"wall_time_s": 100.0, "mean_tokens_per_sec": 1.0, "final_train_loss": 9.0}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_rows_past_a_resumed_runs_old_summary_give_its_numbers(tmp_path):
    run = _killed_resume(tmp_path)
    (data,), _ = load_runs([run])
    row = summarize(data)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["eval/val_loss"], r["step"]) for r in rows if "eval/val_loss" in r]
    assert (row["best_val_loss"], row["best_val_step"]) == min(evals)  # value and step agree
    assert row["iterations"] == 360 and row["tokens"] == 360 * 4096
    newer = [r["time"] for r in rows if r["step"] > 300]
    assert row["wall_time_s"] == pytest.approx(100.0 + max(newer) - min(newer))
    assert row["tokens_per_sec"] != 1.0


def test_a_runs_tokens_per_second_is_its_tokens_over_its_training_time(tmp_path):
    run = make_run(tmp_path, "killed", finished=False)
    (data,), _ = load_runs([run])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/dt_ms" in r]
    seconds = sum(r["train/dt_ms"] / 1000 * 10 for r in train)  # a row every 10 steps
    assert summarize(data)["tokens_per_sec"] == pytest.approx(train[-1]["step"] * 4096 / seconds)


def test_a_run_that_ended_on_nan_says_so_in_the_table(tmp_path):
    run = make_run(tmp_path, "nan")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(
            json.dumps({"step": 310, "time": 2e9, "train/loss": "nan", "train/iter": 310}) + "\n"
        )
    summary = json.loads((run / "summary.json").read_text()) | {"iterations": 310}
    (run / "summary.json").write_text(json.dumps(summary))
    (data,), _ = load_runs([run])
    assert math.isnan(summarize(data)["final_train_loss"])
    html = write_report([run], tmp_path / "out")["html"].read_text()
    assert '<td class="final train loss">nan</td>' in html
