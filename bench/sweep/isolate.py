"""One run in a fresh process: ``python -m bench.sweep.isolate JOB OUTCOME`` (pickles), for local job chains.

A local job runs several runs one after another. In one process, the first run's peak memory would include
torch's one-time allocations (kernels, caches) and every later run would start from a heap the earlier ones
shaped, so memory could not be compared across runs. Each run therefore gets its own process, started from
the same code (this package's folder leads ``PYTHONPATH``) and in its own session, so a terminal's Ctrl-C
reaches only the parent, which hands signals on once (``IsolatedRun.signal``).

The child ignores SIGTERM, SIGINT and SIGUSR2 except while training, where the trainer's handler saves a
checkpoint and stops the run; a signal outside training lets the run finish, as in-process runs did.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import bench
from bench import record
from bench.execute import RunOutcome

HANDED_ON = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class IsolatedRun:
    """Start ``job`` (a picklable callable returning a RunOutcome) in a child process; ``wait`` for it."""

    def __init__(self, job: Callable[[], RunOutcome], folder: Path, run_id: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.run_id, self.folder = run_id, folder
        self.job_file, self.outcome_file = folder / "isolated_job.pkl", folder / "isolated_outcome.pkl"
        self.outcome_file.unlink(missing_ok=True)
        record.atomic_write_bytes(self.job_file, pickle.dumps(job))
        code_root = str(Path(bench.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [code_root, os.environ.get("PYTHONPATH")])))
        # The chain, not the child, hands submitit's time-limit signal on to submitit (runner.RunJob).
        env.pop("SUBMITIT_EXECUTOR", None)
        cmd = [sys.executable, "-m", "bench.sweep.isolate", str(self.job_file), str(self.outcome_file)]
        self.process = subprocess.Popen(cmd, env=env, start_new_session=True)

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self) -> RunOutcome:
        code = self.process.wait()
        try:
            if code == 0 and self.outcome_file.is_file():
                return pickle.loads(self.outcome_file.read_bytes())
            error = f"the run's process ended with exit code {code} before reporting an outcome"
            return RunOutcome(self.run_id, str(self.folder), record.STATUS_FAILED, error)
        finally:
            self.job_file.unlink(missing_ok=True)
            self.outcome_file.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    for sig in HANDED_ON:
        signal.signal(sig, signal.SIG_IGN)
    job_file, outcome_file = (Path(a) for a in argv)
    job = pickle.loads(job_file.read_bytes())
    record.atomic_write_bytes(outcome_file, pickle.dumps(job()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
