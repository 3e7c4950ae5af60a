"""The sequence InfoNCE: ln(1 + negatives) at initialisation, falls when trained, gradients, windowing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from methods._infonce_seq import sequence_infonce


def loss_of(b=4, cc=16, ct=24, length=40, k=12, negatives=10, window=128, scale=0.01):
    context = (scale * torch.randn(b, cc, length)).requires_grad_()
    target = (scale * torch.randn(b, ct, length)).requires_grad_()
    predictor = nn.Linear(cc, ct * k, bias=False)
    return sequence_infonce(context, target, predictor, k, negatives, window), context, target, predictor


@pytest.mark.parametrize("negatives", [10, 4])
def test_initial_loss_is_about_ln_one_plus_negatives(negatives):
    loss, *_ = loss_of(negatives=negatives)
    assert abs(loss.item() - math.log(1 + negatives)) < 0.02


def test_gradient_shapes_reach_context_target_and_predictor():
    loss, context, target, predictor = loss_of()
    loss.backward()
    assert context.grad.shape == context.shape and target.grad.shape == target.shape
    assert predictor.weight.grad.shape == predictor.weight.shape
    assert context.grad[:, :, -1].abs().sum() == 0  # the last step has no future to predict


def test_long_sequences_use_one_window_for_contexts():
    loss, context, *_ = loss_of(length=300, window=64)
    loss.backward()
    used = (context.grad.abs().sum(dim=(0, 1)) > 0).nonzero().flatten()
    assert len(used) == 63 and int(used[-1] - used[0]) == 62  # one contiguous span, last step excluded


def test_same_global_seed_same_loss():
    torch.manual_seed(3)
    a, *_ = loss_of()
    torch.manual_seed(3)
    b, *_ = loss_of()
    assert torch.equal(a, b)


def test_loss_falls_when_the_future_is_predictable():
    torch.manual_seed(0)
    codes = torch.randn(8, 16)  # 8 symbols; symbol s is always followed by (s + 1) % 8
    start = torch.randint(0, 8, (16, 1))
    seq = codes[(start + torch.arange(32)) % 8].transpose(1, 2)  # (B, 16, L)
    predictor = nn.Linear(16, 16 * 4, bias=False)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=0.1)
    first = None
    for _ in range(30):
        loss = sequence_infonce(seq, seq, predictor, k_max=4, negatives=10)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


def test_k_larger_than_the_sequence_and_bad_shapes():
    loss, *_ = loss_of(length=6, k=12)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="differ"):
        sequence_infonce(torch.randn(2, 4, 10), torch.randn(2, 4, 9), nn.Linear(4, 8, bias=False), 2, 3)
    with pytest.raises(ValueError, match="predictor"):
        sequence_infonce(torch.randn(2, 4, 10), torch.randn(2, 4, 10), nn.Linear(4, 7, bias=False), 2, 3)


def test_gim_losses_of_an_untrained_encoder_on_speech():
    from bench.spec import RunSpec, resolve
    from tasks._cpc_audio import CPCAudioEncoder

    resolved = resolve(RunSpec(method="gim", task="synthetic_speech", preset="smoke"))
    task = resolved.task_cls(resolved.task, None, 0)
    x = task.batch("train", torch.arange(4), torch.device("cpu"), torch.Generator().manual_seed(0), True).x
    encoder = CPCAudioEncoder(channels=32, gru_hidden=16)
    with torch.no_grad():
        losses = []
        for out in encoder.forward_modules(x, detach=True):
            head = nn.Linear(out.rep.shape[1], out.target.shape[1] * 12, bias=False)
            losses.append(sequence_infonce(out.rep, out.target, head, 12, 10).item())
    assert all(abs(v - math.log(11)) < 0.1 for v in losses[1:])
    # module 0 sees the raw waveform's scale and starts higher, as in the reference (about 3.0 there)
    assert math.log(11) < losses[0] < 4.0
