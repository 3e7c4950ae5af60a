"""SLURM job resources from the experiment file, and what the queue says about submitted jobs.

Resources merge, most general first: the preset's defaults below, the file's ``slurm:`` section, the task's
``slurm:`` section. ``timeout_min`` is a time limit, not a budget: a run that reaches it saves a checkpoint on
submitit's signal (``signal_delay_s`` before the limit), requeues itself and resumes, up to
``max_num_timeout`` times.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass

from bench import config as cfg

log = logging.getLogger(__name__)

ACTIVE_STATES = (
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
    "SIGNALING", "STAGE_OUT", "SUSPENDED", "PREEMPTED",
)  # fmt: skip
RUNNING_STATES = ("RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT")


@dataclass(frozen=True)
class Resources:
    """What each job of a sweep asks SLURM for (section ``slurm`` of an experiment file)."""

    partition: str | None = None
    """SLURM partition (None: the cluster's default)."""
    gpus_per_node: int = 0
    """GPUs per job. A run uses one device: data-parallel training is not implemented, ask for 1."""
    cpus_per_task: int = 1
    mem_gb: float = 4.0
    timeout_min: int = 60
    """Time limit of one job; longer runs requeue themselves at the limit and resume."""
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    """Node features, e.g. "a100" or "volta32gb"."""
    array_parallelism: int = 32
    """At most this many runs of the array at once (local executor: processes at once)."""
    signal_delay_s: int = 120
    """Seconds before the time limit at which the run is told to checkpoint and requeue."""
    max_num_timeout: int = 20
    """How many times a run may requeue itself at the time limit."""
    setup: tuple[str, ...] = ()
    """Shell lines run before the job, e.g. ["module load cuda/12.1"]."""


PRESET_DEFAULTS: dict[str, dict] = {
    "smoke": {"cpus_per_task": 1, "mem_gb": 2, "timeout_min": 20},
    "small": {"cpus_per_task": 2, "mem_gb": 8, "timeout_min": 240},
    "memory": {"gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 16, "timeout_min": 60},
    "paper": {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64, "timeout_min": 24 * 60},
}


def resources(preset: str | None, *sections: dict) -> Resources:
    """The resources for ``preset``, overridden by each of ``sections`` in turn; unknown keys are errors."""
    merged = dict(PRESET_DEFAULTS.get(preset or "", {}))
    for section in sections:
        merged = cfg.merge(merged, section)
    return cfg.build(Resources, merged, "slurm")


def executor_parameters(res: Resources, name: str, workdir: str | None) -> dict:
    """``submitit.AutoExecutor.update_parameters`` keywords for ``res``."""
    params = {
        "name": name,
        "timeout_min": res.timeout_min,
        "mem_gb": res.mem_gb,
        "cpus_per_task": res.cpus_per_task,
        "gpus_per_node": res.gpus_per_node,
        "slurm_array_parallelism": res.array_parallelism,
        "slurm_signal_delay_s": res.signal_delay_s,
        "slurm_setup": [threads_line(res), *res.setup],
    }
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(res, key) is not None:
            params[f"slurm_{key}"] = getattr(res, key)
    if workdir is not None:  # queued jobs start in the code snapshot (and so import it)
        params["slurm_additional_parameters"] = {"chdir": workdir}
    return params


def threads_line(res: Resources) -> str:
    """CPU threads per run = CPUs asked for (torch's default is every core of the node: oversubscribed)."""
    return f"export OMP_NUM_THREADS={res.cpus_per_task}"


def available() -> tuple[bool, str]:
    """Whether a SLURM controller answers here, and if not, why."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False, "sinfo/sbatch are not installed (run `bash .ci/slurm-up.sh` for a local cluster)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        return False, f"sinfo failed: {err}"
    if out.returncode != 0:
        return False, f"sinfo does not answer: {out.stderr.strip() or out.returncode}"
    if not out.stdout.strip():
        return False, "sinfo lists no nodes"
    return True, ""


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """``{job id: SLURM state}`` for the jobs still known to the controller; None when squeue fails.

    Array tasks are listed one per line (``123_4``); a job that has left the queue is absent.
    """
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("squeue failed: %s", err)
        return None
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # every job has left the queue
            return {}
        log.warning("squeue failed: %s", out.stderr.strip())
        return None
    states = {}
    for line in out.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        states[job] = state
    return states
