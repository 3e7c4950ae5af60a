"""Against a real SLURM controller (start one here with `bash .ci/slurm-up.sh`).

A small sweep goes out through the slurm executor as one job array; its GIM runs train on two stage
processes each (``train.stages=2``), in the job. One running job is requeued by SLURM
(`scontrol requeue`: SIGTERM, the run saves a checkpoint, SLURM starts the job again); another gets
submitit's pre-timeout signal (SIGUSR2: the run saves, submitit requeues the job itself). Every run must
finish with the rows of the same runs executed in this process, and `bench status` must show the restarts.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import record
from bench.cli import main
from bench.sweep import slurm
from bench.sweep import state as sweep_state
from tests.conftest import REPO

UP, WHY = slurm.available()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not UP, reason=f"needs a running SLURM controller: {WHY}"),
]

EXPERIMENT = """\
experiment: slurm-requeue
preset: smoke
seeds: [0, 1]
overrides:
  train: {threads: 1, epochs: 8, steps_per_epoch: 10, checkpoint_every: 5}
methods: [gim, random_init]
tasks:
  synthetic_textures:
    methods: {gim: {train: {stages: 2}}, random_init: {}}  # gim: two stage processes in one job
slurm: {cpus_per_task: 2, mem_gb: 3, timeout_min: 10}
"""
TIMING = {"wall_s", "samples_per_s", "s_per_step", "peak_mem_bytes", "eval_s", "eval_peak_mem_bytes",
          "run_peak_mem_bytes", "profile_module_s", "stage_of_module"}  # measured, not computed
TIMED = ("module_", "idle_fraction", "peak_mem_bytes_stage", "samples_per_s_stage", "s_per_step_stage")


def bench(*args: str | Path) -> subprocess.CompletedProcess:
    """`bench` as a separate process: the way a second shell would use it."""
    cmd = [sys.executable, "-m", "bench", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def wait_for(what: str, check, timeout: float = 240, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := check():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def training(out: Path, run: sweep_state.PlannedRun) -> bool:
    """The run has saved its first checkpoint (every stage, for a multi-stage run) and is still training (so
    a signal lands mid-training)."""
    run_dir = out / run.run_id
    saved = (run_dir / "checkpoints" / "last.pt").is_file() or all(
        any((run_dir / "checkpoints" / f"stage{s}").glob("step*.pt")) for s in (0, 1))
    return saved and not (run_dir / record.ROWS_FILE).exists()


def pending(job_id: str) -> bool:
    state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
    return state.strip() == "PENDING"


def release(job_id: str) -> None:
    """SLURM holds a requeued job back for a couple of minutes (BeginTime); let it start now."""
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def signal_job(job_id: str, name: str) -> None:
    """What SLURM sends ``signal_delay_s`` before the time limit. The job requeues itself at once, and
    scancel, finding the job in transition, retries for minutes: stop it once the signal is out."""
    try:
        subprocess.run(["scancel", f"--signal={name}", job_id], capture_output=True, timeout=5)
    except subprocess.TimeoutExpired:
        pass


def metric_values(out: Path) -> dict:
    rows = record.read_rows(record.collect(out))
    return {
        (r["run_id"], r["metric"], r["module"], r["epoch"]): r["value"]
        for r in rows
        if r["metric"] not in TIMING and not r["metric"].startswith(TIMED)
    }


def test_requeued_sweep_ends_like_local_runs(tmp_path):
    path, out = tmp_path / "experiment.yaml", tmp_path / "slurm"
    path.write_text(textwrap.dedent(EXPERIMENT))
    submitted = bench("sweep", path, "--executor", "slurm", "--out", out, "--no-wait")
    assert submitted.returncode == 0, submitted.stderr
    (submission,) = sweep_state.load_all(out)
    runs = {(r.method, r.seed): r for r in submission.runs}
    assert len(runs) == 4 and len({r.job_id.split("_")[0] for r in runs.values()}) == 1  # one job array
    for run in runs.values():  # each run folder links to its job's log folder
        assert (out / run.run_id / "job").resolve() == Path(run.log_dir).resolve()
    by_term, by_usr2 = runs[("gim", 0)], runs[("gim", 1)]
    try:
        wait_for("gim seed 0 to train", lambda: training(out, by_term))
        subprocess.run(["scontrol", "requeue", by_term.job_id], check=True)
        wait_for("gim seed 1 to train", lambda: training(out, by_usr2))
        signal_job(by_usr2.job_id, "USR2")
        for run in (by_term, by_usr2):
            wait_for(f"job {run.job_id} to be requeued", lambda run=run: pending(run.job_id), every=1)
            (state,) = [s for s in sweep_state.run_states(out) if s.run.run_id == run.run_id]
            assert state.state == "queued" and "requeued" in state.note
            release(run.job_id)
        states = wait_for("every run to end", lambda: finished_states(out), timeout=420, every=2)
    finally:
        subprocess.run(["scancel", *[r.job_id for r in runs.values()]], capture_output=True)
    assert {s.run.run_id: s.state for s in states} == {r.run_id: "done" for r in runs.values()}

    status = bench("status", out)
    assert status.returncode == 0, status.stderr
    restarts = {line.split()[4]: line.split()[6] for line in status.stdout.splitlines()[1:-1]}
    assert restarts == {r.run_id: "1" if r in (by_term, by_usr2) else "0" for r in runs.values()}
    for run in (by_term, by_usr2):  # it resumed, it did not start over
        assert "resuming from checkpoint at step" in (out / run.run_id / record.LOG_FILE).read_text()

    local = tmp_path / "local"
    assert main(["sweep", str(path), "--executor", "debug", "--out", str(local), "--quiet"]) == 0
    assert metric_values(out) == metric_values(local)

    again = bench("sweep", path, "--executor", "slurm", "--out", out, "--no-wait")
    assert again.returncode == 0 and "nothing to submit" in again.stderr
    assert len(sweep_state.load_all(out)) == 1


def finished_states(out: Path) -> list | None:
    states = sweep_state.run_states(out)
    return None if any(s.state in sweep_state.ACTIVE for s in states) else states
