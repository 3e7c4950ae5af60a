"""What a sweep submitted, kept in its output folder, and each run's state worked out from it later.

Every ``bench sweep`` writes ``OUT/.sweep/submissions/<time>.json`` (atomically): the executor, the code
snapshot, and the runs it submitted with their job ids; and updates ``OUT/.sweep/plan.json``: which run
fills each place (task, method, variant, seed) of the experiment now, so runs of an older configuration
show as superseded. ``bench status`` and ``bench collect`` read only these files, the run folders and the queue,
so they work from any shell, during or after the sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from bench import record
from bench.sweep import slurm

STATE_DIR = ".sweep"
PLAN_FILE = "plan.json"
LOG_DIR = "logs"
QUEUED, RUNNING, DONE, FAILED, INTERRUPTED, NOT_STARTED, NOT_SUBMITTED, SUPERSEDED = (
    "queued", "running", "done", "failed", "interrupted", "not started", "not submitted", "superseded",
)  # fmt: skip
DIVERGED, DAMAGED = record.STATUS_DIVERGED, record.STATUS_DAMAGED
ACTIVE = (QUEUED, RUNNING)
RESTART = re.compile(r"\(restart (\d+)\)")
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ (INFO )?([\w.]+: )?")  # run.log's time, level and logger


@dataclass
class PlannedRun:
    """One run of a sweep and where it was sent."""

    run_id: str
    method: str
    task: str
    seed: int
    batch_size: int
    """Per-device batch size of the resolved config."""
    protocol_batch_size: int
    """Effective batch size of the preset's protocol (no overrides)."""
    world_size: int = 1
    job_id: str = ""
    log_dir: str = ""
    variant: str = ""
    """The method settings that tell this run apart from the method's default (see bench.report.aggregate)."""

    @property
    def effective_batch_size(self) -> int:
        return self.world_size * self.batch_size


@dataclass
class Submission:
    executor: str
    experiment: str
    experiment_file: str
    snapshot: str | None
    runs: list[PlannedRun]
    submitted_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    )


@dataclass
class RunState:
    run: PlannedRun
    executor: str
    state: str
    restarts: int
    last_line: str
    note: str


@contextlib.contextmanager
def lock(out: Path) -> Iterator[None]:
    """Hold ``OUT/.sweep/lock`` (an advisory file lock) for the duration."""
    path = out / STATE_DIR / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def submissions_dir(out: Path) -> Path:
    return out / STATE_DIR / "submissions"


def save(out: Path, submission: Submission) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = submissions_dir(out) / f"{stamp}-{os.getpid()}.json"
    record.atomic_write_text(path, json.dumps(asdict(submission), indent=1) + "\n")
    return path


def load_all(out: Path) -> list[Submission]:
    """Every submission to ``out``, oldest first."""
    subs = []
    for path in sorted(submissions_dir(out).glob("*.json")):
        try:
            raw = json.loads(path.read_text())
            raw["runs"] = [PlannedRun(**r) for r in raw["runs"]]
            subs.append(Submission(**raw))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as err:
            raise record.RowsError(f"{path}: a damaged submission record ({type(err).__name__}: {err}); move it "
                                   "away and run `bench sweep` again (runs with rows are kept)") from None  # fmt: skip
    return subs


def latest_runs(subs: list[Submission]) -> dict[str, tuple[PlannedRun, Submission]]:
    """run_id -> its latest record that has a job (else its latest record), with that record's submission."""
    latest: dict[str, tuple[PlannedRun, Submission]] = {}
    for sub in subs:
        for run in sub.runs:
            if run.job_id or run.run_id not in latest:
                latest[run.run_id] = (run, sub)
    return latest


def slot(experiment: str, task: str, method: str, variant: str, seed: int | str) -> str:
    """A run's place in an experiment, whatever its configuration."""
    return "/".join([experiment, task, method, variant, str(seed)])


def save_plan(out: Path, experiment: str, runs: list[PlannedRun]) -> None:
    """Record which run now fills each place of ``experiment`` in ``OUT/.sweep/plan.json`` (merged with the
    places of earlier sweeps, so a sweep of part of an experiment changes only its own places)."""
    slots = load_plan(out)
    slots.update({slot(experiment, r.task, r.method, r.variant, r.seed): r.run_id for r in runs})
    record.atomic_write_text(out / STATE_DIR / PLAN_FILE, json.dumps(slots, indent=1, sort_keys=True) + "\n")


def load_plan(out: Path) -> dict[str, str]:
    path = out / STATE_DIR / PLAN_FILE
    if not path.is_file():
        return {}
    try:
        plan = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise record.RowsError(f"{path}: damaged ({err}); delete it and run `bench sweep` again") from None
    if not isinstance(plan, dict):
        raise record.RowsError(f"{path}: damaged (not a mapping); delete it and run `bench sweep` again")
    return plan


def superseded_runs(out: Path) -> dict[str, str]:
    """Runs whose place in an experiment (task, method, variant, seed) a later sweep gave to another
    configuration, because the experiment file, a preset or a default changed since: run id -> the run id
    that replaced it. ``bench collect`` leaves them out of results.csv; their folders stay as they are."""
    slots = load_plan(out)
    current = set(slots.values())
    stale = {}
    for rows_path in sorted(out.glob(f"*/{record.ROWS_FILE}")):
        if rows_path.parent.name in current:
            continue  # only the other runs' rows are read: `bench sweep` polls this while it waits
        rows = record.inspect(rows_path.parent).rows
        r = rows[0] if rows else None
        place = r and slot(r.get("experiment", ""), r["task"], r["method"], r.get("variant", ""), r["seed"])
        if place in slots:
            stale[rows_path.parent.name] = slots[place]
    return stale


def job_states(runs: list[tuple[PlannedRun, Submission]]) -> dict[str, str] | None:
    """job id -> RUNNING / PENDING / ... for every job still alive; None when the queue cannot be asked."""
    states: dict[str, str] = {}
    slurm_ids = [r.job_id for r, sub in runs if sub.executor == "slurm" and r.job_id]
    if slurm_ids:
        queue = slurm.queue_states(slurm_ids)
        if queue is None:
            return None
        states.update(queue)
    for run, sub in runs:
        if sub.executor == "local" and run.job_id and process_alive(int(run.job_id)):
            states[run.job_id] = "RUNNING"
    return states


def process_alive(pid: int) -> bool:
    """A local job's controller is still running (not exited, not a zombie, not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return b"submitit" in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def run_states(out: Path) -> list[RunState]:
    """The state of every run submitted to ``out`` or with rows there, in a stable order."""
    latest = latest_runs(load_all(out))
    queue = job_states(list(latest.values()))
    current = running_runs(out, latest, queue or {})
    states = [state_of(out, run, sub, queue, run.run_id in current) for run, sub in latest.values()]
    for run_dir in sorted(ended_run_dirs(out)):  # runs that ended outside any sweep record
        if run_dir.name not in latest:
            states.append(state_of(out, orphan_run(run_dir), None, {}, False))
    stale = superseded_runs(out)
    for s in states:
        if s.run.run_id in stale:
            s.state = SUPERSEDED
            s.note = join(f"replaced by {stale[s.run.run_id]} (another configuration); not collected", s.note)
    return sorted(states, key=lambda s: (s.run.task, s.run.method, s.run.seed, s.run.run_id))


def running_runs(out: Path, latest: dict[str, tuple[PlannedRun, Submission]], queue: dict[str, str]) -> set[str]:  # fmt: skip
    """Runs executing now: a running SLURM job's run; in a running local job (runs one after another),
    its first run without rows from this submission."""
    current, seen_jobs = set(), set()
    for run, sub in latest.values():
        if queue.get(run.job_id) not in slurm.RUNNING_STATES:
            continue
        unfinished = fresh_status(out / run.run_id, sub) in (None, record.STATUS_INTERRUPTED)
        if sub.executor != "local":
            current.add(run.run_id)
        elif unfinished and run.job_id not in seen_jobs:
            current.add(run.run_id)
            seen_jobs.add(run.job_id)
    return current


def fresh_status(run_dir: Path, sub: Submission | None) -> str | None:
    """The status in the run's rows, if they were written after the submission (else None)."""
    path = run_dir / record.ROWS_FILE
    if not path.is_file():
        return None
    if sub is not None and path.stat().st_mtime < datetime.fromisoformat(sub.submitted_at).timestamp():
        return None  # rows of an earlier attempt, resubmitted since
    return record.run_status(run_dir)


def ended_run_dirs(out: Path) -> list[Path]:
    """Run folders with rows, or whose rows were written and are gone (``rows.json`` without them)."""
    return [p for p in out.iterdir() if (p / record.ROWS_FILE).is_file() or (p / record.MANIFEST_FILE).is_file()]


def state_of(out: Path, run: PlannedRun, sub: Submission | None, queue: dict[str, str] | None,
             running_now: bool) -> RunState:  # fmt: skip
    run_dir = out / run.run_id
    found = record.inspect(run_dir)
    rows = found.rows
    status = fresh_status(run_dir, sub) if run.job_id else found.status
    if found.status == record.STATUS_DAMAGED and (queue or {}).get(run.job_id) not in slurm.ACTIVE_STATES:
        status = record.STATUS_DAMAGED
    job_state = "UNKNOWN" if queue is None else queue.get(run.job_id, "")
    restarts = max([restarts_in_log(run_dir / record.LOG_FILE)] + [int(r["restarts"] or 0) for r in rows[:1]])
    error = rows[0]["error"] if rows else ""
    note = batch_note(run)
    if status == record.STATUS_OK:
        state = DONE
    elif status == record.STATUS_DAMAGED:
        state, note = DAMAGED, join(note, found.problem)
    elif status in (record.STATUS_FAILED, record.STATUS_DIVERGED):
        state, note = status, join(note, error)
    elif job_state == "UNKNOWN":
        state, note = QUEUED, join(note, "the queue did not answer: state unknown")
    elif job_state in slurm.ACTIVE_STATES:
        state = RUNNING if running_now else QUEUED
        if status == record.STATUS_INTERRUPTED:
            note = join(note, "requeued: resumes from its checkpoint")
    elif status == record.STATUS_INTERRUPTED:
        state, note = INTERRUPTED, join(note, error + "; sweep again to resume")
    elif run.job_id and not (run_dir / record.LOG_FILE).is_file():
        state, note = NOT_STARTED, join(note, "its job ended before it began (stopped, or see the job's log); "
                                              "sweep again to run it")  # fmt: skip
    elif run.job_id:
        state, note = FAILED, join(note, "the job ended without writing rows; see its log")
    else:
        state = NOT_SUBMITTED
    executor = sub.executor if sub is not None else ""
    job_log = run.log_dir if state in (RUNNING, FAILED) else ""  # a queued run's job log is another run's
    return RunState(run, executor, state, restarts, last_line(run_dir, job_log), note)


def restarts_in_log(path: Path) -> int:
    if not path.is_file():
        return 0
    return max([int(m) for m in RESTART.findall(path.read_text(errors="replace"))] or [0])


def last_line(run_dir: Path, log_dir: str) -> str:
    """The last line of the run's log, else of its job's error log (where a crash before the run shows)."""
    candidates = [run_dir / record.LOG_FILE]
    if log_dir:
        candidates += sorted(Path(log_dir).glob("*_log.err")) + sorted(Path(log_dir).glob("*_log.out"))
    for path in candidates:
        if path.is_file():
            lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return LOG_PREFIX.sub("", lines[-1])
    return ""


def batch_note(run: PlannedRun) -> str:
    if run.effective_batch_size == run.protocol_batch_size:
        return ""
    return (f"effective batch {run.effective_batch_size} (world size {run.world_size} x {run.batch_size}) "
            f"differs from the protocol's {run.protocol_batch_size}")  # fmt: skip


def orphan_run(run_dir: Path) -> PlannedRun:
    """A run from its rows or, when they are damaged, from its config.yaml."""
    rows = record.inspect(run_dir).rows
    row = rows[0] if rows else config_row(run_dir)
    batch = int(row.get("batch_size") or 0)
    world = int(row.get("world_size") or 1)
    seed = int(row["seed"])
    return PlannedRun(row["run_id"], row["method"], row["task"], seed, batch, world * batch, world)


def config_row(run_dir: Path) -> dict:
    """What a run's config.yaml says of it, in the columns of a row ('?' where unknown)."""
    try:
        config = yaml.safe_load((run_dir / record.CONFIG_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    name = lambda section: (config.get(section) or {}).get("name", "?")  # noqa: E731
    return {"run_id": run_dir.name, "method": name("method"), "task": name("task"),
            "seed": str(config.get("seed", -1)), "batch_size": (config.get("train") or {}).get("batch_size", 0)}  # fmt: skip


def join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
