"""A run killed half-way resumes from its latest checkpoint and ends exactly like an uninterrupted run."""

import signal
import subprocess
import sys
import time

import pytest
import torch

from bench import record
from tests.conftest import REPO
from tests.test_curves import event_points, row_points

ARGS = ["run", "--preset", "smoke", "--quiet", "--set", "train.steps_per_epoch=24", "--set", "train.epochs=2",
        "--set", "train.checkpoint_every=3"]  # fmt: skip


def start(out):
    return subprocess.Popen([sys.executable, "-m", "bench", *ARGS, "--out", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for_checkpoint(out, proc, min_step=6, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for path in out.glob("*/checkpoints/last.pt"):
            try:
                step = torch.load(path, weights_only=False)["position"]["global_step"]
            except Exception:
                continue  # being replaced right now
            if step >= min_step:
                return step
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def values(out):
    (rows_path,) = out.glob("*/rows.csv")
    rows = record.read_rows(rows_path)
    keep = {(r["metric"], r["module"], r["epoch"], r["step"]): r["value"] for r in rows
            if r["metric"] in ("class_acc", "train_loss", "val_loss")}  # fmt: skip
    return keep, rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    result = subprocess.run([sys.executable, "-m", "bench", *ARGS, "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return values(out)[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_killed_run_resumes_to_the_same_result(tmp_path, uninterrupted, sig):
    proc = start(tmp_path)
    step = wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    if sig != signal.SIGKILL:  # a handled stop records why it stopped
        assert record.run_status(run_dir) == "interrupted"
    resumed = subprocess.run([sys.executable, "-m", "bench", *ARGS, "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from a checkpoint 1 time(s)" in resumed.stdout
    log = (run_dir / "run.log").read_text()
    resumed_step = int(log.split("resuming from checkpoint at step")[1].split()[0])
    assert resumed_step >= step > 0  # it did not start over
    got, rows = values(tmp_path)
    assert got == uninterrupted
    assert {r["restarts"] for r in rows} == {"1"}
    # TensorBoard shows each point once, as recorded: the resumed segment hides what the first wrote later on
    assert event_points(run_dir, "train_loss/module_0") == row_points(rows, "train_loss", "0")
