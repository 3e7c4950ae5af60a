"""The maths: InfoNCE at initialisation is about ln(1 + negatives), falls when trained, and GIM isolates modules."""

import math

import pytest
import torch

from bench.interfaces import Batch
from bench.spec import RunSpec, resolve
from methods._infonce import GridPredictors, chance_loss, grid_infonce, row_offset


def test_chance_level():
    assert chance_loss(16) == pytest.approx(math.log(17))


@pytest.mark.parametrize("offset", ["paper", "reference"])
def test_grid_infonce_at_init_is_ln_1_plus_negatives(offset):
    torch.manual_seed(0)
    z = torch.randn(8, 32, 7, 7) * 0.01  # near-zero scores: every logit about equal
    pred = GridPredictors(32, 32, 5)
    loss = grid_infonce(z, z, pred, negatives=16, offset=offset)
    assert loss.item() == pytest.approx(math.log(17), abs=0.01)


def test_row_offsets():
    assert [row_offset(k, "paper") for k in (1, 5)] == [1, 5]
    assert [row_offset(k, "reference") for k in (1, 5)] == [2, 6]


def test_grid_infonce_falls_when_trained():
    """A learnable grid whose rows follow a pattern: the loss must fall well below chance."""
    torch.manual_seed(0)
    base = torch.randn(16, 8, 1, 7)
    z = torch.nn.Parameter(0.01 * (base.repeat(1, 1, 7, 1) + 0.1 * torch.randn(16, 8, 7, 7)))
    pred = GridPredictors(8, 8, 3)
    opt = torch.optim.Adam([z, *pred.parameters()], lr=0.05)
    first = None
    for _ in range(100):
        loss = grid_infonce(z, z, pred, negatives=8)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first == pytest.approx(math.log(9), abs=0.05)
    assert loss.item() < 0.5 * math.log(9)


def test_gradients_reach_context_target_and_predictors():
    z = torch.randn(4, 8, 7, 7, requires_grad=True)
    pred = GridPredictors(8, 8, 5)
    grid_infonce(z, z, pred, negatives=4).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is not None for p in pred.parameters())


def test_grid_too_small_is_an_error():
    with pytest.raises(ValueError, match="too small"):
        grid_infonce(torch.randn(2, 4, 1, 3), torch.randn(2, 4, 1, 3), GridPredictors(4, 4, 2), 4)


def _gim(overrides=None):
    r = resolve(RunSpec(method="gim", preset="smoke", overrides=overrides or {}))
    task = r.task_cls(r.task, None, 0)
    encoder = task.build_encoder()
    return task, encoder, r.method_cls(r.method, encoder, task, torch.device("cpu"))


def test_no_gradient_crosses_a_module_boundary():
    """Module 1's loss alone must leave module 0 without gradients; module 0's loss gives module 1 none."""
    from methods.gim import infonce_loss

    task, encoder, method = _gim()
    x = task.example_input(4)
    outs = encoder.forward_modules(x, detach=True)
    infonce_loss(outs[1], method.heads[1], method.config).backward()
    assert all(p.grad is None for p in encoder.blocks[0].parameters())
    assert any(p.grad is not None for p in encoder.blocks[1].parameters())
    encoder.zero_grad(set_to_none=True)
    outs = encoder.forward_modules(x, detach=True)
    infonce_loss(outs[0], method.heads[0], method.config).backward()
    assert all(p.grad is None for p in encoder.blocks[1].parameters())


def test_end_to_end_forward_does_cross_boundaries():
    """The control: without detach the same loss does reach module 0 (so the test above can fail)."""
    from methods.gim import infonce_loss

    task, encoder, method = _gim()
    outs = encoder.forward_modules(task.example_input(4), detach=False)
    infonce_loss(outs[1], method.heads[1], method.config).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.blocks[0].parameters())


@pytest.mark.parametrize("backward", ["per_module", "summed"])
def test_backward_modes_give_the_same_step(backward):
    """per_module and summed back-propagation are the same update (inputs are detached between modules)."""
    results = []
    for mode in ("per_module", backward):
        torch.manual_seed(0)
        task, encoder, method = _gim({"method": {"backward": mode}})
        x = task.example_input(4)
        torch.manual_seed(1)
        method.train_step(Batch(x), phase=0)
        results.append(torch.cat([p.detach().flatten() for p in encoder.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_train_modules_limits_training():
    task, encoder, method = _gim({"method": {"train_modules": [0]}})
    before = [p.detach().clone() for p in encoder.blocks[1].parameters()]
    losses = method.train_step(Batch(task.example_input(4)), phase=0)
    assert list(losses) == [0]
    assert all(torch.equal(a, b) for a, b in zip(before, encoder.blocks[1].parameters()))
