"""Contract tests for free: a method or task file and its import line get every test here, no other edit.

Every registered method, on every embedded task of a modality it declares: two training steps change its
parameters (unless it declares it does not train) with finite losses; a gradient-isolated method passes no
gradient across a module boundary; its state saves and reloads into a fresh copy that continues exactly;
it evaluates. Every task builds its encoder with the shapes of its modality and evaluates on fixture data.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.interfaces import Method, ModularEncoder, Task
from bench.registry import METHODS, TASKS
from bench.spec import RunSpec, resolve
from bench.trainer import TrainState, load_checkpoint, save_checkpoint
from tests.fixtures_data import FIXTURES

CPU = torch.device("cpu")


def applies(method: str, task: str) -> bool:
    return TASKS.get(task).modality in METHODS.get(method).modalities


EMBEDDED = [t for t in TASKS.names() if not TASKS.get(t).needs_data]
PAIRS = [(m, t) for m in METHODS.names() for t in EMBEDDED if applies(m, t)]


def build(method: str, task: str, data_root=None, overrides=None):
    r = resolve(RunSpec(method=method, task=task, preset="smoke", overrides=overrides or {},
                        data_root=str(data_root) if data_root else None))  # fmt: skip
    torch.manual_seed(0)
    task_obj = r.task_cls(r.task, data_root, 0)
    encoder = task_obj.build_encoder()
    return r, task_obj, encoder, r.method_cls(r.method, encoder, task_obj, CPU)


def batch(task: Task, method: Method, step: int):
    split = task.pretrain_split(method.supervised)
    idx = (torch.arange(4) + 4 * step) % task.split_size(split)
    b = task.batch(split, idx, CPU, torch.Generator().manual_seed(step), augment=True)
    b.index = idx
    return b


def params(encoder: ModularEncoder) -> list[torch.Tensor]:
    return [p.detach().clone() for p in encoder.parameters()]


def inputs_with_grad(encoder: ModularEncoder) -> tuple[list[int], list]:
    """Hooks recording which modules (after the first) receive an input that carries a gradient path."""
    seen: list[int] = []

    def hook(m):
        return lambda _module, args: seen.extend(m for a in args if torch.is_tensor(a) and a.requires_grad)

    return seen, [encoder.blocks[m].register_forward_pre_hook(hook(m)) for m in range(1, len(encoder.blocks))]


@pytest.mark.parametrize("method,task", PAIRS)
def test_method_trains_isolates_reloads_and_evaluates(method, task, tmp_path):
    r, task_obj, encoder, m = build(method, task)
    m.work_dir = tmp_path
    cls = METHODS.get(method)
    if cls.trains:
        before = params(encoder)
        seen, hooks = inputs_with_grad(encoder)
        for step in range(2):
            torch.manual_seed(step)
            losses = m.train_step(batch(task_obj, m, step), phase=0)
            assert losses and all(math.isfinite(float(v)) for v in losses.values()), losses
        for h in hooks:
            h.remove()
        assert any(not torch.equal(a, b) for a, b in zip(before, params(encoder), strict=True)), "nothing trained"
        if cls.gradient_isolated:
            assert not seen, f"modules {sorted(set(seen))} receive inputs that carry gradients"
        # saved after two steps, reloaded into a fresh copy: both take the same third step
        path = tmp_path / "checkpoints" / "last.pt"
        save_checkpoint(path, encoder, m, TrainState())
        _, _, encoder2, m2 = build(method, task)
        m2.work_dir = tmp_path
        assert load_checkpoint(path, encoder2, m2) is not None
        third = batch(task_obj, m, 2)
        torch.manual_seed(2)
        a = {k: float(v) for k, v in m.train_step(third, phase=0).items()}
        torch.manual_seed(2)
        b = {k: float(v) for k, v in m2.train_step(third, phase=0).items()}
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    encoder.eval()
    n = len(encoder.blocks)
    metrics = task_obj.evaluate(m.features, r.eval, list(range(n)), CPU, 0)
    accs = [x for x in metrics if x.metric.endswith("_acc")]
    assert {x.module for x in accs} == set(range(n))
    assert all(0.0 <= x.value <= 1.0 for x in accs)


def test_every_method_applies_to_some_embedded_task():
    """So that the test above exercises it: a modality without an embedded task would go untested."""
    assert {m for m, _ in PAIRS} == set(METHODS.names())


@pytest.mark.parametrize("name", TASKS.names())
def test_task_builds_its_encoder_and_evaluates_on_fixture_data(name, tmp_path):
    cls = TASKS.get(name)
    assert issubclass(cls, Task) and cls.name == name and cls.description and cls.label_sets
    data_root, overrides = None, {}
    if cls.needs_data:
        if name not in FIXTURES:
            pytest.skip(f"task {name} needs data and tests/fixtures_data.py has no writer for it")
        data_root, overrides = FIXTURES[name](tmp_path)
    r, task, encoder, method = build("random_init", name, data_root, overrides)
    task.check_data()
    task.check_evaluation(r.eval)
    with torch.no_grad():
        outs = encoder.forward_modules(task.example_input(2), detach=True)
    assert len(outs) == len(encoder.blocks) >= 1
    for out in outs:  # vision: a (B, C, G, G) patch grid; audio: a (B, C, L) sequence
        assert out.rep.dim() == (4 if cls.modality == "vision" else 3) and out.rep.shape[0] == 2
        assert out.target.shape[0] == 2 and torch.isfinite(out.rep).all()
        if cls.modality == "vision":
            assert out.rep.shape[-1] == out.rep.shape[-2]
    metrics = task.evaluate(method.features, r.eval, [len(outs) - 1], CPU, 0)
    assert {f"{label}_acc" for label in cls.label_sets} <= {x.metric for x in metrics}
