"""Executors: every run goes through submitit, in-process (debug), as a local subprocess, or on SLURM.

``RunJob`` is the picklable job; it is checkpointable: on SLURM's pre-timeout or preemption signal
submitit calls ``checkpoint()``, which requeues the same job, and the run resumes from its latest
checkpoint because ``execute`` always does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import submitit

from bench import record
from bench.execute import RunOutcome, execute
from bench.spec import RunSpec, resolve

log = logging.getLogger(__name__)
EXECUTORS = ("debug", "local")
SUBMITIT_DIR = "submitit"


@dataclass
class RunJob:
    """A picklable callable that executes one RunSpec in its run directory."""

    spec: RunSpec
    run_dir: str
    quiet: bool = True

    def __call__(self) -> RunOutcome:
        return execute(self.spec, Path(self.run_dir), quiet=self.quiet)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(RunJob(self.spec, self.run_dir, self.quiet))


def run_dir_for(spec: RunSpec, out: Path) -> Path:
    return out / resolve(spec).run_id


def finished(run_dir: Path) -> bool:
    return record.run_status(run_dir) == record.STATUS_OK


def make_executor(kind: str, folder: Path, timeout_min: int = 24 * 60) -> submitit.Executor:
    if kind == "debug":
        return submitit.DebugExecutor(folder=folder)
    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=timeout_min)
        return executor
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")


def run_one(spec: RunSpec, out: Path, executor: str = "debug", quiet: bool = False) -> RunOutcome:
    """Run ``spec`` under ``out/<run_id>``: report a finished run, resume an unfinished one."""
    run_dir = run_dir_for(spec, out)
    if finished(run_dir):
        rows = record.read_rows(run_dir / record.ROWS_FILE)
        return RunOutcome(run_dir.name, str(run_dir), record.STATUS_OK, rows=rows, reused=True)
    job_quiet = quiet or executor != "debug"  # a subprocess has no terminal for progress bars
    job = make_executor(executor, run_dir / SUBMITIT_DIR).submit(RunJob(spec, str(run_dir), job_quiet))
    if executor != "debug":
        log.info("submitted %s job %s; its log is %s", executor, job.job_id, job.paths.stdout)
    return job.result()
