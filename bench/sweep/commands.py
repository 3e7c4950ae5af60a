"""``bench sweep | status | collect | validate``: experiment files submitted, tracked and collected.

``bench sweep FILE`` checks the file (``bench validate``), skips runs already done or still queued, snapshots
the code, submits the rest as one job array, records the submission in ``OUT/.sweep/`` and waits for the
runs (``--no-wait`` returns at once). ``bench status OUT`` and ``bench collect OUT`` work from any shell.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import submitit

from bench import record
from bench.sweep import experiment, launch, plan, runner, slurm, snapshot
from bench.sweep import state as sweep_state
from bench.sweep.runner import RunJob
from bench.sweep.state import ACTIVE, DONE, SUPERSEDED, PlannedRun, RunState, Submission

log = logging.getLogger("bench.run")  # the console shows this logger's messages
EXIT_USAGE = 2


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="submit an experiment file's runs as one job array")
    p.add_argument("experiment", type=Path, help="an experiment YAML, e.g. results/smoke/experiment.yaml")
    p.add_argument("--executor", choices=runner.EXECUTORS, default="local",
                   help="slurm: a job array; local: job processes here; debug: in this process")  # fmt: skip
    p.add_argument("--out", type=Path, help="runs go to OUT/<run_id>/ (default: runs/ next to the file)")
    p.add_argument(
        "--data-root", type=Path, help="where the tasks' data lives (overrides the file's data_root)"
    )
    p.add_argument("--no-wait", action="store_true", help="return once submitted; see `bench status OUT`")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between checks while waiting")
    p.add_argument("--quiet", action="store_true", help="warnings and the final table only")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("status", help="the state of every run of a sweep folder")
    p.add_argument("out", type=Path, help="the sweep's output folder (bench sweep --out)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("collect", help="merge a sweep folder's rows into OUT/results.csv")
    p.add_argument("out", type=Path, help="the sweep's output folder (bench sweep --out)")
    p.add_argument("--allow-missing", action="store_true",
                   help="collect even when runs are missing or damaged (they are named and left out)")  # fmt: skip
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("validate", help="check an experiment file (names, keys, data) without running it")
    p.add_argument("experiment", type=Path, help="an experiment YAML, e.g. results/small/experiment.yaml")
    p.add_argument("--data-root", type=Path, help="where the tasks' data lives (overrides the file's data_root)")
    p.add_argument("--skip-data", action="store_true", help="check names, keys and resources only")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    exp = experiment.load(args.experiment, args.data_root)
    checked = plan.check(exp, data=not args.skip_data)
    for warning in checked.warnings:
        log.warning("%s", warning)
    tasks = Counter(item.spec.task for item in checked.items)
    print(f"{args.experiment}: ok, {len(checked.items)} runs "
          f"({', '.join(f'{t}: {n}' for t, n in tasks.items())}), preset {exp.preset}, seeds {list(exp.seeds)}")  # fmt: skip
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    exp = experiment.load(args.experiment, args.data_root)
    checked = plan.check(exp)
    for warning in checked.warnings:
        log.warning("%s", warning)
    out = (args.out or args.experiment.parent / "runs").resolve()
    with sweep_state.lock(out):  # two sweeps into one folder must not submit a run twice
        sweep_state.save_plan(out, exp.name, [item.run for item in checked.items])
        todo = runs_to_submit(out, checked.items)
        handles = submit_or_explain(args, exp, out, todo) if todo else []
    if handles is None:
        return EXIT_USAGE
    if not todo:
        log.info("nothing to submit: every run of %s is done, queued or running in %s", args.experiment, out)
    elif args.executor == "debug":
        run_here(handles)
    elif args.no_wait:
        print(
            f"submitted {len(todo)} runs; follow them with `bench status {out}`, then `bench collect {out}`"
        )
        return 0
    else:
        try:
            wait(out, handles, args.poll)
        except KeyboardInterrupt:
            log.warning("stopped waiting; submitted jobs go on: see `bench status %s`", out)
    return finish(out)


def submit_or_explain(args: argparse.Namespace, exp: experiment.Experiment, out: Path,
                      todo: list[plan.PlanItem]) -> list | None:  # fmt: skip
    """``submit``, or None after saying why the queue refused the jobs."""
    try:
        return submit(args, exp, out, todo)
    except submitit.core.utils.FailedJobError as err:  # sbatch refused the job
        print(f"bench: error: sbatch refused the jobs: {str(err).strip()}\n"
              f"check the `slurm:` section of {args.experiment} (partition, account, qos, constraint)",
              file=sys.stderr)  # fmt: skip
    except RuntimeError as err:  # no SLURM here
        print(f"bench: error: {err}", file=sys.stderr)
    return None


def runs_to_submit(out: Path, items: list[plan.PlanItem]) -> list[plan.PlanItem]:
    """The runs that are neither done (rows with status ok) nor queued or running from an earlier sweep."""
    known = {s.run.run_id: s.state for s in sweep_state.run_states(out)} if out.is_dir() else {}
    todo, seen = [], set()
    for item in items:
        if item.run.run_id in seen or known.get(item.run.run_id) in (DONE, *ACTIVE):
            continue
        seen.add(item.run.run_id)
        todo.append(item)
    skipped = len(items) - len(todo)
    if skipped:
        log.info("skipping %d of %d runs: done, queued or running already", skipped, len(items))
    return todo


def submit(
    args: argparse.Namespace, exp: experiment.Experiment, out: Path, todo: list[plan.PlanItem]
) -> list:
    """Snapshot the code, submit one array per set of resources, record what was submitted."""
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    code = snapshot.take(out) if args.executor != "debug" else None
    quiet = args.executor != "debug" or args.quiet
    handles: list = []
    try:
        for res in dict.fromkeys(item.resources for item in todo):
            group = [item for item in todo if item.resources == res]
            handles += submit_group(args.executor, out, group, res, f"bench-{exp.name}", code, quiet)
    finally:  # record even a partial submission: its jobs are out there
        runs = [item.run for item in todo if item.run.job_id]
        if runs:
            sub = Submission(args.executor, exp.name, str(args.experiment.resolve()), str(code) if code else None,
                             runs, submitted_at=started)  # fmt: skip
            sweep_state.save(out, sub)
    return handles


def submit_group(executor: str, out: Path, group: list[plan.PlanItem], res: slurm.Resources, name: str,
                 code: Path | None, quiet: bool) -> list:  # fmt: skip
    jobs = [RunJob(item.spec, str(out / item.run.run_id), quiet) for item in group]
    handles = launch.submit(executor, out, jobs, [item.run for item in group], res, name, code)
    ids = sorted(
        {item.run.job_id.split("_")[0] if executor == "slurm" else item.run.job_id for item in group}
    )
    log.info("submitted %d runs to %s as job %s; logs in %s", len(group), executor, ", ".join(ids),
             out / sweep_state.STATE_DIR / sweep_state.LOG_DIR)  # fmt: skip
    return handles


def run_here(handles: list) -> None:
    """Run the debug executor's jobs in this process, stopping at the first one interrupted (Ctrl-C)."""
    for handle in handles:
        outcome = handle.result()
        if outcome.status == record.STATUS_INTERRUPTED:
            log.warning("sweep interrupted; run the same command again to resume")
            return


def wait(out: Path, handles: list, poll: float) -> None:
    """Wait until no run of ``out`` is queued or running, logging each change of the counts."""
    last = None
    while True:
        for handle in handles:  # lets a local job's finished process be reaped
            if hasattr(handle, "_process"):
                handle.done()
        counts = Counter(s.state for s in sweep_state.run_states(out))
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        if summary != last:
            log.info("%s", summary)
            last = summary
        if not any(counts[state] for state in ACTIVE):
            return
        time.sleep(poll)


def finish(out: Path) -> int:
    states = sweep_state.run_states(out)
    print(format_states(states))
    target = record.collect(out, superseded(states), allow_missing=True)  # the table above names what is not done
    print(f"rows collected in {target}")
    return 0 if states and all(s.state in (DONE, SUPERSEDED) for s in states) else 1


def cmd_status(args: argparse.Namespace) -> int:
    if not args.out.is_dir():
        print(f"bench: error: {args.out} does not exist; give the --out folder of a sweep", file=sys.stderr)
        return EXIT_USAGE
    print(format_states(sweep_state.run_states(args.out)))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    states = sweep_state.run_states(args.out) if args.out.is_dir() else []
    if not states:
        print(f"bench: error: no runs in {args.out}; give the --out folder of a sweep", file=sys.stderr)
        return EXIT_USAGE
    expected = [s.run.run_id for s in states if s.state != SUPERSEDED]
    try:
        target = record.collect(args.out, superseded(states), expected, allow_missing=args.allow_missing)
    except record.CollectError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 1
    counts = Counter(s.state for s in states)
    print(f"{sum(1 for _ in record.read_rows(target))} rows from {counts[DONE]} done runs -> {target}")
    if counts[SUPERSEDED]:
        print(f"left out {counts[SUPERSEDED]} superseded runs: a later sweep gave their task, method and seed "
              f"to another configuration (`bench status {args.out}` lists them)")  # fmt: skip
    pending = {state: n for state, n in counts.items() if state not in (DONE, SUPERSEDED)}
    if pending:
        print("not done: " + ", ".join(f"{n} {state}" for state, n in sorted(pending.items()))
              + f" (see `bench status {args.out}`)")  # fmt: skip
    return 0


def superseded(states: list[RunState]) -> list[str]:
    return [s.run.run_id for s in states if s.state == SUPERSEDED]


def format_states(states: list[RunState]) -> str:
    if not states:
        return "no runs"
    head = ("state", "task", "method", "seed", "run_id", "job", "restarts", "last log line / note")
    rows = [(s.state, s.run.task, method_label(s.run), str(s.run.seed), s.run.run_id, s.run.job_id or "-",
             str(s.restarts), sweep_state.join(s.note, s.last_line)) for s in states]  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    room = max(40, shutil.get_terminal_size((160, 24)).columns - sum(widths) - 2 * len(widths))
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + clip(r[-1], room)
        for r in [head, *rows]
    ]
    counts = Counter(s.state for s in states)
    lines.append(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return "\n".join(lines)


def method_label(run: PlannedRun) -> str:
    """``gim`` or, for a variant, ``gim [schedule=iterative]``."""
    return f"{run.method} [{run.variant}]" if run.variant else run.method


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
