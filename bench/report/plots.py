"""The paper's Figures 3 and 4 from result rows, as PNG and SVG (seaborn on matplotlib's Agg backend).

Figure 3: GIM's per-module training and validation loss curves, simultaneous against iterative training
(variant ``schedule=iterative``), over the steps of each module's own training (its phase, for iterative
runs) from the rows with ``step`` set; results without them (recorded before curves existed) give one point
per epoch. Figure 4: speaker error (1 - speaker_acc) of a linear probe on each module's
representation, log scale, one line per method. SVGs are reproducible: a fixed ``svg.hashsalt`` and no date.
Without data a figure is a placeholder that says what is missing.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bench import record  # noqa: E402
from bench.report import aggregate as agg  # noqa: E402
from bench.report.paper import Paper  # noqa: E402

log = logging.getLogger(__name__)
RC = {"svg.hashsalt": "bench-figures", "svg.fonttype": "path", "figure.dpi": 100}
ERROR_FLOOR = 1e-3
"""A perfect probe (error 0) is drawn at this error so that it stays on the log scale."""


def save(fig: plt.Figure, out_dir: Path, name: str, png: bool = True) -> None:
    """Write NAME.svg and (``png``) NAME.png, without timestamps."""
    svg, raster = io.StringIO(), io.BytesIO()
    fig.savefig(svg, format="svg", metadata={"Date": None}, bbox_inches="tight")
    if png:
        fig.savefig(raster, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    record.atomic_write_text(out_dir / f"{name}.svg", svg.getvalue())
    if png:
        record.atomic_write_bytes(out_dir / f"{name}.png", raster.getvalue())


def placeholder(out_dir: Path, name: str, title: str, reason: str, png: bool = True) -> str:
    log.warning("%s: %s; wrote a placeholder", name, reason)
    fig, ax = plt.subplots(figsize=(6, 2.2))
    ax.axis("off")
    ax.text(0.5, 0.6, title, ha="center", va="center", fontsize=11, weight="bold")
    ax.text(0.5, 0.3, f"No data: {reason}", ha="center", va="center", fontsize=9, wrap=True)
    save(fig, out_dir, name, png)
    return f"figures/{name}.{{png,svg}}  (placeholder: {reason})"


def loss_frame(rows: list[dict], method: str, variant: str) -> pd.DataFrame:
    """A method's per-module losses, default and ``variant`` runs (the column ``schedule`` tells them apart:
    ``simultaneous`` for the default), at each point's ``x``: the step (or, without step rows, the epoch)
    counted from the start of the module's own training."""
    keep = [r for r in rows if r["method"] == method and r["status"] == record.STATUS_OK
            and r["metric"] in ("train_loss", "val_loss") and r["variant"] in ("", variant)
            and r["module"] != "" and r["epoch"] != ""]  # fmt: skip
    stepped = [r for r in keep if r.get("step")]
    keep = stepped or keep
    if not keep:
        return pd.DataFrame()
    unit = "step" if stepped else "epoch"
    df = pd.DataFrame({
        "task": [r["task"] for r in keep], "run": [r["run_id"] for r in keep],
        "schedule": [variant.split("=")[-1] if r["variant"] == variant else "simultaneous" for r in keep],
        "split": [r["metric"].removesuffix("_loss") for r in keep], "module": [int(r["module"]) for r in keep],
        "x": [int(r[unit]) for r in keep], "loss": [float(r["value"]) for r in keep],
    })  # fmt: skip
    return (stepped_from_start if stepped else epochs_from_start)(df).assign(unit=unit)


def epochs_from_start(df: pd.DataFrame) -> pd.DataFrame:
    """A module's curve spans its own training epochs (iterative: one phase; simultaneous: all of them)."""
    span = df[df.split == "train"].groupby(["run", "module"])["x"].agg(start="min", end="max")
    df = df.join(span, on=["run", "module"]).dropna(subset=["start"])
    df = df[(df.x >= df.start) & (df.x <= df.end)]
    return df.assign(x=df.x - df.start.astype(int)).drop(columns=["start", "end"])


def stepped_from_start(df: pd.DataFrame) -> pd.DataFrame:
    """Steps counted from the start of each module's training: the last training point of the run before the
    module's first one (the end of the previous phase; 0 for modules that train from the first step)."""
    train = df[df.split == "train"]
    starts = {}
    for (run, module), first in train.groupby(["run", "module"])["x"].min().items():
        before = train[(train.run == run) & (train.x < first)].x
        starts[(run, module)] = int(before.max()) if len(before) else 0
    start = [starts.get((run, module)) for run, module in zip(df.run, df.module, strict=True)]
    df = df.assign(start=pd.Series(start, index=df.index, dtype=float)).dropna(subset=["start"])
    return df.assign(x=df.x - df.start.astype(int)).drop(columns=["start"])


def pick_task(tasks: set[str], preferred: tuple[str, ...]) -> str | None:
    return next((t for t in preferred if t in tasks), min(tasks) if tasks else None)


def fig3(rows: list[dict], out_dir: Path, paper: Paper, png: bool = True) -> str:
    """Per-module training and validation loss per epoch, simultaneous vs iterative GIM (the paper file's
    figures.fig3 names the method and the variant)."""
    spec = paper.figure("fig3")
    method, variant = spec["method"], spec["variant"]
    title = f"Figure 3: {spec.get('label', method)} loss per module, simultaneous vs {variant.split('=')[-1]}"
    df = loss_frame(rows, method, variant)
    if df.empty:
        return placeholder(out_dir, "fig3", title, f"no {method} train_loss/val_loss rows in results.csv", png)
    both = {t for t, g in df.groupby("task") if g.schedule.nunique() == 2}
    task = pick_task(both or set(df.task), paper.candidates(spec["modality"]) + sum(paper.tasks.values(), ()))
    df = df[df.task == task].assign(module=lambda d: "module " + (d.module + 1).astype(str))
    if not both:
        log.warning("fig3: %s has only %s %s runs; run %s with its %s as well", task, df.schedule.iloc[0],
                    method, method, variant)  # fmt: skip
    with plt.rc_context(RC):
        unit = df.unit.iloc[0]
        grid = sns.relplot(data=df, kind="line", x="x", y="loss", hue="schedule", style="split",
                           col="module", hue_order=["simultaneous", variant.split("=")[-1]], style_order=["train", "val"],
                           errorbar="sd", markers=unit == "epoch", dashes=True, height=3, aspect=1.1,
                           facet_kws={"sharey": False})  # fmt: skip
        grid.set_titles(col_template="{col_name}")
        grid.set_axis_labels(f"{unit} (of this module's training)", "InfoNCE loss")
        for ax in grid.axes.flat:
            if unit == "epoch":
                integer_epochs(ax, sorted(df.x.unique()))
            ax.yaxis.get_major_formatter().set_useOffset(False)
        only = "" if both else f"; only {df.schedule.iloc[0]} runs"
        grid.figure.suptitle(f"{title} ({task}; mean ± std over seeds{only})", y=1.04)
        save(grid.figure, out_dir, "fig3", png)
    return f"figures/fig3.{{png,svg}}  task {task}" + (f"  (only {df.schedule.iloc[0]} runs)" if only else "")


def integer_epochs(ax: plt.Axes, epochs: list[int]) -> None:
    """Whole-epoch ticks: each epoch when there are few (also a single one), else a sparse integer grid."""
    if len(epochs) <= 12:
        ax.set_xticks(epochs)
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def module_index(row: dict, last: dict[str, int]) -> int:
    return int(row["module"]) if row["module"] != "" else last[row["run_id"]]


def last_modules(rows: list[dict]) -> dict[str, int]:
    """run_id -> index of the run's last module (its main representation, recorded with module '')."""
    probed: dict[str, int] = {}
    trained: dict[str, int] = {}
    for r in rows:
        if r["module"] != "" and r["metric"] == "speaker_acc":
            probed[r["run_id"]] = max(probed.get(r["run_id"], -1), int(r["module"]))
        elif r["module"] != "" and r["metric"] == "train_loss":
            trained[r["run_id"]] = max(trained.get(r["run_id"], 0), int(r["module"]))
    runs = {r["run_id"] for r in rows}
    return {run: probed[run] + 1 if run in probed else trained.get(run, 0) for run in runs}


def error_frame(rows: list[dict]) -> pd.DataFrame:
    keep = [r for r in agg.ok_scalar_rows(rows) if r["metric"] == "speaker_acc" and r["variant"] == ""]
    if not keep:
        return pd.DataFrame()
    last = last_modules([r for r in rows if r["status"] == record.STATUS_OK])
    return pd.DataFrame({
        "task": [r["task"] for r in keep], "method": [r["method"] for r in keep],
        "module": [module_index(r, last) + 1 for r in keep],
        "error": [max(ERROR_FLOOR, 1.0 - float(r["value"])) for r in keep],
    })  # fmt: skip


def fig4(rows: list[dict], out_dir: Path, paper: Paper, png: bool = True) -> str:
    """Speaker error per module (log scale), one line per method (legend order from the paper file)."""
    spec = paper.figure("fig4")
    first = tuple(spec.get("methods") or ())
    title = "Figure 4: speaker error per module"
    df = error_frame(rows)
    if df.empty:
        return placeholder(out_dir, "fig4", title, "no speaker_acc rows in results.csv (an audio task)", png)
    task = pick_task(set(df.task), paper.candidates(spec["modality"]))
    df = df[df.task == task]
    layered = {m for m, g in df.groupby("method") if g.module.nunique() > 1}
    if layered:
        df = df[df.method.isin(layered)]  # methods probed on one representation only (mfcc) have no curve
    else:
        log.warning("fig4: only one module was probed on %s; set eval.all_modules=true for per-module", task)
    order = [m for m in first if m in set(df.method)] + sorted(set(df.method) - set(first))
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        sns.lineplot(data=df, x="module", y="error", hue="method", hue_order=order, marker="o",
                     errorbar="sd", err_style="bars", ax=ax)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xticks(sorted(df.module.unique()))
        ax.set_xlabel("module (last = the representation the tables probe)")
        ax.set_ylabel("speaker error (1 − accuracy)")
        ax.set_title(f"{title} ({task}; mean ± std over seeds)")
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
        save(fig, out_dir, "fig4", png)
    return f"figures/fig4.{{png,svg}}  task {task}"


def write_figures(rows: list[dict], out_dir: Path, paper: Paper, png: bool = True) -> list[str]:
    """Regenerate every figure under ``out_dir`` as SVG and (``png``) PNG; one terminal line per figure."""
    return [fig3(rows, out_dir, paper, png), fig4(rows, out_dir, paper, png)]
