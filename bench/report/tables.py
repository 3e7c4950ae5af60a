"""``bench tables DIR``: the paper's Tables 1-4 (and, through bench.report.plots, Figures 3-4) from DIR/results.csv.

One function per table turns result rows into a ``Table``: each cell is the mean, std and number of seeds of
one (task, method, variant, metric) with its provenance, beside the published value (bench/paper_gim2019
.yaml) and our difference. A table is built from the paper's task when results have it, otherwise from the
closest stand-in (and says so). Rendering to CSV/Markdown/LaTeX lives in bench.report.render; nothing here
writes to the raw rows.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench.record import atomic_write_text
from bench.report import aggregate as agg
from bench.report import plots
from bench.report import render as table_render
from bench.report.model import Column, Entry, Ratio, Table
from bench.report.paper import DEFAULT_PAPER, Paper, PaperError, PaperTable, load_paper

log = logging.getLogger(__name__)
GIB = 2.0**30


def content_metric(rows: list[dict], task: str, preferred: str) -> str:
    """``preferred`` when the task reports it, else its first accuracy metric that is not speaker_acc."""
    metrics = sorted({r["metric"] for r in agg.ok_scalar_rows(rows) if r["task"] == task})
    if preferred in metrics:
        return preferred
    others = [m for m in metrics if m.endswith("_acc") and m != "speaker_acc"]
    return others[0] if others else preferred


def build_table(
    paper: Paper,
    name: str,
    rows: list[dict],
    task: str,
    columns: tuple[Column, ...],
    extra_rows: bool,
    skip: frozenset[str] = frozenset(),
) -> Table:
    """The paper table ``name`` filled with our cells of ``task`` (main representation, pooled devices).

    With ``extra_rows``, methods and variants with results but no row in the paper table are appended
    (except the methods in ``skip``, shown by another table)."""
    ptable = paper.table(name)
    task_rows = [r for r in rows if r["task"] == task]
    cells = agg.aggregate(task_rows)
    table = Table(name, ptable.title, task, ptable.task, columns, [], {})
    for prow in ptable.rows:
        add_row(table, cells, prow.label, prow.method, prow.variant, prow.values, prow.std)
    if extra_rows:
        known = {(p.method, p.variant) for p in ptable.rows}
        metrics = {c.metric for c in columns}
        found = {
            (k.method, k.variant)
            for k in cells
            if k.metric in metrics and not k.module and k.method not in skip
        }
        for method, variant in sorted(found - known):
            add_row(table, cells, method + (f" [{variant}]" if variant else ""), method, variant, {}, {})
    table.notes = table_notes(table, ptable, paper, task_rows)
    return table


def add_row(
    table: Table, cells: dict, label: str, method: str | None, variant: str, values: dict, std: dict
) -> None:
    table.rows.append(label)
    for col in table.columns:
        key = agg.CellKey(table.task, method or "", variant, col.metric, "")
        cell = cells.get(key) if method else None
        table.entries[(label, col.name)] = Entry(label, method, variant, col, cell, values.get(col.name),
                                                 std.get(col.name))  # fmt: skip


def table_notes(table: Table, ptable: PaperTable, paper: Paper, task_rows: list[dict]) -> list[str]:
    notes = []
    if table.task != table.paper_task:
        notes.append(f"Built from the task {table.task}, a stand-in for the paper's {table.paper_task}: the "
                     "paper's column is shown for orientation, not as a target.")  # fmt: skip
    for col in table.columns:
        if col.unit == "%" and col.metric not in (f"{col.name}_acc", "class_acc"):
            notes.append(f"The {col.name} column is {col.metric}, {table.task}'s content label standing in "
                         f"for the paper's {col.name} labels.")  # fmt: skip
    if not table.has_data:
        notes.append(f"No finished runs of this table's methods on {table.task} in results.csv: our cells are "
                     "empty. Run them and `bench collect` the folder, then `bench tables` again.")  # fmt: skip
    presets = [p for p in agg.presets(task_rows) if p]
    if presets:
        notes.append(f"Preset: {', '.join(presets)}.")
    failed = agg.unfinished_runs(task_rows)
    if failed:
        ids = ", ".join(f"{r['method']} seed {r['seed']} ({r['status']})" for r in failed)
        notes.append(f"Left out, no trusted numbers: {ids}.")
    notes.append("Ours: mean ± sample std over seeds (no std with one seed); n: seeds; Δ = ours − paper. "
                 "Per-cell run ids, git sha, config hash and device are in the CSV.")  # fmt: skip
    notes.append(ptable.note)
    notes.append(f"Paper: {paper.citation}")
    return [n for n in notes if n]


def table1(rows: list[dict], paper: Paper, task: str | None = None) -> Table:
    """Linear-probe accuracy by method on the vision task."""
    task = agg.choose_task(rows, paper.candidates("vision"), task)
    column = Column("accuracy", content_metric(rows, task, "class_acc"))
    return build_table(paper, "table1", rows, task, (column,), extra_rows=True)


def table2(rows: list[dict], paper: Paper, task: str | None = None) -> Table:
    """Peak training memory by method, plus GIM's first module trained alone (variant train_modules=0)."""
    task = agg.choose_task(rows, paper.candidates("vision"), task)
    columns = (Column("memory", "peak_mem_bytes", scale=1 / GIB, unit="GB", decimals=3),)
    if any(r["metric"] == "run_peak_mem_bytes" and r["task"] == task for r in agg.ok_scalar_rows(rows)):
        columns += (Column("whole run", "run_peak_mem_bytes", scale=1 / GIB, unit="GB", decimals=3),)
    table = build_table(paper, "table2", rows, task, columns, extra_rows=True)
    table.ratios = [table_ratio(table, r.label, r.numerator, r.denominator, r.paper)
                    for r in paper.table("table2").ratios]  # fmt: skip
    devices = sorted({d for e in table.entries.values() if e.cell for d in e.cell.devices})
    if devices:
        table.notes.insert(0, f"Ours measured on {', '.join(devices)}: on CPU the growth of the process's peak "
                              "resident memory, on CUDA the peak allocated memory (bench/measure.py)."
                              + (" Whole run: the process's peak over the whole run (CPU: peak resident set, "
                                 "as /usr/bin/time -v reports it; CUDA: peak allocated), data, training and "
                                 "evaluation together; the paper reports training only." if len(columns) > 1
                                 else ""))  # fmt: skip
    return table


def table_ratio(table: Table, label: str, numerator: str, denominator: str, paper_value: float) -> Ratio:
    col = table.columns[0].name
    num, den = table.entries.get((numerator, col)), table.entries.get((denominator, col))
    if not num or not den or num.cell is None or den.cell is None or den.cell.mean == 0:
        return Ratio(label, None, 0, paper_value)
    return Ratio(label, num.cell.mean / den.cell.mean, min(num.cell.n, den.cell.n), paper_value)


def audio_columns(rows: list[dict], task: str, order: tuple[str, ...]) -> tuple[Column, ...]:
    metrics = {"phone": content_metric(rows, task, "phone_acc"), "speaker": "speaker_acc"}
    return tuple(Column(name, metrics[name]) for name in order)


def table3(rows: list[dict], paper: Paper, task: str | None = None) -> Table:
    """Phone and speaker accuracy by method on the audio task, including MFCC features."""
    task = agg.choose_task(rows, paper.candidates("audio"), task)
    ablations = frozenset(p.method for p in paper.table("table4").rows if p.method)
    columns = audio_columns(rows, task, ("phone", "speaker"))
    return build_table(paper, "table3", rows, task, columns, extra_rows=True, skip=ablations)


def table4(rows: list[dict], paper: Paper, task: str | None = None) -> Table:
    """GIM against GIM without BPTT (gim_no_bptt) and without the autoregressive module (gim_no_ar)."""
    task = agg.choose_task(rows, paper.candidates("audio"), task)
    return build_table(paper, "table4", rows, task, audio_columns(rows, task, ("speaker", "phone")), False)


TABLES = {"table1": table1, "table2": table2, "table3": table3, "table4": table4}


def write_table(table: Table, out_dir: Path) -> list[Path]:
    paths = []
    for suffix, render in (("csv", table_render.to_csv), ("md", table_render.to_markdown),
                           ("tex", table_render.to_latex)):  # fmt: skip
        path = out_dir / f"{table.name}.{suffix}"
        atomic_write_text(path, render(table))
        paths.append(path)
    return paths


def write_tables(results_dir: Path, paper_path: Path = DEFAULT_PAPER, vision_task: str | None = None,
                 audio_task: str | None = None, figures: bool = True) -> list[str]:  # fmt: skip
    """Regenerate DIR/tables/ (and DIR/figures/); returns one line per output for the terminal."""
    rows = agg.load_results(results_dir)
    paper = load_paper(paper_path)
    forced = {"vision": vision_task, "audio": audio_task}
    lines = []
    for name, build in TABLES.items():
        table = build(rows, paper, forced[paper.table(name).modality])
        write_table(table, results_dir / "tables")
        state = "" if table.has_data else "  (placeholder: no runs; see its notes)"
        lines.append(f"tables/{name}.{{csv,md,tex}}  task {table.task}{state}")
    if figures:
        lines += plots.write_figures(rows, results_dir / "figures", paper)
    return lines


def cmd_tables(args: argparse.Namespace) -> int:
    try:
        lines = write_tables(args.dir, args.paper, args.vision_task, args.audio_task, not args.no_figures)
    except (agg.ResultsError, PaperError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    print(f"regenerated from {args.dir / agg.RESULTS_FILE}:")
    for line in lines:
        print(f"  {line}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tables", help="regenerate the paper's tables and figures from DIR/results.csv")
    p.add_argument("dir", type=Path, help="a results folder holding results.csv (from `bench collect`)")
    p.add_argument("--paper", type=Path, default=DEFAULT_PAPER, help="the published numbers (YAML)")
    p.add_argument(
        "--vision-task", help="task for Tables 1-2 (default: the first with results of the paper file's vision tasks)"
    )
    p.add_argument(
        "--audio-task", help="task for Tables 3-4 (default: the first with results of the paper file's audio tasks)"
    )
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.set_defaults(func=cmd_tables)
