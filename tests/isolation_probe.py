"""Picklable stand-ins for RunJob, importable by the child process of an isolated run (bench.sweep.isolate)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench import record
from bench.execute import RunOutcome


@dataclass
class PidJob:
    """Reports the process it ran in (as the outcome's error text); ``exit_code`` ends that process abruptly."""

    run_dir: str
    exit_code: int | None = None

    def __call__(self) -> RunOutcome:
        if self.exit_code is not None:
            os._exit(self.exit_code)
        return RunOutcome(Path(self.run_dir).name, self.run_dir, record.STATUS_OK, error=str(os.getpid()))
