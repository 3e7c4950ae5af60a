"""Module-parallel speed, measured back to back: GIM with ``train.stages=2`` (one thread per stage) against
``train.stages=1`` with one thread (the same work on one "device") and with two threads (the same cores).

    python results/stages/measure.py --data-root DATA [--reps 3] [--tasks librispeech stl10] [--out results/stages]

DATA holds ``librispeech/`` (e.g. a link to ../shared/data/librispeech) and ``stl10_binary/`` (the official
files, or a fake copy in their layout: ``python -m tests.fixtures_stl10 DATA``). Each configuration runs in
its own process, in alternating order, ``--reps`` times; every run's s/step is its timed steps' mean (after
the warm-up steps; for stages, the last stage's step period, which includes waiting for its input). Writes
``speed.csv`` (one row per run) and ``speed.md`` (means, ratios, and the speed-ups ``bench describe``
predicts from FLOPs and the launcher predicts from its profiling pass) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import record
from bench.describe import module_flops
from bench.pipeline import predicted_speedup

CONFIGS = {  # name -> overrides
    "1 stage x 1 thread": ["train.stages=1", "train.threads=1"],
    "2 stages x 1 thread": ["train.stages=2", "train.threads=1"],
    "1 stage x 2 threads": ["train.stages=1", "train.threads=2"],
}
TASKS = {"librispeech": [], "stl10": ["task.verify_sizes=false"]}
STEPS = {"librispeech": (12, 4), "stl10": (8, 3)}
"""Steps per run and warm-up steps (not timed) by default: 8 and 5 timed steps (a paper-size STL-10 step takes
seconds on one CPU thread)."""


def one_run(task: str, sets: list[str], args: argparse.Namespace, out: Path) -> dict:
    steps, warmup = args.steps or STEPS[task][0], args.warmup or STEPS[task][1]
    common = [f"train.steps_per_epoch={steps}", f"train.warmup_steps={warmup}", "train.checkpoint_every=1000",
              "train.tensorboard=false", *TASKS[task], *sets]  # fmt: skip
    cmd = [sys.executable, "-m", "bench", "run", "--method", "gim", "--task", task, "--preset", "memory",
           "--data-root", str(args.data_root), "--out", str(out), "--quiet"]  # fmt: skip
    for item in common + args.set:
        cmd += ["--set", item]
    done = subprocess.run(cmd, capture_output=True, text=True)
    (rows_path,) = out.glob(f"*/{record.ROWS_FILE}")
    rows = record.read_rows(rows_path)
    if done.returncode or rows[0]["status"] != "ok":
        raise SystemExit(f"{task} {sets}: {rows[0]['status']} {rows[0]['error']}\n{done.stderr[-2000:]}")
    value = {(r["metric"], r["module"]): float(r["value"]) for r in rows if r["value"] not in ("", None)}
    by_module = sorted((int(r["module"]), r["metric"], float(r["value"])) for r in rows
                       if r["metric"] in ("profile_module_s", "stage_of_module"))  # fmt: skip
    profile = [v for _, metric, v in by_module if metric == "profile_module_s"]
    groups: dict[int, list[int]] = {}
    for m, metric, v in by_module:
        if metric == "stage_of_module":
            groups.setdefault(int(v), []).append(m)
    return {
        "task": task, "s_per_step": value[("s_per_step", "")], "samples_per_s": value[("samples_per_s", "")],
        "peak_mem_bytes": value[("peak_mem_bytes", "")], "precision": rows[0]["precision"],
        "idle_stage0": value.get(("idle_fraction_stage0", "")), "idle_stage1": value.get(("idle_fraction_stage1", "")),
        "placement": list(groups.values()) if groups else "",
        "profiled_speedup": predicted_speedup(profile, list(groups.values())) if profile and groups else "",
    }  # fmt: skip


def flops_speedup(task: str, data_root: Path) -> tuple[float, list[list[int]]]:
    """``bench describe``'s prediction for 2 stages (balanced by forward FLOPs)."""
    import torch  # noqa: PLC0415

    from bench import plugins  # noqa: PLC0415
    from bench.pipeline import balanced  # noqa: PLC0415
    from bench.spec import RunSpec, resolve  # noqa: PLC0415

    plugins.load_plugins()
    resolved = resolve(RunSpec(method="gim", task=task, preset="memory"))
    task = resolved.task_cls(resolved.task, data_root, 0)
    with torch.no_grad():
        costs = [f for f, _ in module_flops(task.build_encoder().eval(), task.example_input(1))]
    groups = balanced(costs, 2)
    return predicted_speedup(costs, groups), groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="steps per run (0: librispeech 12, stl10 8)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed first steps (0: librispeech 4, stl10 3)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--set", action="append", default=[], help="extra overrides for every run (tests)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            for rep in range(args.reps):
                order = list(CONFIGS) if rep % 2 == 0 else list(reversed(CONFIGS))  # alternate the order
                for name in order:
                    row = {"config": name, "rep": rep, **one_run(task, CONFIGS[name], args, Path(tmp) / f"{task}{rep}{name}")}
                    rows.append(row)
                    print(f"{task:<12} rep {rep}  {name:<20} {row['s_per_step']:.3f} s/step", flush=True)
                    write_csv(args.out / "speed.csv", rows)  # after every run: an interrupted session keeps its rows
    (args.out / "speed.md").write_text(summary(rows, args))
    print(summary(rows, args))


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def summary(rows: list[dict], args: argparse.Namespace) -> str:
    lines = ["| task | configuration | s/step (mean ± std, n) | samples/s | peak memory (largest stage) | "
             "speed-up of 2 stages x 1 thread over it |", "|---|---|---|---|---|---|"]  # fmt: skip
    notes = []
    for task in args.tasks:
        runs = {name: [r for r in rows if r["task"] == task and r["config"] == name] for name in CONFIGS}
        mean = {name: statistics.mean(r["s_per_step"] for r in group) for name, group in runs.items()}
        staged = mean["2 stages x 1 thread"]
        for name, group in runs.items():
            steps = [r["s_per_step"] for r in group]
            std = statistics.stdev(steps) if len(steps) > 1 else 0.0
            rate = statistics.mean(r["samples_per_s"] for r in group)
            mem = statistics.mean(r["peak_mem_bytes"] for r in group) / 2**20
            ratio = "" if name == "2 stages x 1 thread" else f"{mean[name] / staged:.2f}x"
            lines.append(f"| {task} | {name} | {mean[name]:.3f} ± {std:.3f} ({len(steps)}) | {rate:.2f} | "
                         f"{mem:.0f} MiB | {ratio} |")  # fmt: skip
        predicted, groups = flops_speedup(task, args.data_root)
        two = [r for r in rows if r["task"] == task and r["config"] == "2 stages x 1 thread"]
        profiled = statistics.mean(r["profiled_speedup"] for r in two)
        idle = [statistics.mean(r[f"idle_stage{s}"] for r in two) for s in (0, 1)]
        notes.append(f"- {task}: placement {two[0]['placement']} (profiled); predicted speed-up of 2 stages: "
                     f"{profiled:.2f}x from the profiling pass, {predicted:.2f}x from FLOPs (`bench describe`, "
                     f"{groups}); measured {mean['1 stage x 1 thread'] / staged:.2f}x; idle fraction stage 0 "
                     f"{idle[0]:.2f}, stage 1 {idle[1]:.2f}; precision {two[0]['precision']}")  # fmt: skip
    return "\n".join(lines + [""] + notes) + "\n"


if __name__ == "__main__":
    main()
