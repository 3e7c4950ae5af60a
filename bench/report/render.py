"""Render a built ``bench.report.tables.Table`` as CSV (long, one line per cell, with provenance), Markdown and LaTeX.

Everything here is a pure function of the table: no dates, no paths, so regenerating from the same
results.csv gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.report.model import Entry, Table

CSV_COLUMNS = (
    "table", "task", "row", "method", "variant", "column", "metric", "unit", "mean", "std", "n",
    "paper", "paper_std", "diff", "seeds", "run_ids", "git_shas", "config_hashes", "devices",
)  # fmt: skip
DASH = "—"


def num(value: float | None) -> str:
    """A CSV number: 6 significant digits, '' for none."""
    return "" if value is None else f"{value:.6g}"


def shown(value: float | None, decimals: int, sign: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"


def with_std(value: float | None, std: float | None, decimals: int) -> str:
    text = shown(value, decimals)
    return text if value is None or std is None else f"{text} ± {std:.{decimals}f}"


def entry_record(table: Table, e: Entry) -> dict:
    cell = e.cell
    prov = {} if cell is None else {
        "seeds": ";".join(cell.seeds), "run_ids": ";".join(cell.run_ids), "git_shas": ";".join(cell.git_shas),
        "config_hashes": ";".join(cell.config_hashes), "devices": ";".join(cell.devices),
    }  # fmt: skip
    return {
        "table": table.name, "task": table.task, "row": e.row, "method": e.method or "", "variant": e.variant,
        "column": e.column.name, "metric": e.column.metric, "unit": e.column.unit, "mean": num(e.ours()),
        "std": num(e.ours_std()), "n": 0 if cell is None else cell.n, "paper": num(e.paper),
        "paper_std": num(e.paper_std), "diff": num(e.diff()), **prov,
    }  # fmt: skip


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for row in table.rows:
        for col in table.columns:
            writer.writerow(entry_record(table, table.entries[(row, col.name)]))
    for r in table.ratios:
        diff = None if r.ours is None else r.ours - r.paper
        writer.writerow({"table": table.name, "task": table.task, "row": r.label, "column": "ratio",
                         "metric": "ratio", "unit": "x", "mean": num(r.ours), "n": r.n, "paper": num(r.paper),
                         "diff": num(diff)})  # fmt: skip
    return buf.getvalue()


def row_cells(table: Table, row: str) -> list[str]:
    """Per column: ours (mean ± std), n, paper, Δ, as display strings."""
    out = []
    for col in table.columns:
        e = table.entries[(row, col.name)]
        ours = "not re-run" if e.method is None else with_std(e.ours(), e.ours_std(), col.decimals)
        n = "" if e.method is None else str(0 if e.cell is None else e.cell.n)
        paper = with_std(e.paper, e.paper_std, 1)
        out += [ours, n, paper, shown(e.diff(), col.decimals, sign=True)]
    return out


def ratio_cells(table: Table) -> list[tuple[str, list[str]]]:
    rows = []
    for r in table.ratios:
        diff = None if r.ours is None else r.ours - r.paper
        ours = DASH if r.ours is None else f"{r.ours:.2f}"
        rows.append((r.label, [ours, str(r.n), f"{r.paper:.1f}", shown(diff, 2, sign=True)]))
    return rows


def header_cells(table: Table) -> list[str]:
    out = []
    for col in table.columns:
        out += [f"{col.name} ({table.task})", "n", f"{col.name} (paper, {table.paper_task})", "Δ"]
    return out


def to_markdown(table: Table) -> str:
    header = ["method", *header_cells(table)]
    lines = [f"# {table.title}", "", f"Task: **{table.task}** (paper: {table.paper_task}).", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join([row, *row_cells(table, row)]) + " |")
    for label, cells in ratio_cells(table):
        lines.append("| " + " | ".join([label, *cells]) + " |")
    lines += ["", "Notes:", ""] + [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$",
    "−": "$-$", "—": "--",
}  # fmt: skip


def tex(text: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    ncols = len(table.columns)
    group = " & ".join(rf"\multicolumn{{4}}{{c}}{{{tex(c.name)} ({tex(c.unit)})}}" for c in table.columns)
    rules = "".join(rf"\cmidrule(lr){{{2 + 4 * i}-{5 + 4 * i}}}" for i in range(ncols))
    sub = " & ".join([f"ours ({tex(table.task)}) & $n$ & paper & $\\Delta$"] * ncols)
    stand_in = (
        "" if table.task == table.paper_task else f" Ours on {table.task}, a stand-in for {table.paper_task}."
    )
    lines = [
        "% Generated by `bench tables` from results.csv; do not edit by hand.",
        r"\begin{table}[t]", r"\centering", rf"\caption{{{tex(table.title + '.' + stand_in)}}}",
        rf"\label{{tab:{table.name}}}", rf"\begin{{tabular}}{{l{'rrrr' * ncols}}}", r"\toprule",
        rf" & {group} \\", rules, rf"method & {sub} \\", r"\midrule",
    ]  # fmt: skip
    for row in table.rows:
        lines.append(" & ".join(tex(c) for c in [row, *row_cells(table, row)]) + r" \\")
    ratios = ratio_cells(table)
    if ratios:
        lines.append(r"\midrule")
    for label, cells in ratios:
        lines.append(" & ".join(tex(c) for c in [label, *cells]) + " & " * (4 * ncols - 4) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    lines += [f"% {tex(n)}" for n in table.notes]
    return "\n".join(lines) + "\n"
