"""``bench report DIR``: DIR/report/index.html, one self-contained page of everything DIR/results.csv holds.

The paper's Tables 1-4 (bench.report.tables, rendered by bench.report.render), Figures 3-4 (bench.report.plots,
inlined as SVG data URIs, so that the figures' element ids cannot collide), probe accuracy per module, memory
and throughput, the state of every run and, with ``--reference``, ``bench check``'s verdict on every cell.
A number's provenance (runs, seeds, commits, config hashes, devices) is in its tooltip and in a details block.
No fetches, no timestamps: the same results give the same bytes. ``--screenshot`` renders the page in headless
Chromium (bench.report.browser).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import re
import sys
import tempfile
from collections import Counter
from html import escape
from pathlib import Path

from bench.record import atomic_write_text
from bench.report import aggregate as agg
from bench.report import browser, check, plots, render, tables
from bench.report import reference as refmod
from bench.report.aggregate import Cell
from bench.report.check import Verdict
from bench.report.model import Table
from bench.report.paper import DEFAULT_PAPER, Paper, PaperError, load_paper

REPORT_PAGE = Path("report") / "index.html"
WORST_FIRST = (check.FAILED, check.REGRESSED, check.MISSING, check.SKIPPED, check.NEW, check.BETTER, check.OK)
ATTENTION = (check.FAILED, check.REGRESSED, check.MISSING)
RESOURCES = {
    "peak_mem_bytes": "training peak memory (MiB)", "run_peak_mem_bytes": "whole-run peak memory (MiB)",
    "eval_peak_mem_bytes": "evaluation peak memory (MiB)", "s_per_step": "time per step (s)",
    "samples_per_s": "throughput (samples/s)", "eval_s": "evaluation time (s)", "wall_s": "wall time (s)",
}  # fmt: skip
"""Memory and speed metrics shown per method when results.csv has them (scales from check.units)."""
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#7f7f7f", "#000000", "#b8860b")
MONO = 'ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace'
CSS = f"""
:root{{--fg:#1d2327;--muted:#5c6873;--line:#dde3e8;--soft:#f5f7f9;--accent:#2c5d8f}}
*{{box-sizing:border-box}}
body{{margin:0;color:var(--fg);background:#fff;
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}}
.wrap{{max-width:76rem;margin:0 auto;padding:0 1rem}}
header.top{{background:var(--soft);border-bottom:1px solid var(--line);padding:1.4rem 0 1rem}}
h1{{font-size:1.6rem;margin:0 0 .3rem}}
h2{{font-size:1.25rem;margin:2.2rem 0 .4rem;padding-top:1rem;border-top:1px solid var(--line)}}
nav.toc h2{{border:0;margin-top:1.2rem;padding:0}}
h3{{font-size:1.05rem;margin:1.4rem 0 .3rem}}
a{{color:var(--accent)}}
.muted,.facts,figcaption,.notes,footer{{color:var(--muted)}}
.facts{{margin:.2rem 0}}
nav.toc ol{{columns:2 15rem;margin:.3rem 0 0;padding-left:1.3rem}}
.scroll{{overflow-x:auto;border:1px solid var(--line);border-radius:6px;margin:.5rem 0}}
table{{border-collapse:collapse;width:100%;font-size:.92rem;font-variant-numeric:tabular-nums}}
th,td{{padding:.35rem .6rem;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap;
vertical-align:baseline}}
th:first-child,td:first-child,.text{{text-align:left}}
th[scope=row]{{font-weight:500}}
tbody th[scope=row]{{position:sticky;left:0;background:#fff}}
thead th{{background:var(--soft);white-space:normal;vertical-align:bottom}}
thead button{{font:inherit;font-weight:600;color:inherit;background:none;border:0;padding:0;cursor:pointer;
text-align:inherit}}
thead button::after{{content:"\\a0\\2195";color:#a3adb7;font-weight:400}}
th[aria-sort=ascending] button::after{{content:"\\a0\\25B2";color:var(--accent)}}
th[aria-sort=descending] button::after{{content:"\\a0\\25BC";color:var(--accent)}}
tbody tr:hover{{background:#fafbfc}}
tfoot th,tfoot td{{background:var(--soft);font-style:italic}}
td.error{{white-space:pre-wrap;min-width:18rem;max-width:40rem}}
.mono{{font-family:{MONO};font-size:.85em}}
code{{font-family:{MONO};font-size:.88em;background:var(--soft);padding:0 .25em;border-radius:3px}}
.notes{{font-size:.88rem;padding-left:1.2rem}}
.pill{{display:inline-block;font-size:.72rem;font-weight:600;line-height:1.5;padding:0 .45em;border-radius:9px;
margin-left:.35em;border:1px solid currentColor}}
.v-ok{{background:#e7f4ea;color:#1d6430}}
.s-ok{{color:#1d6430}}
.v-better{{background:#e3eefb;color:#1f4f85}}
.v-regressed,.v-failed,.s-failed,.s-diverged,.s-non-finite-value{{background:#fbe6e6;color:#9b1c1c}}
.v-missing,.s-interrupted{{background:#fff3d6;color:#7a5200}}
.v-new,.v-skipped{{background:#eef0f2;color:#4a545e}}
figure{{margin:1rem 0}}
figure img{{display:block;max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px}}
figcaption{{font-size:.88rem;margin-top:.3rem}}
.chart svg{{display:block;width:100%;max-width:46rem;height:auto}}
.legend{{list-style:none;padding:0;margin:.2rem 0;display:flex;flex-wrap:wrap;gap:.2rem 1rem;font-size:.88rem}}
.swatch{{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em}}
details{{margin:.4rem 0}}
summary{{cursor:pointer;color:var(--accent)}}
footer{{margin:3rem auto 2rem;font-size:.85rem}}
@media (max-width:600px){{body{{font-size:14px}}h1{{font-size:1.3rem}}th,td{{padding:.3rem .45rem}}}}
@media print{{body{{font-size:10pt}}nav.toc,thead button::after{{display:none}}
.scroll{{overflow:visible;border:0}}th,td{{white-space:normal;position:static}}tr,figure,.chart{{break-inside:avoid}}
h2,h3{{break-after:avoid}}
*{{print-color-adjust:exact;-webkit-print-color-adjust:exact}}}}
"""
SCRIPT = """
function key(c) {
  const s = (c.dataset.sort ?? c.textContent).trim();
  return s === "" || s === "\\u2014" ? null : isNaN(Number(s)) ? s : Number(s);
}
function compare(a, b) {
  if (typeof a !== typeof b) return typeof a === "number" ? -1 : 1;
  return typeof a === "number" ? a - b : a.localeCompare(b, undefined, {numeric: true});
}
function sortBy(th) {  // stable, numbers by value, empty cells last either way
  const table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
  const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
  for (const h of table.tHead.rows[0].cells) h.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
  const rows = [...body.rows].map((r, i) => [key(r.cells[col]), i, r]);
  rows.sort(([a, i], [b, j]) => (a === null || b === null ? (a === null) - (b === null) : dir * compare(a, b))
    || i - j);
  body.append(...rows.map(r => r[2]));
}
for (const b of document.querySelectorAll("table.sortable thead button")) {
  b.addEventListener("click", () => sortBy(b.parentElement));
}
addEventListener("beforeprint", () => { for (const d of document.querySelectorAll("details")) d.open = true; });
"""


def attrs(**values: object) -> str:
    """HTML attributes in the given order; None is left out, ``cls`` is ``class``, ``_`` is ``-``."""
    return "".join(f' {"class" if k == "cls" else k.replace("_", "-")}="{escape(str(v))}"'
                   for k, v in values.items() if v is not None)  # fmt: skip


def td(text: str, sort: float | None = None, title: str | None = None, cls: str | None = None) -> str:
    """A cell; ``sort`` is the number the table sorts it by (its text otherwise)."""
    data_sort = None if sort is None else render.num(sort)
    return f"<td{attrs(data_sort=data_sort, title=title, cls=cls)}>{escape(text)}</td>"


def row_th(label: str) -> str:
    return f'<th scope="row">{escape(label)}</th>'


def named(method: str, variant: str) -> str:
    return method + (f" [{variant}]" if variant else "")


def table_html(head: list[str], body: list[list[str]], foot: list[list[str]] = (), text: tuple = ()) -> str:
    """A sortable table (a button in each header) in its own horizontal scroll box, from ready cells;
    the ``text`` columns are left-aligned."""
    heads = "".join(f'<th scope="col"{attrs(cls="text" if h in text else None)}><button type="button">'
                    f"{escape(h)}</button></th>" for h in head)  # fmt: skip
    rows = "".join(f"<tr>{''.join(r)}</tr>" for r in body)
    tfoot = "<tfoot>" + "".join(f"<tr>{''.join(r)}</tr>" for r in foot) + "</tfoot>" if foot else ""
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody>'
            f"{tfoot}</table></div>")  # fmt: skip


def prose(text: str) -> str:
    """Escaped text with its `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def provenance(cell: Cell) -> str:
    return "\n".join(f"{name}: {', '.join(values)}" for name, values in (
        ("runs", cell.run_ids), ("seeds", cell.seeds), ("git", cell.git_shas), ("config", cell.config_hashes),
        ("device", cell.devices)))  # fmt: skip


def cell_verdicts(verdicts: dict[str, Verdict], cell: Cell) -> list[Verdict]:
    """``bench check``'s verdicts on a cell, one per device class (a paper table's cell pools them)."""
    keys = [cell.key] if cell.key.device else [dataclasses.replace(cell.key, device=agg.device_class(d))
                                               for d in cell.devices]  # fmt: skip
    return [verdicts[k.label()] for k in keys if k.label() in verdicts]


def value_td(text: str, value: float | None, cell: Cell | None, verdicts: dict[str, Verdict]) -> str:
    """A measured number: its provenance in the tooltip; with a reference, coloured by its worst verdict."""
    if cell is None:
        return td(text, value)
    found = cell_verdicts(verdicts, cell)
    title = provenance(cell) + "".join(f"\n{v.verdict}: reference {v.reference} ({v.detail})" for v in found)
    if not found:
        return td(text, value, title)
    worst = min((v.verdict for v in found), key=WORST_FIRST.index)
    pill = "" if worst == check.OK else f'<span class="pill">{escape(worst)}</span>'  # the colour says ok
    cls = "v-" + worst.lower()
    return f"<td{attrs(data_sort=render.num(value), title=title, cls=cls)}>{escape(text)}{pill}</td>"


def mean_std(cell: Cell, scale: float, decimals: int) -> str:
    return render.with_std(cell.mean * scale, None if cell.std is None else cell.std * scale, decimals)


def provenance_details(cells: list[tuple[str, Cell]]) -> str:
    """The provenance of each cell as a table: printed, and readable where there is no hover."""
    rows = [[row_th(label), td(str(c.n), c.n), td(", ".join(c.seeds), cls="text"),
             td(", ".join(c.run_ids), cls="mono text"), td(", ".join(g[:10] for g in c.git_shas), cls="mono text"),
             td(", ".join(h[:12] for h in c.config_hashes), cls="mono text"),
             td(", ".join(c.devices), cls="text")] for label, c in cells]  # fmt: skip
    head = ["cell", "n", "seeds", "run ids", "git", "config hash", "device"]
    table = table_html(head, rows, text=tuple(head[2:]))
    return f"<details><summary>Provenance of each cell</summary>{table}</details>" if rows else ""


def table_section(table: Table, verdicts: dict[str, Verdict]) -> str:
    """A paper table as `bench tables` writes it: per column ours (mean ± std), n, the paper's value, Δ."""
    body, cells = [], []
    for row in table.rows:
        texts, out = render.row_cells(table, row), [row_th(row)]
        for i, col in enumerate(table.columns):
            e = table.entries[(row, col.name)]
            ours, n, paper, diff = texts[4 * i : 4 * i + 4]
            out += [value_td(ours, e.ours(), e.cell, verdicts), td(n, e.cell.n if e.cell else None),
                    td(paper, e.paper), td(diff, e.diff())]  # fmt: skip
            cells += [(f"{row} / {col.name}", e.cell)] if e.cell else []
        body.append(out)
    blank = ["<td></td>"] * (4 * len(table.columns) - 4)
    foot = [[row_th(label), *(td(t) for t in texts), *blank] for label, texts in render.ratio_cells(table)]
    units = ", ".join(sorted({f"{c.name} in {c.unit}" for c in table.columns}))
    lead = f"Task <strong>{escape(table.task)}</strong> (paper: {escape(table.paper_task)}); {escape(units)}."
    notes = "".join(f"<li>{prose(n)}</li>" for n in table.notes)
    return (f'<p class="muted">{lead}</p>{table_html(["method", *render.header_cells(table)], body, foot)}'
            f'<ul class="notes">{notes}</ul>{provenance_details(cells)}')  # fmt: skip


def figures_section(rows: list[dict], paper: Paper) -> str:
    """The figures as plots.py draws them for `bench tables`, each SVG inlined as a data URI."""
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        lines = plots.write_figures(rows, Path(tmp), paper, png=False)  # the page inlines the SVGs
        svgs = {p.stem: p.read_bytes() for p in sorted(Path(tmp).glob("*.svg"))}
    out = []
    for stem, svg in svgs.items():
        line = next((ln for ln in lines if ln.startswith(f"figures/{stem}.")), stem)
        caption = re.sub(r"^fig(\d+)$", r"Figure \1", stem) + ": " + (line.split(None, 1) + [""])[1]
        uri = "data:image/svg+xml;base64," + base64.b64encode(svg).decode()
        img = f"<img{attrs(src=uri, alt=caption)}>"
        out.append(f"<figure>{img}<figcaption>{escape(caption)}</figcaption></figure>")
    return "".join(out)


def line_chart(series: list[tuple[str, list[float | None]]], ticks: list[str], label: str) -> str:
    """A small inline SVG line chart without ids: one line per series over categorical ticks, values in %."""
    values = [v for _, vs in series for v in vs if v is not None]
    lo, hi = 10 * int(min(values) // 10), 10 * -int(-max(values) // 10)
    hi, (w, h, left, top, bottom) = max(hi, lo + 10), (640, 240, 46, 10, 30)
    x = [left + 20 + i * (w - left - 40) / max(1, len(ticks) - 1) for i in range(len(ticks))]

    def y(v: float) -> float:
        return top + (hi - v) * (h - top - bottom) / (hi - lo)

    parts = [f'<line x1="{left}" x2="{w - 8}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e3e7eb"/>'
             f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>'
             for v in range(lo, hi + 1, 20 if hi - lo > 60 else 10)]  # fmt: skip
    parts += [f'<text x="{xi:.1f}" y="{h - 10}" text-anchor="middle">{escape(t)}</text>'
              for xi, t in zip(x, ticks, strict=True)]  # fmt: skip
    for k, (name, vs) in enumerate(series):
        colour, points = (
            PALETTE[k % len(PALETTE)],
            [(x[i], y(v), v) for i, v in enumerate(vs) if v is not None],
        )
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour}"><title>{escape(name)}: '
                  f"{v:.1f} %</title></circle>" for px, py, v in points]  # fmt: skip
    return (f'<svg viewBox="0 0 {w} {h}" role="img"{attrs(aria_label=label)} font-size="11" fill="#5c6873">'
            f"{''.join(parts)}</svg>")  # fmt: skip


def module_group(
    task: str, metric: str, group: dict[tuple[str, str], dict[str, Cell]], verdicts: dict
) -> str:
    """One accuracy metric on one task: a chart over modules and the numbers, one row per method."""
    modules = sorted({m for per in group.values() for m in per}, key=lambda m: (m == "", int(m or 0)))
    ticks = [f"module {int(m) + 1}" if m else "main" for m in modules]
    series = [(named(*mv), [100 * per[m].mean if m in per else None for m in modules])
              for mv, per in group.items()]  # fmt: skip
    legend = "".join(f'<li><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
                     f"{escape(name)}</li>" for i, (name, _) in enumerate(series))  # fmt: skip
    body = [[row_th(named(*mv))] + [value_td(mean_std(per[m], 100, 1), 100 * per[m].mean, per[m], verdicts)
                                    if m in per else td(render.DASH) for m in modules]
            for mv, per in group.items()]  # fmt: skip
    about = f"{metric} on {task} in % (mean over seeds; main: the representation the tables probe)"
    return (f'<h3>{escape(metric)} on {escape(task)}</h3><div class="chart">{line_chart(series, ticks, about)}'
            f'<ul class="legend">{legend}</ul></div>{table_html(["method", *ticks], body)}'
            f'<p class="notes">{escape(about)}.</p>')  # fmt: skip


def module_section(rows: list[dict], verdicts: dict[str, Verdict]) -> str:
    """Probe accuracy per module, for each (task, accuracy) probed on single modules (eval.all_modules)."""
    groups: dict[tuple[str, str], dict[tuple[str, str], dict[str, Cell]]] = {}
    cells = agg.aggregate(rows)
    probed = {(k.task, k.metric) for k in cells if k.module and k.metric.endswith("_acc")}
    for k, c in cells.items():
        if (k.task, k.metric) in probed:
            groups.setdefault((k.task, k.metric), {}).setdefault((k.method, k.variant), {})[k.module] = c
    out = [module_group(task, metric, groups[(task, metric)], verdicts) for task, metric in sorted(groups)]
    none = '<p class="muted">No probes on single modules (<code>eval.all_modules=true</code>).</p>'
    return "".join(out) or none


def resources_section(rows: list[dict], verdicts: dict[str, Verdict]) -> str:
    """Memory and speed per (method, task, device class): measurements are never pooled across devices."""
    cells = {k: c for k, c in agg.aggregate(rows, by_device=True).items()
             if k.metric in RESOURCES and not k.module}  # fmt: skip
    metrics = [m for m in RESOURCES if any(k.metric == m for k in cells)]
    body = []
    for task, method, variant, device in sorted({(k.task, k.method, k.variant, k.device) for k in cells}):
        out = [row_th(named(method, variant)), td(task, cls="text"), td(device, cls="text")]
        for metric in metrics:
            cell = cells.get(agg.CellKey(task, method, variant, metric, "", device))
            scale, _, decimals = check.units(metric)
            if cell is None:
                out.append(td(render.DASH))
            else:
                out.append(value_td(mean_std(cell, scale, decimals), cell.mean * scale, cell, verdicts))
        body.append(out)
    if not body:
        return '<p class="muted">No memory or throughput rows in results.csv.</p>'
    head = ["method", "task", "device", *(RESOURCES[m] for m in metrics)]
    return table_html(head, body, text=("task", "device")) + '<p class="notes">Mean ± std over seeds.</p>'


def run_states(rows: list[dict]) -> list[dict]:
    """One row per run: its first row, or the row that says why it gives no numbers (failed, diverged, ...)."""
    runs: dict[str, dict] = {}
    for r in rows:
        runs.setdefault(r["run_id"], r)
    runs.update({r["run_id"]: r for r in agg.unfinished_runs(rows)})
    return sorted(runs.values(), key=lambda r: (r["task"], r["method"], r["variant"], agg.seed_order(r)))


def runs_section(rows: list[dict]) -> str:
    """Every run's state (ok, failed, diverged, interrupted, non-finite value) and error."""
    body = []
    for r in run_states(rows):
        wall = float(r["wall_s"]) if r.get("wall_s") else None
        body.append([row_th(named(r["method"], r["variant"])), td(r["task"], cls="text"), td(r["seed"]),
                     td(r["status"], cls="text s-" + r["status"].replace(" ", "-")),
                     td(r.get("device", ""), cls="text"), td("" if wall is None else f"{wall:.1f}", wall),
                     td(r.get("git_sha", "")[:10], title=r.get("git_sha"), cls="mono text"),
                     td(r["run_id"], title=r.get("config_hash"), cls="mono text"),
                     td((r.get("error") or "").strip(), cls="error text")])  # fmt: skip
    head = ["method", "task", "seed", "status", "device", "wall s", "git", "run", "error"]
    return table_html(head, body, text=("task", "status", "device", "git", "run", "error"))


def verdict_table(verdicts: list[Verdict]) -> str:
    body = [[td(v.cell, cls="text"), td(v.reference), td(v.now),
             td(v.verdict, cls="text v-" + v.verdict.lower()), td(v.detail, cls="text")]
            for v in verdicts]  # fmt: skip
    return table_html(["cell", "reference", "now", "verdict", "detail"], body, text=("verdict", "detail"))


def check_section(verdicts: list[Verdict], ref_path: Path, ref: refmod.Reference, rows: list[dict]) -> str:
    """``bench check``'s outcome: a summary, what needs attention, then every verdict."""
    _, status = check.report(verdicts, strict=False)
    counts = Counter(v.verdict for v in verdicts)
    pills = " ".join(f'<span class="pill v-{v.lower()}">{counts[v]} {escape(v)}</span>' for v in WORST_FIRST
                     if counts[v])  # fmt: skip
    outcome = "FAIL: a cell regressed or a run failed" if status else "PASS"
    out = (f"<p>Against <code>{escape(str(ref_path))}</code>: <strong>{outcome}</strong> {pills}</p>"
           '<p class="muted">The comparison of <code>bench check</code>: memory and speed only within a device '
           "class; missing cells are warnings (<code>--strict</code> fails on them).</p>")  # fmt: skip
    expected, now = ref.meta.get("preset", ""), ",".join(p for p in agg.presets(rows) if p)
    if expected and now != expected:
        out += (f'<p class="v-missing">The reference is for preset {escape(expected)}, these results for '
                f"{escape(now)}.</p>")  # fmt: skip
    attention = [v for v in verdicts if v.verdict in ATTENTION]
    out += verdict_table(attention) if attention else "<p>Nothing regressed, failed or went missing.</p>"
    return (
        out + f"<details><summary>All {len(verdicts)} verdicts</summary>{verdict_table(verdicts)}</details>"
    )


def header(rows: list[dict], study: str) -> str:
    """The study's name and what its results hold: runs by state, tasks, presets, commits, devices."""
    states = Counter(r["status"] for r in run_states(rows))
    facts = [f"{sum(states.values())} runs (" + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ")",
             "tasks " + ", ".join(sorted({r["task"] for r in rows})), "preset " + ", ".join(agg.presets(rows)),
             "git " + ", ".join(sorted({(r.get("git_sha") or "")[:10] for r in rows})),
             "device " + ", ".join(sorted({r.get("device") or "" for r in rows}))]  # fmt: skip
    return (f'<header class="top"><div class="wrap"><h1>{escape(study)}</h1><p class="facts">'
            f'{escape(" · ".join(facts))}</p><p class="facts">Generated by <code>bench report</code> from '
            f"results.csv ({len(rows)} rows).</p></div></header>")  # fmt: skip


def sections(rows: list[dict], paper: Paper, forced: dict, verdicts: dict[str, Verdict]) -> list[tuple]:
    """(id, title, html) of Tables 1-4, the figures, probes per module, memory and speed, and the runs."""
    out = []
    for name, build in tables.TABLES.items():
        table = build(rows, paper, forced[paper.table(name).modality])
        out.append((name, table.title, table_section(table, verdicts)))
    return out + [("figures", "Figures", figures_section(rows, paper)),
                  ("modules", "Probe accuracy per module", module_section(rows, verdicts)),
                  ("resources", "Memory and throughput", resources_section(rows, verdicts)),
                  ("runs", "Runs", runs_section(rows))]  # fmt: skip


def build_page(results_dir: Path, paper_path: Path = DEFAULT_PAPER, reference: Path | None = None,
               vision_task: str | None = None, audio_task: str | None = None) -> str:  # fmt: skip
    """The whole page; raises ResultsError, PaperError or ReferenceFileError on bad input."""
    rows = agg.load_results(results_dir)
    paper = load_paper(paper_path)
    ref = refmod.load_reference(reference) if reference else None
    verdicts = check.compare(ref, rows) if ref else []
    parts = (
        [("check", "Check against the reference", check_section(verdicts, reference, ref, rows))]
        if ref
        else []
    )
    parts += sections(
        rows, paper, {"vision": vision_task, "audio": audio_task}, {v.cell: v for v in verdicts}
    )
    toc = "".join(f'<li><a href="#{sid}">{escape(title)}</a></li>' for sid, title, _ in parts)
    body = "".join(
        f'<section id="{sid}"><h2>{escape(title)}</h2>{part}</section>' for sid, title, part in parts
    )
    study = ", ".join(sorted({r.get("experiment") or "" for r in rows} - {""})) or results_dir.resolve().name
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>{escape(study)} · bench report</title><style>{CSS}</style></head><body>"
            f'{header(rows, study)}<main class="wrap"><nav class="toc" aria-label="Contents"><h2>Contents</h2>'
            f'<ol>{toc}</ol></nav>{body}</main><footer class="wrap">{prose("Paper: " + paper.citation)}'
            "</footer>"
            f"<script>{SCRIPT}</script></body></html>\n")  # fmt: skip


def screenshot(page: Path, png: Path, width: int) -> list[str]:
    """A full-page PNG of ``page`` at ``width`` CSS pixels; returns the errors the page logged meanwhile."""
    with browser.Browser() as b:
        b.open(page.resolve().as_uri(), width=width)
        b.screenshot(png)
        return b.errors


def cmd_report(args: argparse.Namespace) -> int:
    try:
        if args.screenshot and not browser.find_chromium():
            raise browser.BrowserMissingError(f"--screenshot needs Chromium; {browser.INSTALL_HINT}")
        page = build_page(args.dir, args.paper, args.reference, args.vision_task, args.audio_task)
    except (agg.ResultsError, PaperError, refmod.ReferenceFileError, browser.BrowserMissingError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    path = args.dir / REPORT_PAGE
    atomic_write_text(path, page)
    print(f"report: {path} ({len(page.encode()) // 1024} KiB, self-contained: open it in any browser)")
    if not args.screenshot:
        return 0
    try:
        errors = screenshot(path, args.screenshot, args.width)
    except browser.BrowserError as err:
        print(f"bench: error: screenshot failed: {err}", file=sys.stderr)
        return 1
    print(f"screenshot: {args.screenshot} ({args.width} px wide)")
    for error in errors:
        print(f"bench: error: the page logged: {error}", file=sys.stderr)
    return 1 if errors else 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="one self-contained HTML page of DIR/results.csv (DIR/report/index.html)"
    )
    p.add_argument("dir", type=Path, help="a results folder holding results.csv (from `bench collect`)")
    p.add_argument(
        "--reference", type=Path, help="also show `bench check`'s verdict on each cell against REF"
    )
    p.add_argument("--paper", type=Path, default=DEFAULT_PAPER, help="the published numbers (YAML)")
    p.add_argument("--vision-task", help="task for Tables 1-2 (as in `bench tables`)")
    p.add_argument("--audio-task", help="task for Tables 3-4 (as in `bench tables`)")
    p.add_argument("--screenshot", type=Path, metavar="PNG", help="also a full-page PNG (headless Chromium)")
    p.add_argument("--width", type=int, default=1280, help="the screenshot's width in CSS pixels (1280)")
    p.set_defaults(func=cmd_report)
