"""Submitting a sweep's runs: one job array on SLURM, a few job processes locally, in-process for debug.

Every run is a ``RunJob`` (checkpointable; resumes from its run folder). On SLURM the runs go out as one
job array (per distinct set of resources), each array task running one run, at most
``array_parallelism`` at a time. The local executor has no queue, so runs are dealt round-robin into
``RunChain`` jobs, as many as may run at once, each running its runs one after another, each run in a
process of its own.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import submitit

from bench import record
from bench.execute import RunOutcome
from bench.sweep import slurm
from bench.sweep.isolate import IsolatedRun
from bench.sweep.runner import RunJob, finished, finished_outcome, make_executor
from bench.sweep.state import LOG_DIR, STATE_DIR, PlannedRun

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class RunChain:
    """Several runs one after another in one job (local executor); checkpointable like RunJob.

    With ``isolate`` (the default) each run has a process of its own (``bench.sweep.isolate``), so its memory and
    one-time allocations are its own and runs compare as if each were alone; the chain hands signals on.
    """

    jobs: list[RunJob]
    isolate: bool = True

    def __call__(self) -> list:
        # SIGTERM or SIGINT stops the chain: during training the run's own handler checkpoints and ends it
        # (status interrupted); outside training (data loading, the probes) it is noted here, the run ends
        # normally, and no further run starts. SIGUSR2 (time limit) requeues the chain through submitit: an
        # in-process run hands it on itself (RunJob); an isolated run is stopped first, then the chain does.
        stopped: list[int] = []
        running: list[IsolatedRun] = []

        def on_signal(signum: int, frame: object) -> None:
            stopped.append(signum)
            for run in running:
                run.signal(signum)

        handled = (*STOP_SIGNALS, signal.SIGUSR2) if self.isolate else STOP_SIGNALS
        previous = {sig: signal.signal(sig, on_signal) for sig in handled}
        outcomes = []
        try:
            for job in self.jobs:  # a finished run returns at once, so a restart skips it
                outcomes.append(self.run(job, running))
                if outcomes[-1].status == record.STATUS_INTERRUPTED or stopped:
                    log.warning("stopped by a signal after run %s; the %d runs after it in this job wait for "
                                "the next `bench sweep`", outcomes[-1].run_id, len(self.jobs) - len(outcomes))  # fmt: skip
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if signal.SIGUSR2 in stopped:
            signal.raise_signal(signal.SIGUSR2)  # submitit's handler, restored above: requeue this chain
        return outcomes

    def run(self, job: RunJob, running: list[IsolatedRun]) -> RunOutcome:
        if not self.isolate:
            return job()
        run_dir = Path(job.run_dir)
        if finished(run_dir):
            return finished_outcome(run_dir)
        running.append(IsolatedRun(job, run_dir, run_dir.name))
        try:
            return running[0].wait()
        finally:
            running.clear()

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(RunChain(self.jobs, self.isolate))


def log_folder(out: Path) -> Path:
    """Job logs go to ``OUT/.sweep/logs/<job id>/``; each run folder links to its job's."""
    return out / STATE_DIR / LOG_DIR / "%j"


def submit(kind: str, out: Path, jobs: list[RunJob], runs: list[PlannedRun], res: slurm.Resources, name: str,
           snapshot: Path | None) -> list[submitit.Job]:  # fmt: skip
    """Submit ``jobs`` (one per run in ``runs``) and fill in each run's job id and log folder."""
    if kind == "local":
        return submit_local(out, jobs, runs, res, name, snapshot)
    executor = make_executor(kind, log_folder(out), res, name, snapshot)
    with executor.batch():  # one job array
        handles = [executor.submit(job) for job in jobs]
    for run, handle in zip(runs, handles, strict=True):
        link_job(out, run, handle)
    return handles


def submit_local(out: Path, jobs: list[RunJob], runs: list[PlannedRun], res: slurm.Resources, name: str,
                 snapshot: Path | None) -> list[submitit.Job]:  # fmt: skip
    at_once = min(len(jobs), res.array_parallelism, max(1, (os.cpu_count() or 1) // res.cpus_per_task))
    chains = [list(range(k, len(jobs), at_once)) for k in range(at_once)]
    longest = max(len(c) for c in chains)
    executor = make_executor("local", log_folder(out), res, name, snapshot, jobs_at_once=longest)
    handles = []
    with output_to(out / STATE_DIR / LOG_DIR / "local-controllers.log"), new_sessions():
        for members in chains:
            handles.append(executor.submit(RunChain([jobs[i] for i in members])))
    for members, handle in zip(chains, handles, strict=True):
        for i in members:
            link_job(out, runs[i], handle)
    return handles


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr at ``path`` while local job controllers are started.

    The controllers inherit them and outlive ``bench sweep --no-wait``; inheriting a pipe (a CI step, a
    ``| tee``) would keep the reader waiting until every job had ended.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


@contextlib.contextmanager
def new_sessions() -> Iterator[None]:
    """Start the local job controllers in sessions of their own while submitting: a Ctrl-C at the terminal
    (SIGINT to the foreground process group) then stops ``bench sweep``'s waiting, not the jobs, which go on
    as ``bench status`` shows (stop them with ``kill``, which the jobs handle by checkpointing)."""
    popen = subprocess.Popen
    subprocess.Popen = functools.partial(popen, start_new_session=True)  # type: ignore[misc]
    try:
        yield
    finally:
        subprocess.Popen = popen  # type: ignore[misc]


def link_job(out: Path, run: PlannedRun, handle: submitit.Job) -> None:
    """Record the job in ``run`` and link ``OUT/<run_id>/job`` to the job's log folder."""
    run.job_id = str(handle.job_id)
    run.log_dir = str(handle.paths.folder)
    if not handle.paths.folder.is_dir():  # the debug executor writes no job logs
        return
    run_dir = out / run.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    link = run_dir / "job"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(handle.paths.folder, run_dir))
