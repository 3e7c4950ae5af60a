"""Benchmarks: both InfoNCE forms, forward and backward, at the shapes of a small run.

Skipped by the default test run (pyproject's ``--benchmark-skip``); see the README for saving a baseline
and comparing against it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

grid = pytest.importorskip("methods._infonce", reason="the grid InfoNCE (methods/_infonce.py) is absent")


def forward_backward(loss_fn, params: list[torch.Tensor]) -> float:
    for p in params:
        p.grad = None
    loss = loss_fn()
    loss.backward()
    return loss.item()


def test_grid_infonce_forward_backward(benchmark):
    """Vision: a (B, C, 7, 7) patch grid, K = 5 rows ahead, 16 negatives."""
    torch.manual_seed(0)
    b, c, k, negatives = 16, 64, 5, 16
    context = torch.randn(b, c, 7, 7, requires_grad=True)
    target = torch.randn(b, c, 7, 7, requires_grad=True)
    heads = grid.GridPredictors(c, c, k)
    params = [context, target, *heads.parameters()]
    loss = benchmark(forward_backward, lambda: grid.grid_infonce(context, target, heads, negatives), params)
    assert math.isfinite(loss)


def test_sequence_infonce_forward_backward(benchmark):
    """Audio: a (B, C, L) sequence, K = 12 steps ahead, 10 negatives, a 128-step window."""
    seq = pytest.importorskip("methods._infonce_seq", reason="the sequence InfoNCE is absent")
    torch.manual_seed(0)
    b, c, length, k, negatives = 8, 64, 160, 12, 10
    context = torch.randn(b, c, length, requires_grad=True)
    target = torch.randn(b, c, length, requires_grad=True)
    head = nn.Linear(c, c * k, bias=False)
    params = [context, target, *head.parameters()]
    loss = benchmark(
        forward_backward, lambda: seq.sequence_infonce(context, target, head, k, negatives), params
    )
    assert math.isfinite(loss)
