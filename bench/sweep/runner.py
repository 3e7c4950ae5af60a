"""Executors: every run goes through submitit, in-process (debug), as a local subprocess, or on SLURM.

``RunJob`` is the picklable job; it is checkpointable and carries no training state (that lives in the run
directory's checkpoint), so a restarted job resumes from the latest checkpoint because ``execute`` always
does. Two ways a job comes back:

- SLURM requeues it (``scontrol requeue``, preemption in requeue mode): SLURM sends SIGTERM, the trainer
  saves a checkpoint and stops, the job exits, and SLURM starts it again.
- submitit's signal before the time limit (SIGUSR2): the trainer saves and stops, then ``RunJob`` hands
  the signal on to submitit's handler, which calls ``checkpoint()`` and requeues the job itself.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path

import submitit

from bench import plugins, record
from bench.config import ConfigError
from bench.data import DataError
from bench.execute import RunBusy, RunOutcome, execute
from bench.spec import RunSpec, resolve
from bench.sweep import slurm

log = logging.getLogger(__name__)
EXECUTORS = ("slurm", "local", "debug")
SUBMITIT_DIR = "submitit"
BAD_INPUT, BUSY = "bad input", "busy"
"""Outcomes of runs that did not start (nothing written but run.log): bad config or data; folder in use."""


@dataclass
class RunJob:
    """A picklable callable that executes one RunSpec in its run directory."""

    spec: RunSpec
    run_dir: str
    quiet: bool = True

    def __call__(self) -> RunOutcome:
        plugins.load_plugins()  # a fresh job process (local, SLURM) has not imported the plugins
        run_dir = Path(self.run_dir)
        if finished(run_dir):  # requeued after it had already written its rows: nothing to redo
            return finished_outcome(run_dir)
        try:
            outcome = execute(self.spec, run_dir, quiet=self.quiet)
        except (ConfigError, DataError) as err:
            return RunOutcome(run_dir.name, str(run_dir), BAD_INPUT, str(err))
        except RunBusy as err:
            return RunOutcome(run_dir.name, str(run_dir), BUSY, str(err))
        if stopped_by_timeout_signal(outcome):
            # The trainer took submitit's SIGUSR2 to save a checkpoint; now let submitit's own handler
            # (restored when the run ended) see it: it calls checkpoint() and requeues this job.
            signal.raise_signal(signal.SIGUSR2)
        return outcome

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(RunJob(self.spec, self.run_dir, self.quiet))


def stopped_by_timeout_signal(outcome: RunOutcome) -> bool:
    """The run stopped on submitit's pre-timeout/preemption signal inside a submitit job process."""
    in_job = os.environ.get("SUBMITIT_EXECUTOR") in ("slurm", "local")
    return (
        in_job
        and outcome.status == record.STATUS_INTERRUPTED
        and outcome.error.startswith("stopped by SIGUSR2")
    )


def finished_outcome(run_dir: Path) -> RunOutcome:
    rows = record.read_rows(run_dir / record.ROWS_FILE)
    return RunOutcome(run_dir.name, str(run_dir), record.STATUS_OK, rows=rows, reused=True)


def run_dir_for(spec: RunSpec, out: Path) -> Path:
    return out / resolve(spec).run_id


def finished(run_dir: Path) -> bool:
    return record.run_status(run_dir) == record.STATUS_OK


def make_executor(kind: str, folder: Path, res: slurm.Resources, name: str = "bench", snapshot: Path | None = None,
                  jobs_at_once: int = 1) -> submitit.Executor:  # fmt: skip
    """The one executor factory (``bench run`` and ``bench sweep``): job logs under ``folder``; local and SLURM
    jobs start in ``snapshot`` when given, with ``res``'s threads, time limit and setup lines."""
    if kind == "debug":
        return submitit.DebugExecutor(folder=folder)
    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=res.max_num_timeout)
        setup = [f"cd {shlex.quote(str(snapshot))}"] if snapshot else []
        setup += [slurm.threads_line(res), *res.setup]
        executor.update_parameters(timeout_min=res.timeout_min * jobs_at_once, signal_delay_s=res.signal_delay_s,
                                   setup=setup)  # fmt: skip
        return executor
    if kind == "slurm":
        ok, why = slurm.available()
        if not ok:
            raise RuntimeError(f"cannot submit to SLURM: {why}")
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=res.max_num_timeout)
        executor.update_parameters(**slurm.executor_parameters(res, name, str(snapshot) if snapshot else None))
        return executor
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")


def run_one(spec: RunSpec, out: Path, executor: str = "debug", quiet: bool = False) -> RunOutcome:
    """Run ``spec`` under ``out/<run_id>``: report a finished run, resume an unfinished one."""
    run_dir = run_dir_for(spec, out)
    if finished(run_dir):
        return finished_outcome(run_dir)
    job_quiet = quiet or executor != "debug"  # a subprocess has no terminal for progress bars
    # one run: every core of this machine (or of the SLURM job), a day before the job requeues itself
    res = slurm.Resources(cpus_per_task=os.cpu_count() or 1, timeout_min=24 * 60)
    job = make_executor(executor, run_dir / SUBMITIT_DIR, res).submit(RunJob(spec, str(run_dir), job_quiet))
    if executor != "debug":
        log.info("submitted %s job %s; its log is %s", executor, job.job_id, job.paths.stdout)
    return job.result()
