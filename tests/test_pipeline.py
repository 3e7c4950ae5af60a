"""Module-parallel training (``train.stages``): exact, resumable, and it fails loudly.

Every multi-stage run here is compared with the single-process run of the same settings: per-module training
and validation losses at every point of their curves, and the probe accuracies, must be identical (one
thread per process in both, so that no kernel splits its work differently).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import record
from bench.cli import main
from bench.config import ConfigError, parse_overrides
from bench.execute import execute
from bench.pipeline import balanced, check_stages, predicted_speedup
from bench.spec import RunSpec, resolve
from tests.conftest import REPO

RESULTS = ("train_loss", "val_loss", "class_acc", "speaker_acc", "digit_acc", "phone_acc")
"""The rows that must be identical across placements (the rest are measurements)."""
SMOKE = {"train.threads": 1, "train.val_batches": 2}


def run(tmp: Path, method: str, task: str, stages: int, **sets) -> tuple[str, dict]:
    overrides = {**SMOKE, "train.stages": stages, **sets}
    spec = RunSpec(method=method, task=task, preset="smoke",
                   overrides=sets_of(overrides))  # fmt: skip
    out = tmp / f"{method}-{task}-{stages}"
    outcome = execute(spec, out / resolve(spec).run_id, quiet=True)
    return outcome.status, results(outcome.rows or [])


def sets_of(values: dict) -> dict:
    return parse_overrides([f"{k}={v}" for k, v in values.items()])


def results(rows: list[dict]) -> dict:
    return {(r["metric"], r["module"], r["epoch"], r["step"]): r["value"] for r in rows if r["metric"] in RESULTS}


@pytest.mark.parametrize(("method", "task", "placements"), [
    ("gim", "synthetic_textures", (2, 3)),
    ("gim", "synthetic_speech", (2, 3)),
    ("greedy_supervised", "synthetic_textures", (2,)),
    ("greedy_supervised", "synthetic_speech", (3,)),
])  # fmt: skip
def test_stages_reproduce_one_process_exactly(tmp_path, method, task, placements):
    status, single = run(tmp_path, method, task, 1)
    assert status == "ok"
    assert {k[0] for k in single} >= {"train_loss", "val_loss"} and any(k[0].endswith("_acc") for k in single)
    for stages in placements:
        status, staged = run(tmp_path, method, task, stages)
        assert status == "ok"
        assert staged == single, f"{stages} stages differ from one process"


def test_explicit_placement_and_its_rows(tmp_path):
    spec = RunSpec(method="gim", task="synthetic_textures", preset="smoke",
                   overrides=parse_overrides(["train.threads=1", "train.stages=2", "train.stage_modules=[[0, 1], [2]]"]))  # fmt: skip
    outcome = execute(spec, tmp_path / "run", quiet=True)
    assert outcome.status == "ok"
    rows = {(r["metric"], r["module"]): float(r["value"]) for r in outcome.rows if r["value"] != ""}
    assert [rows[("stage_of_module", str(m))] for m in range(3)] == [0.0, 0.0, 1.0]
    for s in (0, 1):  # each stage's memory, speed and idle time
        assert rows[(f"peak_mem_bytes_stage{s}", "")] > 0 and 0 <= rows[(f"idle_fraction_stage{s}", "")] < 1
    assert rows[("peak_mem_bytes", "")] == max(rows[(f"peak_mem_bytes_stage{s}", "")] for s in (0, 1))
    assert rows[("s_per_step", "")] == rows[("s_per_step_stage1", "")]
    for m in range(3):  # each module's step, part by part
        assert all(rows[(f"module_{part}_s", str(m))] > 0 for part in ("forward", "loss", "backward", "step"))
    assert {r["stages"] for r in outcome.rows} == {"2"}


def test_balanced_placement_minimises_the_slowest_stage():
    assert balanced([3.0, 1.0, 1.0, 1.0], 2) == [[0], [1, 2, 3]]
    assert balanced([1.0, 1.0, 1.0, 3.0], 2) == [[0, 1, 2], [3]]
    assert balanced([2.0, 2.0, 1.0, 1.0, 2.0], 3) == [[0], [1, 2], [3, 4]]
    assert balanced([1.0, 2.0], 2) == [[0], [1]]
    assert predicted_speedup([3.0, 1.0, 1.0, 1.0], [[0], [1, 2, 3]]) == 2.0


@pytest.mark.parametrize(("method", "sets", "says"), [
    ("supervised", {"train.stages": 2}, "local method"),
    ("gim", {"train.stages": 2, "method.schedule": "iterative"}, "one phase after another"),
    ("gim", {"train.stages": 4}, "at most 3 stages"),
    ("gim", {"train.stages": 2, "method.train_modules": "[0]"}, "at most 1 stages"),
    ("gim", {"train.stages": 2, "train.stage_modules": "[[0], [2, 1]]"}, "train.stage_modules"),
    ("gim", {"train.stages": 2, "train.stage_modules": "[[0, 1, 2]]"}, "train.stage_modules"),
    ("gim", {"train.stages": 2, "train.stage_modules": "[[0], [1]]"}, "train.stage_modules"),
])  # fmt: skip
def test_impossible_placements_are_refused_before_anything_runs(tmp_path, method, sets, says):
    spec = RunSpec(method=method, task="synthetic_textures", preset="smoke",
                   overrides=sets_of(sets))  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape(says)):
        execute(spec, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / record.ROWS_FILE).exists()


def test_check_stages_accepts_one_stage_of_any_method():
    from bench.execute import prepare

    prepared = prepare(resolve(RunSpec(method="supervised", task="synthetic_textures", preset="smoke")), {})
    check_stages(prepared.resolved.train, prepared.method)  # no error


# --- faults ----------------------------------------------------------------------------------------------
LONG = ["--set", "train.threads=1", "--set", "train.stages=2", "--set", "train.steps_per_epoch=40",
        "--set", "train.epochs=2", "--set", "train.checkpoint_every=4", "--set", "train.val_batches=1"]  # fmt: skip
ARGS = ["run", "--method", "gim", "--task", "synthetic_speech", "--preset", "smoke", "--quiet", *LONG]


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", *ARGS, "--out", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def stage_pids(out: Path, proc: subprocess.Popen, timeout: float = 120) -> list[int]:
    """The stages' pids once both have saved a checkpoint at step 8 or later (so that a resume has one)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        logs = list(out.glob(f"*/{record.LOG_FILE}"))
        steps = [[int(p.stem[4:]) for p in out.glob(f"*/checkpoints/stage{s}/step*.pt")] for s in (0, 1)]
        if logs and all(steps) and min(max(s) for s in steps) >= 8:
            found = re.search(r"started 2 stages: .* \(pids \[(\d+), (\d+)\]\)", logs[0].read_text())
            if found:
                return [int(found[1]), int(found[2])]
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.stderr.read()}"
        time.sleep(0.05)
    raise AssertionError("the stages did not checkpoint in time")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    assert main([*ARGS, "--out", str(out)]) == 0
    (rows,) = out.glob(f"*/{record.ROWS_FILE}")
    return results(record.read_rows(rows))


def test_a_killed_stage_stops_the_run_naming_it_and_the_same_command_resumes(tmp_path, uninterrupted):
    proc = start(tmp_path)
    pids = stage_pids(tmp_path, proc)
    killed_at = time.monotonic()
    subprocess.run(["kill", "-KILL", str(pids[1])], check=True)
    proc.communicate(timeout=60)
    assert time.monotonic() - killed_at < 60
    (rows_path,) = tmp_path.glob(f"*/{record.ROWS_FILE}")
    (row,) = record.read_rows(rows_path)
    assert row["status"] == "failed" and "stage 1" in row["error"] and "SIGKILL" in row["error"], row["error"]
    with pytest.raises(ProcessLookupError):  # the other stage was stopped too
        os.kill(pids[0], 0)

    assert main([*ARGS, "--out", str(tmp_path)]) == 0
    rows = record.read_rows(rows_path)
    assert rows[0]["status"] == "ok" and int(rows[0]["restarts"]) == 1
    assert results(rows) == uninterrupted
    assert "resuming from checkpoint at step" in next(tmp_path.glob("*/stages/stage1.log")).read_text()


def test_sigterm_checkpoints_every_stage_at_one_step_and_resumes(tmp_path, uninterrupted):
    proc = start(tmp_path)
    stage_pids(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    (rows_path,) = tmp_path.glob(f"*/{record.ROWS_FILE}")
    (row,) = record.read_rows(rows_path)
    assert row["status"] == "interrupted", row["error"]
    steps = [max(int(p.stem[4:]) for p in tmp_path.glob(f"*/checkpoints/stage{s}/step*.pt")) for s in (0, 1)]
    assert steps[0] == steps[1]  # one consistent step for every stage
    last = [torch.load(next(tmp_path.glob(f"*/checkpoints/stage{s}/step{steps[0]:09d}.pt")), weights_only=False)
            for s in (0, 1)]  # fmt: skip
    assert not any(p["position"]["done"] for p in last)

    assert main([*ARGS, "--out", str(tmp_path)]) == 0
    rows = record.read_rows(rows_path)
    assert rows[0]["status"] == "ok"
    assert results(rows) == uninterrupted


def test_describe_counts_flops_per_module_and_predicts_the_stages_speed_up():
    from bench import plugins
    from bench.describe import describe_task, module_flops

    plugins.load_plugins()
    resolved = resolve(RunSpec(method="gim", task="synthetic_speech", preset="smoke"))
    encoder = resolved.task_cls(resolved.task, None, 0).build_encoder()
    x = resolved.task_cls(resolved.task, None, 0).example_input(2)
    with torch.no_grad():
        flops = module_flops(encoder, x)
    conv = encoder.blocks[0].conv  # Conv1d 1 -> 8, kernel 10, stride 5: 2 x out x in x kernel per output step
    steps = (x.shape[-1] + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
    assert flops[0] == (2.0 * conv.out_channels * conv.in_channels * conv.kernel_size[0] * steps, False)
    gru = encoder.blocks[-1].gru  # 3 gates x (input + hidden) x hidden multiply-adds per time step
    with torch.no_grad():
        steps = encoder.forward_modules(x, detach=True)[-2].z.shape[-1]
    assert flops[-1] == (2.0 * 3 * (gru.input_size + gru.hidden_size) * gru.hidden_size * steps, False)

    costs = [f for f, _ in flops]
    text = describe_task(RunSpec(method="gim", task="synthetic_speech", preset="smoke",
                                 overrides=parse_overrides(["train.stages=2"])))  # fmt: skip
    groups = balanced(costs, 2)
    assert f"2 stages: {predicted_speedup(costs, groups):.2f}x   modules {groups}" in text
    assert "MFLOPs/sample" in text
