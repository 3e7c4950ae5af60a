"""Synthetic results folders in the real schema (record.COLUMNS), for the tables and check tests.

``write_results(dir, runs)`` writes ``dir/results.csv`` as ``bench collect`` would, and each run's
``dir/<run_id>/config.yaml``; rows carry the variant (e.g. ``schedule=iterative``) as a run records it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench import record

VISION_METHODS = ("random_init", "supervised", "greedy_supervised", "cpc", "gim")
AUDIO_METHODS = (
    "random_init",
    "mfcc",
    "supervised",
    "greedy_supervised",
    "cpc",
    "gim",
    "gim_no_bptt",
    "gim_no_ar",
)


@dataclass
class Run:
    task: str
    method: str
    seed: int
    accs: dict[str, float]
    method_config: dict = field(default_factory=dict)
    device: str = "cpu"
    mem_bytes: float = 50e6
    samples_per_s: float = 100.0
    modules: int = 3
    epochs: int = 2
    status: str = record.STATUS_OK
    steps: int = 0
    """Points of each module's loss curves (rows with ``step`` set, one per step of its phase), as the
    trainer records them with ``train.log_every=1``; 0 = per-epoch rows only."""

    @property
    def run_id(self) -> str:
        text = f"{self.task}/{self.method}/{self.seed}/{sorted(self.method_config.items())}/{self.device}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def variant(self) -> str:
        """What ``bench.spec.variant_of`` records for these method settings."""
        from bench.spec import RunSpec, resolve, variant_of

        return variant_of(resolve(RunSpec(method=self.method, task=self.task, overrides={"method": self.method_config})))

    def config(self) -> dict:
        return {"method": {"name": self.method, **self.method_config}, "task": {"name": self.task},
                "seed": self.seed}  # fmt: skip


def base_row(run: Run) -> dict:
    return {
        "run_id": run.run_id, "experiment": "synthetic", "method": run.method, "variant": run.variant, "task": run.task,
        "seed": run.seed, "preset": "smoke", "status": run.status, "error": "", "method_version": "1",
        "task_version": "1", "git_sha": "abc123", "git_dirty": False, "device": run.device,
        "torch_version": "2.13.0", "config_hash": run.run_id + "f" * 52, "started_at": "2026-01-01T00:00:00",
        "wall_s": 1.5, "restarts": 0, "world_size": 1, "batch_size": 4, "host": "test",
    }  # fmt: skip


def loss_rows(run: Run, base: dict) -> list[dict]:
    iterative = run.method_config.get("schedule") == "iterative"
    rows = []
    for m in range(run.modules):
        epochs = range(m * run.epochs, (m + 1) * run.epochs) if iterative else range(run.epochs)
        for i, epoch in enumerate(epochs):
            loss = 2.0 - 0.1 * i - (0.15 if iterative else 0.05) * m + 0.01 * run.seed
            rows.append({**base, "metric": "train_loss", "module": m, "epoch": epoch, "value": repr(loss)})
            rows.append(
                {**base, "metric": "val_loss", "module": m, "epoch": epoch, "value": repr(loss + 0.1)}
            )
        start = m * run.steps if iterative else 0
        for k in range(run.steps + 1 if run.steps else 0):  # validated from the phase's start, trained from its first step
            loss = 2.3 - 0.5 * k / run.steps - 0.1 * m + 0.01 * run.seed
            point = {**base, "module": m, "epoch": epochs[0], "step": start + k}
            rows.append({**point, "metric": "val_loss", "value": repr(loss + 0.1)})
            if k:
                rows.append({**point, "metric": "train_loss", "value": repr(loss)})
    return rows


def run_rows(run: Run) -> list[dict]:
    base = base_row(run)
    if run.status != record.STATUS_OK:
        return [{**base, "error": "RuntimeError: boom", "metric": "status", "value": ""}]
    rows = loss_rows(run, base)
    for metric, value in run.accs.items():
        rows.append({**base, "metric": metric, "value": repr(value)})
        for m in range(run.modules - 1):  # per-module probes below the main representation
            rows.append({**base, "metric": metric, "module": m, "value": repr(value * (0.7 + 0.1 * m))})
    rows.append({**base, "metric": "peak_mem_bytes", "value": repr(run.mem_bytes)})
    rows.append({**base, "metric": "samples_per_s", "value": repr(run.samples_per_s)})
    rows.append({**base, "metric": "s_per_step", "value": repr(4 / run.samples_per_s)})
    rows.append({**base, "metric": "wall_s", "value": "1.5"})
    return rows


def write_results(out: Path, runs: list[Run], configs: bool = True) -> Path:
    rows = [row for run in runs for row in run_rows(run)]
    out.mkdir(parents=True, exist_ok=True)
    if configs:
        for run in runs:
            (out / run.run_id).mkdir(exist_ok=True)
            (out / run.run_id / record.CONFIG_FILE).write_text(yaml.safe_dump(run.config(), sort_keys=True))
    path = out / "results.csv"
    record.atomic_write_text(path, record.rows_to_csv(rows))
    return path


def paper_like_runs(seeds: int = 3, vision: str = "cifar10", audio: str = "fsdd") -> list[Run]:
    """Every method of Tables 1-4 (and Table 2's and Figure 3's GIM variants), with seeded noise."""
    rng = random.Random(0)
    runs = []
    for seed in range(seeds):
        for i, method in enumerate(VISION_METHODS):
            acc = 0.3 + 0.1 * i + rng.uniform(-0.01, 0.01)
            runs.append(Run(vision, method, seed, {"class_acc": acc}, mem_bytes=(1 + i) * 40e6))
        runs.append(Run(vision, "gim", seed, {"class_acc": 0.62}, {"train_modules": [0]}, mem_bytes=30e6))
        runs.append(Run(vision, "gim", seed, {"class_acc": 0.6}, {"schedule": "iterative"}))
        for i, method in enumerate(AUDIO_METHODS):
            content = {"fsdd": "digit_acc"}.get(audio, "phone_acc")
            accs = {content: 0.2 + 0.05 * i + rng.uniform(-0.01, 0.01), "speaker_acc": 0.5 + 0.05 * i}
            runs.append(Run(audio, method, seed, accs, modules=1 if method == "mfcc" else 3))
    return runs
