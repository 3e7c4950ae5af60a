"""Reference results stored as data: mean, std and n per cell, with the rules ``bench check`` applies.

A reference file (YAML, e.g. ``results/smoke/reference.yaml``) looks like::

    format: bench-reference/1
    cycle: smoke                      # what produced it: smoke / nightly / paper
    preset: smoke
    source: {results: results/smoke, git_sha: [3f2a...]}
    rules:
      sigmas: 3.0                     # accuracy: allowed drop = max(sigmas x reference std, acc_floor) ...
      acc_floor: 0.02                 # ... absolute, in accuracy units (0.02 = 2 points)
      acc_rel_cap: 0.5                # ... but never more than this share of the reference mean
      mem_floor_bytes: 16777216       # memory: changes below this are noise
      tolerance:                      # memory and throughput: allowed change = max(tolerance x reference,
                                      # sigmas x reference std), relative, per device class
        cpu: {peak_mem_bytes: 0.5, samples_per_s: 0.6}
        cuda: {peak_mem_bytes: 0.1, samples_per_s: 0.25}   # 'cuda' covers every cuda:<model>
    cells:
    - {task: fsdd, method: gim, variant: '', metric: speaker_acc, module: '', device: cpu,
       mean: 0.61, std: 0.03, n: 3}

A cell's ``device`` is its device class ('cpu' or 'cuda:<model>'); memory and throughput are only compared
within one class, accuracies across classes when the reference has none of the run's class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.record import atomic_write_text
from bench.report.aggregate import Cell, CellKey

FORMAT = "bench-reference/1"
PERF_METRICS = {"peak_mem_bytes": "higher is worse", "samples_per_s": "lower is worse"}
"""Measurements checked with a relative tolerance (s_per_step mirrors samples_per_s and is not repeated)."""
DEFAULT_TOLERANCE = {
    "cpu": {"peak_mem_bytes": 0.5, "samples_per_s": 0.6},
    "cuda": {"peak_mem_bytes": 0.1, "samples_per_s": 0.25},
    "default": {"peak_mem_bytes": 0.5, "samples_per_s": 0.6},
}


class ReferenceFileError(ValueError):
    """A missing or malformed reference file; the message says how to write one."""


def is_checked(metric: str) -> bool:
    return metric.endswith("_acc") or metric in PERF_METRICS


@dataclass
class Rules:
    sigmas: float = 3.0
    acc_floor: float = 0.02
    acc_rel_cap: float = 0.5
    mem_floor_bytes: float = 16 * 2**20
    """Memory changes below this are measurement noise (CPU resident-set growth, allocator rounding)."""
    tolerance: dict[str, dict[str, float]] = field(default_factory=lambda: {k: dict(v) for k, v in
                                                                          DEFAULT_TOLERANCE.items()})  # fmt: skip

    def allowed_drop(self, mean: float, std: float) -> float:
        """How far an accuracy mean may fall below the reference mean before it is a regression."""
        return min(max(self.sigmas * std, self.acc_floor), self.acc_rel_cap * mean)

    def allowed_change(self, device: str, metric: str, mean: float, std: float) -> float:
        """How far a memory or throughput mean may move the bad way: max(tolerance x mean, sigmas x std),
        and for memory at least ``mem_floor_bytes``."""
        allowed = max(self.relative(device, metric) * mean, self.sigmas * std)
        return max(allowed, self.mem_floor_bytes) if metric == "peak_mem_bytes" else allowed

    def relative(self, device: str, metric: str) -> float:
        """The relative tolerance of ``metric`` on ``device``: its class, else its kind ('cuda'), else default."""
        for name in (device, device.split(":")[0], "default"):
            if metric in self.tolerance.get(name, {}):
                return float(self.tolerance[name][metric])
        return float(DEFAULT_TOLERANCE["default"][metric])


@dataclass(frozen=True)
class RefCell:
    key: CellKey
    mean: float
    std: float
    n: int


@dataclass
class Reference:
    cells: dict[CellKey, RefCell]
    rules: Rules = field(default_factory=Rules)
    meta: dict = field(default_factory=dict)

    def device_classes(self) -> set[str]:
        return {k.device for k in self.cells}


def rounded(x: float) -> float:
    return float(f"{x:.6g}")


def load_reference(path: Path) -> Reference:
    if not path.is_file():
        raise ReferenceFileError(f"reference {path} does not exist; write one with "
                             f"`bench check DIR --update --reference {path}`")  # fmt: skip
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ReferenceFileError(f"{path}: not valid YAML{where} (cut short or edited?); restore it from git or "
                                 f"write it again with `bench check DIR --update --reference {path}`") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReferenceFileError(f"{path}: cannot be read ({err})") from None
    if not isinstance(data, dict):
        raise ReferenceFileError(f"{path}: not a bench reference (a YAML mapping with format, rules, cells)")
    if data.get("format") != FORMAT:
        raise ReferenceFileError(
            f"{path}: not a bench reference (format {data.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        cells = [RefCell(CellKey(str(c["task"]), str(c["method"]), str(c.get("variant") or ""), str(c["metric"]),
                                 str(c.get("module") if c.get("module") is not None else ""), str(c["device"])),
                         float(c["mean"]), float(c.get("std") or 0.0), int(c["n"]))
                 for c in data.get("cells") or []]  # fmt: skip
        rules = Rules(**{**vars(Rules()), **(data.get("rules") or {})})
    except (KeyError, TypeError, ValueError) as err:
        raise ReferenceFileError(f"{path}: malformed cell or rules ({err})") from err
    bad = [c for c in cells if not (math.isfinite(c.mean) and math.isfinite(c.std))]
    if bad:
        raise ReferenceFileError(f"{path}: cell {bad[0].key.label()} has a value that is not finite "
                                 f"({bad[0].mean}); write the reference again from good results")  # fmt: skip
    meta = {k: v for k, v in data.items() if k not in ("format", "rules", "cells")}
    return Reference({c.key: c for c in cells}, rules, meta)


def from_cells(cells: dict[CellKey, Cell]) -> dict[CellKey, RefCell]:
    return {k: RefCell(k, c.mean, c.std or 0.0, c.n) for k, c in cells.items() if is_checked(k.metric)}


def merged(old: Reference | None, new_cells: dict[CellKey, RefCell], rules: Rules, meta: dict) -> Reference:
    """The new cells, plus the old reference's cells of device classes the new results do not cover."""
    covered = {k.device for k in new_cells}
    kept = {} if old is None else {k: c for k, c in old.cells.items() if k.device not in covered}
    cells = {**kept, **new_cells}
    return Reference({k: cells[k] for k in sorted(cells, key=lambda k: tuple(vars(k).values()))}, rules, meta)


def save_reference(path: Path, ref: Reference) -> None:
    cells = [
        {**vars(c.key), "mean": rounded(c.mean), "std": rounded(c.std), "n": c.n} for c in ref.cells.values()
    ]
    data = {"format": FORMAT, **ref.meta, "rules": vars(ref.rules), "cells": cells}
    header = (
        "# Written by `bench check DIR --update --reference REF`; see bench/reference.py for the format.\n"
    )
    # Flow style for leaf mappings: one line per cell, so that a diff of the reference reads cell by cell.
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=10_000)
    atomic_write_text(path, header + text)
