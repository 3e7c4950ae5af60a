"""Loss curves: per-module training loss every ``train.log_every`` steps and validation loss at its own cadence,
as rows with ``step`` set and as TensorBoard event files that TensorBoard's own reader reads back."""

import math

import numpy as np
import pytest

from bench import record
from bench.cli import main

ARGS = ["run", "--preset", "smoke", "--quiet", "--set", "train.steps_per_epoch=45", "--set", "train.val_batches=1"]


def run(out, *extra):
    assert main([*ARGS, *extra, "--out", str(out)]) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir, record.read_rows(run_dir / record.ROWS_FILE)


def row_points(rows, metric, module):
    return [(int(r["step"]), float(np.float32(float(r["value"])))) for r in rows
            if r["metric"] == metric and r["module"] == module and r["step"]]  # fmt: skip


def event_points(run_dir, tag):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    reader = accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    reader.Reload()
    return [(e.step, e.value) for e in reader.Scalars(tag)]


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory):
    return run(tmp_path_factory.mktemp("curves"))


def test_default_cadence_gives_every_module_at_least_20_points_and_windows_average_to_the_epoch(curve_run):
    _, rows = curve_run
    modules = sorted({r["module"] for r in rows if r["metric"] == "train_loss"})
    assert len(modules) == 3
    for m in modules:
        train = [r for r in rows if r["metric"] == "train_loss" and r["module"] == m]
        points = [r for r in train if r["step"]]
        # 45 steps, log_every = 45 // 20 = 2: steps 2, 4, ..., 44 and the phase's last step 45
        assert [int(r["step"]) for r in points] == list(range(2, 45, 2)) + [45]
        windows = [2] * 22 + [1]
        (epoch_row,) = [r for r in train if not r["step"]]
        weighted = sum(n * float(r["value"]) for n, r in zip(windows, points, strict=True)) / 45
        assert math.isclose(weighted, float(epoch_row["value"]), rel_tol=1e-9)
        val = [int(r["step"]) for r in rows if r["metric"] == "val_loss" and r["module"] == m and r["step"]]
        assert val == [0, *range(2, 45, 2), 45]  # from the phase's start (the untrained module)


def test_curve_points_are_not_table_cells(curve_run):
    from bench.report.aggregate import ok_scalar_rows

    _, rows = curve_run
    assert not [r for r in ok_scalar_rows(rows) if r["metric"].endswith("_loss")]


def test_tensorboard_scalars_equal_the_rows(curve_run):
    run_dir, rows = curve_run
    for m in ("0", "1", "2"):
        for metric in ("train_loss", "val_loss"):
            points = row_points(rows, metric, m)
            assert len(points) >= 20
            assert event_points(run_dir, f"{metric}/module_{m}") == points
    for m in ("0", "1", "2"):  # one Adam per module (a per-module learner)
        lr = event_points(run_dir, f"lr/module_{m}")
        assert len(lr) == 23 and all(v > 0 for _, v in lr)
    assert all(v > 0 for _, v in event_points(run_dir, "samples_per_s"))


def test_cadences_are_settings_and_event_files_can_be_turned_off(tmp_path):
    run_dir, rows = run(tmp_path, "--set", "train.log_every=10", "--set", "train.val_every=15",
                        "--set", "train.tensorboard=false")  # fmt: skip
    assert [s for s, _ in row_points(rows, "train_loss", "0")] == [10, 20, 30, 40, 45]
    assert [s for s, _ in row_points(rows, "val_loss", "0")] == [0, 15, 30, 45]
    assert not (run_dir / "tensorboard").exists()


def test_iterative_phases_start_their_curves_at_the_phase_start(tmp_path):
    _, rows = run(tmp_path, "--set", "method.schedule=iterative", "--set", "train.steps_per_epoch=4")
    for m in range(3):  # module m trains in phase m: steps 4m+1 .. 4m+4, validated from step 4m
        assert [s for s, _ in row_points(rows, "train_loss", str(m))] == [4 * m + 1, 4 * m + 2, 4 * m + 3, 4 * m + 4]
        assert [s for s, _ in row_points(rows, "val_loss", str(m))] == [4 * m + k for k in range(5)]
