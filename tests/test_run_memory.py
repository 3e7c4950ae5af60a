"""The whole run measured: evaluation time and memory, the process's peak over the run, and feature extraction
batched at the training batch size by default."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench import record
from bench.cli import main
from tasks._vision import ImageTask
from tests.conftest import REPO


def values(out, metric):
    (rows,) = out.glob("*/rows.csv")
    return [float(r["value"]) for r in record.read_rows(rows) if r["metric"] == metric]


def sampled_peak_rss(proc: subprocess.Popen) -> int:
    """The largest VmRSS of a running process, sampled every few milliseconds until it exits."""
    peak = 0
    while proc.poll() is None:
        try:
            text = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            break
        rss = [int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:")]
        peak = max([peak, *(kib * 1024 for kib in rss)])
        time.sleep(0.005)
    return peak


def test_every_run_records_evaluation_time_and_memory_and_its_whole_peak(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--preset", "smoke", "--quiet", "--out",
                             str(tmp_path)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    sampled = sampled_peak_rss(proc)
    assert proc.wait() == 0, proc.stderr.read()
    (eval_s,), (eval_mem,), (run_peak,) = (values(tmp_path, m) for m in
                                           ("eval_s", "eval_peak_mem_bytes", "run_peak_mem_bytes"))  # fmt: skip
    (train_mem,) = values(tmp_path, "peak_mem_bytes")
    assert eval_s > 0 and eval_mem >= 0
    assert train_mem < run_peak  # the process holds torch and the data besides training's growth
    # the run's peak holds every resident size seen from outside while the run ran (the sampling also sees
    # the process start and its end, outside the run, which stay below it here)
    assert sampled <= run_peak * 1.05, (sampled, run_peak)


def test_feature_extraction_uses_the_training_batch_unless_told(tmp_path, monkeypatch):
    seen = []
    real = ImageTask.extract

    def spy(self, features, split, modules, device, batch_size):
        seen.append(batch_size)
        return real(self, features, split, modules, device, batch_size)

    monkeypatch.setattr(ImageTask, "extract", spy)
    assert main(["run", "--method", "random_init", "--preset", "smoke", "--quiet", "--out", str(tmp_path)]) == 0
    assert main(["run", "--method", "random_init", "--preset", "smoke", "--quiet", "--out", str(tmp_path),
                 "--set", "eval.feature_batch=5"]) == 0  # fmt: skip
    assert seen == [16, 16, 5, 5]  # the smoke preset's train.batch_size, then the setting
