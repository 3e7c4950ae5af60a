"""``bench check DIR --reference REF``: has anything become worse, slower or hungrier than the reference?

Cells are (task, method, variant, metric, module) per device class, from DIR/results.csv. Verdicts:
- an accuracy (``*_acc``) regresses when its mean over seeds falls more than
  min(max(sigmas x reference std, acc_floor), acc_rel_cap x reference mean) below the reference mean;
- ``peak_mem_bytes`` regresses when it rises, ``samples_per_s`` when it falls, by more than
  max(tolerance x reference mean, sigmas x reference std) (memory: and more than ``mem_floor_bytes``), with
  the tolerance of the device class; a CPU reference is never compared with a GPU run (those cells are
  skipped, and said so);
- a failed or interrupted run fails the check; a reference cell without a current one is *missing* (a
  warning, a failure with ``--strict``); a current cell without a reference one is *new*.
``bench check DIR --update --reference REF`` writes the reference on purpose (bench/reference.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.report import aggregate as agg
from bench.report import reference as refmod
from bench.report.aggregate import Cell, CellKey
from bench.report.reference import RefCell, Reference, Rules

OK, BETTER, REGRESSED, MISSING, NEW, SKIPPED, FAILED = (
    "ok",
    "better",
    "REGRESSED",
    "missing",
    "new",
    "skipped",
    "FAILED",
)
EXIT_OK, EXIT_REGRESSED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Verdict:
    cell: str
    reference: str
    now: str
    verdict: str
    detail: str = ""


def units(metric: str) -> tuple[float, str, int]:
    """(scale, unit, decimals) to print a metric: accuracies in percent, memory in MiB."""
    if metric.endswith("_acc"):
        return 100.0, " %", 1
    if metric.endswith("_bytes"):
        return 1 / 2**20, " MiB", 1
    return 1.0, "/s" if metric == "samples_per_s" else "", 2


def amount(metric: str, value: float) -> str:
    scale, unit, digits = units(metric)
    return f"{value * scale:.{digits}f}{unit}"


def show(metric: str, mean: float, std: float | None, n: int) -> str:
    scale, unit, digits = units(metric)
    spread = "" if not std else f" ± {std * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f}{spread}{unit} (n={n})"


def compare_accuracy(ref: RefCell, now: Cell, rules: Rules, label: str) -> Verdict:
    drop = rules.allowed_drop(ref.mean, ref.std)
    verdict = REGRESSED if now.mean < ref.mean - drop else BETTER if now.mean > ref.mean + drop else OK
    cross = "" if ref.key.device == now.key.device else f"; reference measured on {ref.key.device}"
    return Verdict(label, show(ref.key.metric, ref.mean, ref.std, ref.n), show(now.key.metric, now.mean, now.std, now.n),
                   verdict, f"allowed drop {100 * drop:.1f} points{cross}")  # fmt: skip


def compare_perf(ref: RefCell, now: Cell, rules: Rules, label: str) -> Verdict:
    metric = now.key.metric
    allowed = rules.allowed_change(now.key.device, metric, ref.mean, ref.std)
    worse_by = (
        now.mean - ref.mean if refmod.PERF_METRICS[metric] == "higher is worse" else ref.mean - now.mean
    )
    verdict = REGRESSED if worse_by > allowed else BETTER if -worse_by > allowed else OK
    ratio = f"{now.mean / ref.mean:.2f}" if ref.mean else "inf"
    detail = f"now/ref {ratio}, allowed ±{amount(metric, allowed)}"
    return Verdict(
        label, show(metric, ref.mean, ref.std, ref.n), show(metric, now.mean, now.std, now.n), verdict, detail
    )


def base(key: CellKey) -> CellKey:
    return dataclasses.replace(key, device="")


def match(ref: Reference, key: CellKey) -> RefCell | None:
    """The reference cell of ``key``; for an accuracy, one of another device class when this class has none."""
    if key in ref.cells or not key.metric.endswith("_acc"):
        return ref.cells.get(key)
    return next(
        (c for k, c in sorted(ref.cells.items(), key=lambda kc: kc[0].device) if base(k) == base(key)), None
    )


def compare_cell(ref: Reference, key: CellKey, cell: Cell) -> Verdict:
    label = key.label()
    found = match(ref, key)
    if found is not None:
        compare = compare_accuracy if key.metric.endswith("_acc") else compare_perf
        return compare(found, cell, ref.rules, label)
    now = show(key.metric, cell.mean, cell.std, cell.n)
    if key.metric in refmod.PERF_METRICS and key.device not in ref.device_classes():
        return Verdict(label, "—", now, SKIPPED, f"the reference has no {key.device} measurements")
    return Verdict(label, "—", now, NEW, "not in the reference")


def missing_cells(ref: Reference, cells: dict[CellKey, Cell]) -> list[Verdict]:
    devices, bases = {k.device for k in cells}, {base(k) for k in cells}
    out = []
    for key, r in ref.cells.items():
        absent = (
            base(key) not in bases
            if key.metric.endswith("_acc")
            else key.device in devices and key not in cells
        )
        if absent:
            out.append(
                Verdict(key.label(), show(key.metric, r.mean, r.std, r.n), "—", MISSING, "no current runs")
            )
    return out


def compare(ref: Reference, rows: list[dict]) -> list[Verdict]:
    """Every verdict: failed runs first, then cells in order, then missing cells."""
    cells = {k: c for k, c in agg.aggregate(rows, by_device=True).items() if refmod.is_checked(k.metric)}
    failed = [Verdict(f"run {r['run_id']} ({r['method']} on {r['task']}, seed {r['seed']})", "", r["status"], FAILED,
                      (r.get("error") or "").split("\n")[0])
              for r in agg.unfinished_runs(rows)]  # fmt: skip
    return failed + [compare_cell(ref, k, c) for k, c in cells.items()] + missing_cells(ref, cells)


def report(verdicts: list[Verdict], strict: bool) -> tuple[str, int]:
    """The printed report and the exit status."""
    head = ("cell", "reference", "now", "verdict")
    table = [head] + [
        (v.cell, v.reference, v.now, v.verdict + (f" ({v.detail})" if v.detail else "")) for v in verdicts
    ]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in table]
    counts = {
        s: sum(v.verdict == s for v in verdicts)
        for s in (OK, BETTER, REGRESSED, FAILED, MISSING, NEW, SKIPPED)
    }
    lines.append("summary: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n))
    bad = [v for v in verdicts if v.verdict in (REGRESSED, FAILED) or (strict and v.verdict == MISSING)]
    if bad:
        lines.append(f"FAIL: {len(bad)} cell(s) regressed or failed:")
        lines += [f"  {v.cell}: {v.reference or '-'} -> {v.now}" for v in bad]
    else:
        lines.append(
            "PASS" + (" (missing cells are warnings; --strict fails on them)" if counts[MISSING] else "")
        )
    return "\n".join(lines), EXIT_REGRESSED if bad else EXIT_OK


def rules_with(args: argparse.Namespace, rules: Rules) -> Rules:
    """``rules`` with the command line's overrides (memory/speed tolerances apply to every device class)."""
    changes = {
        k: getattr(args, k) for k in ("sigmas", "acc_floor", "acc_rel_cap") if getattr(args, k) is not None
    }
    tolerance = {d: dict(t) for d, t in rules.tolerance.items()}
    for metric, value in (("peak_mem_bytes", args.mem_tol), ("samples_per_s", args.speed_tol)):
        if value is not None:
            for per_device in tolerance.values():
                per_device[metric] = value
    return dataclasses.replace(rules, **changes, tolerance=tolerance)


def update(args: argparse.Namespace, rows: list[dict]) -> str:
    failed = agg.unfinished_runs(rows)
    if failed:
        raise agg.ResultsError(f"{len(failed)} run(s) in {args.dir} did not finish (e.g. {failed[0]['run_id']}); "
                               "a reference needs a clean sweep: rerun them, `bench collect`, then --update")  # fmt: skip
    old = refmod.load_reference(args.reference) if args.reference.is_file() else None
    rules = rules_with(args, old.rules if old else Rules())
    preset = ",".join(p for p in agg.presets(rows) if p)
    meta = {
        "cycle": args.cycle or (old.meta.get("cycle") if old else None) or preset or args.dir.name,
        "preset": preset,
        "source": {"results": str(args.dir), "git_sha": sorted({r.get("git_sha", "") for r in rows})},
    }
    new = refmod.from_cells(agg.aggregate(rows, by_device=True))
    ref = refmod.merged(old, new, rules, meta)
    refmod.save_reference(args.reference, ref)
    classes = ", ".join(sorted({k.device for k in new}))
    return f"wrote {len(ref.cells)} cells ({len(new)} from {args.dir}, device class {classes}) to {args.reference}"


def cmd_check(args: argparse.Namespace) -> int:
    try:
        rows = agg.load_results(args.dir)
        if args.update:
            print(update(args, rows))
            return EXIT_OK
        ref = refmod.load_reference(args.reference)
        ref.rules = rules_with(args, ref.rules)
    except (agg.ResultsError, refmod.ReferenceFileError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"bench check {args.dir} against {args.reference}")
    expected, now = ref.meta.get("preset", ""), ",".join(p for p in agg.presets(rows) if p)
    if expected and now != expected:
        print(f"warning: the reference is for preset {expected!r}, these results are {now!r}")
    text, status = report(compare(ref, rows), args.strict)
    print(text)
    return status


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="compare DIR/results.csv with a reference; non-zero exit on a regression"
    )
    p.add_argument("dir", type=Path, help="a results folder holding results.csv (from `bench collect`)")
    p.add_argument(
        "--reference", type=Path, required=True, help="reference YAML, e.g. results/smoke/reference.yaml"
    )
    p.add_argument(
        "--update", action="store_true", help="write DIR's cells into the reference instead of checking"
    )
    p.add_argument(
        "--strict", action="store_true", help="reference cells without current runs fail the check"
    )
    p.add_argument("--sigmas", type=float, help="accuracy: allowed drop in reference stds (reference: 3)")
    p.add_argument(
        "--acc-floor", type=float, help="accuracy: minimum allowed drop, absolute (reference: 0.02)"
    )
    p.add_argument(
        "--acc-rel-cap", type=float, help="accuracy: maximum allowed drop, share of the mean (0.5)"
    )
    p.add_argument("--mem-tol", type=float, help="peak memory: relative tolerance for every device class")
    p.add_argument("--speed-tol", type=float, help="samples/s: relative tolerance for every device class")
    p.add_argument("--cycle", help="with --update: label stored in the reference (smoke, nightly, paper)")
    p.set_defaults(func=cmd_check)
