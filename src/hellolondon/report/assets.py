"""The style and script inlined into the HTML report: plain CSS and vanilla JavaScript that
draw the panels as SVG, so the page needs no network when it is opened."""

CSS = """
body { font: 14px system-ui, sans-serif; margin: 16px 24px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.muted { color: #666; font-size: 12px; }
#legend button { margin: 4px 14px 4px 0; padding: 0; border: 0; background: none; color: inherit;
                 font: inherit; cursor: pointer; user-select: none; }
#legend button.off { opacity: 0.35; text-decoration: line-through; }
#legend i { display: inline-block; width: 14px; height: 4px; margin-right: 6px; vertical-align: middle; }
#panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(380px, 100%), 1fr)); gap: 12px; }
.panel { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 6px 8px; position: relative; }
.panel h3 { font-size: 13px; margin: 0; display: flex; justify-content: space-between; }
.panel h3 button { font-size: 11px; border: 1px solid #ccc; background: #f4f4f4; border-radius: 3px; cursor: pointer; }
.panel svg { width: 100%; height: auto; display: block; }
.empty { fill: #767676; font-size: 13px; } .note { fill: #666; font-size: 10px; }
.axis text { font-size: 10px; fill: #555; } .axis line { stroke: #eee; } .key { font-size: 9px; fill: #444; }
.tip { position: absolute; pointer-events: none; background: rgba(255,255,255,.95); border: 1px solid #bbb;
       border-radius: 4px; padding: 4px 6px; font-size: 11px; display: none; z-index: 2;
       width: max-content; max-width: 90%; overflow-wrap: anywhere; }  /* a long run name wraps */
table { border-collapse: collapse; background: #fff; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.wide { overflow-x: auto; }  /* a table wider than a phone scrolls on its own, not the page */
@media (max-width: 600px) { body { margin: 12px; } }
tr.INFO td.level { color: #1a7f4b; } tr.WARN td.level { color: #a85d00; font-weight: bold; }
tr.ERROR td.level { color: #d22; font-weight: bold; }  /* each 4.5:1 or more on white */
#filters label { margin-right: 12px; }
td.detail { min-width: 16em; }  /* on a phone the table scrolls rather than squeeze the text */
"""

JS = r"""
const D = JSON.parse(document.getElementById('data').textContent);
const W = 400, H = 240, L = 52, R = 24, T = 20, B = 34;  // R: room for the last x label's half
const hidden = new Set(), logY = new Set();
let zoom = null;  // [x0, x1] shared by every panel
const DASHES = ['', '6 3', '2 3'];  // a panel's first, second and third metric, as the PNG's styles
const short = key => key.split('/').pop().replace(/_gb$/, '');  // the unit is in the title

function fmt(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2).replace('e+', 'e');  // 3.32e21, as the tables
  return (+v.toPrecision(4)).toString();
}
function ticks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const out = [];
  for (let k = Math.ceil(lo / step); k * step <= hi + step * 1e-9; k++) out.push(+(k * step).toPrecision(12));
  return out.length < 2 && n < 64 ? ticks(lo, hi, n * 2) : out;  // a narrow range still gets two
}
function logTicks(lo, hi) {
  const out = [];
  if (!(lo > 0)) return ticks(lo, hi, 4);  // log10(0) would never end the loop
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
    for (const m of [1, 2, 3, 5]) { const t = m * Math.pow(10, e); if (t >= lo && t <= hi) out.push(t); }
  return out.length >= 2 ? out : ticks(lo, hi, 4);
}
// The index of the point of sorted `xs` nearest `step` within the x range [x0, x1], or -1 where
// the run has no data there: the cursor is more than `tol` before its first point in the range
// or past its last, so a short run never shows its last value far beyond its end.
function nearest(xs, step, x0, x1, tol) {
  const count = f => { let a = 0, b = xs.length; while (a < b) { const m = (a + b) >> 1; if (f(xs[m])) a = m + 1; else b = m; } return a; };
  const first = count(x => x < x0), last = count(x => x <= x1) - 1;
  if (first > last || step < xs[first] - tol || step > xs[last] + tol) return -1;
  const k = Math.min(Math.max(count(x => x < step), first), last);
  return k > first && step - xs[k - 1] < xs[k] - step ? k - 1 : k;
}
function lineKey(panel, series, svg) {
  // which line is which metric: the runs' colours are in the legend above the charts
  let kx = L;
  panel.keys.forEach((key, j) => {
    if (!series.some(s => s.key === key)) return;
    el('line', {x1: kx, x2: kx + 16, y1: T - 8, y2: T - 8, stroke: '#444', 'stroke-width': 1.5, 'stroke-dasharray': DASHES[j % 3]}, svg);
    el('text', {x: kx + 20, y: T - 5, class: 'key'}, svg).textContent = short(key);
    kx += 32 + short(key).length * 5;
  });
}
function el(tag, attrs, parent) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);  // a namespace, not a fetch
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function visibleSeries(panel) {
  const out = [];
  D.runs.forEach((run, i) => {
    if (hidden.has(i)) return;
    panel.keys.forEach((key, j) => {
      const s = run.series[key];
      if (s && s[0].length) out.push({run: run.name, color: run.color, key, dash: DASHES[j % 3], xs: s[0], ys: s[1]});
    });
  });
  return out;
}
function draw(panel, box) {
  const svg = box.querySelector('svg');
  svg.innerHTML = '';
  const series = visibleSeries(panel);
  // what a screen reader says for the chart: its title and the runs drawn, or why it is empty
  const names = [...new Set(series.map(s => s.run))].join(', ');
  svg.setAttribute('aria-label', `${panel.title} by step: ${names || panel.empty}`);
  if (!series.length) { el('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty'}, svg).textContent = panel.empty; return; }
  const log = logY.has(panel.title);
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of series) s.xs.forEach((x, k) => {
    if (zoom && (x < zoom[0] || x > zoom[1])) return;
    const y = s.ys[k];
    if (log && y <= 0) return;
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  });
  if (zoom) { x0 = zoom[0]; x1 = zoom[1]; }
  if (!isFinite(y0)) { el('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty'}, svg).textContent = 'no data in this range'; return; }
  const clipped = panel.clip && y1 > panel.clip;
  if (clipped) { y1 = panel.clip; if (!log) y0 = 0; }  // a compile spike: drawn off scale
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  else if (!log) { const pad = (y1 - y0) * 0.05; y0 = y0 === 0 ? 0 : y0 - pad; y1 += pad; }
  const f = log ? Math.log10 : (v => v), fy0 = f(y0), fy1 = f(y1);
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = y => T + (1 - (f(y) - fy0) / (fy1 - fy0)) * (H - T - B);
  const axis = el('g', {class: 'axis'}, svg);
  const yt = log ? logTicks(y0, y1) : ticks(y0, y1, 4);
  for (const t of yt) { el('line', {x1: L, x2: W - R, y1: sy(t), y2: sy(t)}, axis); el('text', {x: L - 4, y: sy(t) + 3, 'text-anchor': 'end', class: 'ytick'}, axis).textContent = fmt(t); }
  for (const t of ticks(x0, x1, 5)) el('text', {x: sx(t), y: H - 16, 'text-anchor': 'middle', class: 'xtick'}, axis).textContent = fmt(t);
  el('text', {x: L + (W - L - R) / 2, y: H - 3, 'text-anchor': 'middle', class: 'xlabel'}, axis).textContent = 'step';
  if (panel.keys.length > 1) lineKey(panel, series, svg);
  el('rect', {x: L, y: T, width: W - L - R, height: H - T - B, fill: 'none', stroke: '#ccc'}, svg);
  if (clipped) el('text', {x: W - R - 4, y: T + 12, 'text-anchor': 'end', class: 'note'}, svg).textContent = panel.note;
  const clip = 'c' + Math.random().toString(36).slice(2);
  el('rect', {x: L, y: T, width: W - L - R, height: H - T - B}, el('clipPath', {id: clip}, svg));
  const g = el('g', {'clip-path': `url(#${clip})`}, svg);
  if (panel.title === 'train/loss') for (const e of D.events) {
    if ((e.level === 'WARN' || e.level === 'ERROR') && e.step != null && !hidden.has(e.run_index) && e.step >= x0 && e.step <= x1)
      el('line', {x1: sx(e.step), x2: sx(e.step), y1: T, y2: H - B, stroke: e.level === 'ERROR' ? '#d22' : '#f90', 'stroke-dasharray': '2 2'}, g)
        .appendChild(el('title', {})).textContent = `${e.run}: ${e.title} at iter ${e.step}`;
  }
  for (const s of series) {
    const pts = [];
    s.xs.forEach((x, k) => { if (x >= x0 && x <= x1 && !(log && s.ys[k] <= 0)) pts.push(sx(x).toFixed(1) + ',' + sy(Math.min(s.ys[k], y1)).toFixed(1)); });
    el('polyline', {points: pts.join(' '), fill: 'none', stroke: s.color, 'stroke-width': 1.5, 'stroke-dasharray': s.dash}, g);
    if (pts.length < 3) pts.forEach(p => { const [cx, cy] = p.split(','); el('circle', {cx, cy, r: 2.5, fill: s.color}, g); });
  }
  const cursor = el('line', {y1: T, y2: H - B, stroke: '#888', visibility: 'hidden'}, svg);
  const band = el('rect', {y: T, height: H - T - B, fill: 'rgba(80,120,200,.15)', visibility: 'hidden'}, svg);
  const tip = box.querySelector('.tip');
  const toX = ev => { const r = svg.getBoundingClientRect(); return (ev.clientX - r.left) / r.width * W; };
  const toStep = px => x0 + (px - L) / (W - L - R) * (x1 - x0);
  let drag = null;
  svg.onmousemove = ev => {
    const px = toX(ev);
    if (px < L || px > W - R) { cursor.setAttribute('visibility', 'hidden'); tip.style.display = 'none'; return; }
    cursor.setAttribute('x1', px); cursor.setAttribute('x2', px); cursor.setAttribute('visibility', 'visible');
    if (drag !== null) { band.setAttribute('x', Math.min(drag, px)); band.setAttribute('width', Math.abs(px - drag)); band.setAttribute('visibility', 'visible'); }
    const step = toStep(px), tol = 4 * (x1 - x0) / (W - L - R), lines = [];  // 4 pixels
    for (const s of series) {
      const k = nearest(s.xs, step, x0, x1, tol);
      if (k < 0) continue;
      const key = panel.keys.length > 1 ? ' ' + short(s.key) : '';
      lines.push(`<span style="color:${s.color}">&#9632;</span> ${esc(s.run)}${key}: <b>${fmt(s.ys[k])}</b> @ ${s.xs[k]}`);
    }
    tip.innerHTML = lines.join('<br>');
    tip.style.display = lines.length ? 'block' : 'none';
    const r = svg.getBoundingClientRect();
    // beside the cursor, moved left to stay in the chart, but never past its left edge
    tip.style.left = Math.max(0, Math.min(ev.clientX - r.left + 14, r.width - tip.offsetWidth)) + 'px';
    tip.style.top = (ev.clientY - r.top + 30) + 'px';
  };
  svg.onmouseleave = () => { cursor.setAttribute('visibility', 'hidden'); tip.style.display = 'none'; drag = null; band.setAttribute('visibility', 'hidden'); };
  svg.onmousedown = ev => { drag = toX(ev); ev.preventDefault(); };
  svg.onmouseup = ev => {
    if (drag === null) return;
    const a = toStep(Math.min(drag, toX(ev))), b = toStep(Math.max(drag, toX(ev)));
    drag = null;
    if (b - a > (x1 - x0) / 200) { zoom = [a, b]; redraw(); }
  };
  svg.ondblclick = () => { zoom = null; redraw(); };
}
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c])); }
function redraw() { D.panels.forEach((p, i) => draw(p, document.getElementById('panel' + i))); }
function build() {
  const legend = document.getElementById('legend');
  D.runs.forEach((run, i) => {
    const s = document.createElement('button');  // a button: the keyboard reaches it too
    s.type = 'button'; s.title = 'hide or show this run'; s.setAttribute('aria-pressed', 'true');
    s.innerHTML = `<i style="background:${run.color}"></i>${esc(run.name)}`;
    s.onclick = () => {
      hidden.has(i) ? hidden.delete(i) : hidden.add(i);
      s.classList.toggle('off'); s.setAttribute('aria-pressed', String(!hidden.has(i))); redraw();
    };
    legend.appendChild(s);
  });
  const panels = document.getElementById('panels');
  D.panels.forEach((p, i) => {
    const box = document.createElement('div');
    box.className = 'panel'; box.id = 'panel' + i;
    box.innerHTML = `<h3><span>${esc(p.title)}${p.unit ? ' <span class="muted">(' + esc(p.unit) + ')</span>' : ''}</span><button title="logarithmic y axis">log</button></h3><div class="tip"></div>`;
    box.appendChild(el('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img'}));
    box.querySelector('button').onclick = ev => { logY.has(p.title) ? logY.delete(p.title) : logY.add(p.title); ev.target.style.fontWeight = logY.has(p.title) ? 'bold' : ''; draw(p, box); };
    panels.appendChild(box);
  });
  document.querySelectorAll('#filters input').forEach(cb => cb.onchange = () => {
    document.querySelectorAll('#findings tr.' + cb.value).forEach(tr => tr.style.display = cb.checked ? '' : 'none');
  });
  redraw();
}
build();
"""
