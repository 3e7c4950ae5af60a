"""From raw result rows to cells: mean, std and number of seeds per (task, method, variant, metric, module).

Reporting reads only the results schema (bench/record.py): each row names its run's *variant*, the method
settings that the run changed among those its method declares (``Method.variant_keys``), e.g.
``schedule=iterative`` or ``train_modules=0``; ``""`` is the method's default configuration.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench import record

log = logging.getLogger(__name__)
RESULTS_FILE = "results.csv"


class ResultsError(ValueError):
    """Missing or malformed results; the message says what to run or fix."""


def load_results(results_dir: Path) -> list[dict]:
    """The checked rows of ``results_dir/results.csv`` (a row without a variant is its method's default)."""
    path = results_dir / RESULTS_FILE
    if not path.is_file():
        raise ResultsError(f"{path} does not exist; run `bench collect {results_dir}` first")
    try:
        rows = record.read_rows(path, fix=f"run `bench collect {results_dir}` again to rebuild it")
    except record.RowsError as err:
        raise ResultsError(str(err)) from None
    return [{**row, "variant": row.get("variant") or ""} for row in rows]


def choose_task(rows: list[dict], candidates: tuple[str, ...], forced: str | None = None) -> str:
    """The forced task, else the first candidate with finished runs, else the first with any runs (so that
    failed or diverged runs are named under its table), else the first candidate."""
    if forced:
        return forced
    for present in ({r["task"] for r in ok_scalar_rows(rows)}, {r["task"] for r in rows}):
        found = next((t for t in candidates if t in present), None)
        if found:
            return found
    return candidates[0]


def device_class(device: str) -> str:
    """'cpu' or 'cuda:<model>' as recorded; measurements are only comparable within one class."""
    return device or "unknown"


@dataclass(frozen=True)
class CellKey:
    task: str
    method: str
    variant: str
    metric: str
    module: str
    device: str = ""
    """The device class, or '' when cells are pooled over devices (tables)."""

    def label(self) -> str:
        parts = [self.task, self.method + (f"[{self.variant}]" if self.variant else ""), self.metric]
        if self.module:
            parts.append(f"module {self.module}")
        if self.device:
            parts.append(self.device)
        return " / ".join(parts)


@dataclass(frozen=True)
class Cell:
    """The runs behind one number, in seed order, with their provenance."""

    key: CellKey
    values: tuple[float, ...]
    seeds: tuple[str, ...]
    run_ids: tuple[str, ...]
    git_shas: tuple[str, ...]
    config_hashes: tuple[str, ...]
    devices: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (None with a single seed)."""
        return statistics.stdev(self.values) if self.n > 1 else None


def ok_scalar_rows(rows: Iterable[dict]) -> list[dict]:
    """Rows of finished runs with a value and no epoch (losses per epoch or step are series, not cells); a run with a
    value that is not finite is left out whole (``unfinished_runs`` names it)."""
    rows = list(rows)
    bad = {r["run_id"] for r in unfinished_runs(rows)}
    return [r for r in rows if r["status"] == record.STATUS_OK and r["value"] != "" and not r.get("epoch")
            and r["run_id"] not in bad]  # fmt: skip


def finite(value: str) -> bool:
    return value == "" or math.isfinite(float(value))


def aggregate(rows: Iterable[dict], by_device: bool = False) -> dict[CellKey, Cell]:
    """Group finished runs' scalar rows into cells (deterministic: runs sorted by seed then run id)."""
    groups: dict[CellKey, list[dict]] = {}
    for r in ok_scalar_rows(rows):
        device = device_class(r.get("device", "")) if by_device else ""
        key = CellKey(r["task"], r["method"], r.get("variant", ""), r["metric"], r["module"] or "", device)
        groups.setdefault(key, []).append(r)
    cells = {
        key: make_cell(key, groups[key]) for key in sorted(groups, key=lambda k: tuple(vars(k).values()))
    }
    repeated = sorted({f"{k.task}/{k.method}" + (f"[{k.variant}]" if k.variant else "")
                       for k, c in cells.items() if len(set(c.seeds)) < c.n})  # fmt: skip
    if repeated:
        log.warning("several runs share a seed in %s (configs that differ beyond the variant?); they are "
                    "averaged together", ", ".join(repeated))  # fmt: skip
    return cells


def seed_order(row: dict) -> tuple:
    seed = row.get("seed") or ""
    return (int(seed) if seed.lstrip("-").isdigit() else 0, seed, row["run_id"])


def make_cell(key: CellKey, rows: list[dict]) -> Cell:
    rows = sorted(rows, key=seed_order)
    seeds = [r.get("seed", "") for r in rows]
    return Cell(
        key, tuple(float(r["value"]) for r in rows), tuple(seeds), tuple(r["run_id"] for r in rows),
        tuple(sorted({r.get("git_sha", "") for r in rows})), tuple(sorted({r.get("config_hash", "") for r in rows})),
        tuple(sorted({r.get("device", "") for r in rows})),
    )  # fmt: skip


def unfinished_runs(rows: Iterable[dict]) -> list[dict]:
    """One row per run that gives no trusted numbers, sorted by run id: failed, diverged or interrupted runs
    (their status row), and finished runs with a value that is not finite (status ``non-finite value``, the
    metric in ``error``)."""
    seen: dict[str, dict] = {}
    for r in rows:
        if r["status"] != record.STATUS_OK:
            seen.setdefault(r["run_id"], r)
        elif not finite(r["value"]):
            seen.setdefault(r["run_id"], {**r, "status": "non-finite value", "error": f"{r['metric']} = {r['value']}"})
    return [seen[k] for k in sorted(seen)]


def presets(rows: Iterable[dict]) -> list[str]:
    return sorted({r.get("preset", "") for r in rows})
