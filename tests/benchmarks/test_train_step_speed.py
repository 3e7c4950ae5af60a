"""Benchmarks: one training step of every registered method on every embedded task, at the smoke preset.

Built the way ``bench.execute`` builds a run (resolve, task, encoder, method) and timed on one fixed batch;
methods without training (random_init, mfcc) and method/task pairs that do not fit are skipped with the
reason. Skipped by the default test run (pyproject's ``--benchmark-skip``).
"""

from __future__ import annotations

import pytest
import torch

from bench.config import ConfigError
from bench.registry import METHODS, TASKS
from bench.spec import RunSpec, resolve

ROUNDS, WARMUP = 10, 2
PAIRS = [(m, t) for m in METHODS.names() for t in TASKS.names() if not TASKS.get(t).needs_data]


def build(method: str, task: str):
    """(method object, batch) for one smoke-size step on the CPU."""
    resolved = resolve(RunSpec(method=method, task=task, preset="smoke"))
    if not resolved.method_cls.trains:
        pytest.skip(f"{method} has no training step")
    torch.manual_seed(0)
    device = torch.device("cpu")
    task_obj = resolved.task_cls(resolved.task, None, 0)
    encoder = task_obj.build_encoder().to(device)
    method_obj = resolved.method_cls(resolved.method, encoder, task_obj, device)
    split = task_obj.pretrain_split(resolved.method_cls.supervised)
    idx = torch.arange(resolved.train.batch_size) % task_obj.split_size(split)
    batch = task_obj.batch(split, idx, device, torch.Generator().manual_seed(0), augment=True)
    return method_obj, batch


@pytest.mark.parametrize(("method", "task"), PAIRS, ids=[f"{m}-{t}" for m, t in PAIRS])
def test_train_step(benchmark, method, task):
    try:
        method_obj, batch = build(method, task)
    except (ConfigError, ValueError, NotImplementedError) as err:
        pytest.skip(f"{method} does not run on {task}: {err}")
    benchmark.extra_info.update(method=method, task=task, batch_size=len(batch))
    losses = benchmark.pedantic(method_obj.train_step, args=(batch, 0), rounds=ROUNDS, warmup_rounds=WARMUP)
    assert all(torch.isfinite(torch.as_tensor(float(v))) for v in losses.values())
