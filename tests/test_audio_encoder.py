"""The CPC audio encoder: frame lengths, parameter counts (GIM_PROTOCOL.md 2.2), module split and ablations."""

from __future__ import annotations

import torch

from bench.describe import count_params, describe_task
from bench.spec import RunSpec, resolve
from tasks._cpc_audio import CPCAudioEncoder, GRUBlock, conv_lengths

PAPER_PARAMS = [5_632, 2_097_664, 1_049_088, 1_049_088, 1_049_088, 591_360]


def test_conv_lengths_of_a_training_clip():
    assert conv_lengths(20480) == [4095, 1023, 512, 257, 128]
    assert all(conv_lengths(160 * n)[-1] == n for n in (1, 7, 128, 1121))


def test_paper_encoder_shapes_and_parameter_counts():
    enc = CPCAudioEncoder()
    assert [count_params(b) for b in enc.blocks] == PAPER_PARAMS
    with torch.no_grad():
        outs = enc.forward_modules(torch.randn(1, 1, 20480), detach=True)
    assert [tuple(o.rep.shape) for o in outs] == [(1, 512, 4095), (1, 512, 1023), (1, 512, 512), (1, 512, 257),
                                                  (1, 512, 128), (1, 256, 128)]  # fmt: skip


def test_gim_heads_bring_the_total_to_the_references_23_1_million():
    resolved = resolve(RunSpec(method="gim", task="librispeech", preset="paper"))
    task = resolved.task_cls(resolved.task, None, 0)
    encoder = task.build_encoder()
    method = resolved.method_cls(resolved.method, encoder, task, torch.device("cpu"))
    heads = [count_params(h) for h in method.heads]
    assert heads == [3_145_728] * 5 + [1_572_864]
    assert count_params(encoder) + sum(heads) == 23_143_424


def test_describe_shows_the_six_modules_of_librispeech():
    text = describe_task(RunSpec(method="gim", task="librispeech"))
    for length, params in zip((4095, 1023, 512, 257, 128, 128), PAPER_PARAMS, strict=True):
        assert f", {length})" in text and str(params) in text
    assert "GRU 512 -> 256" in text


def test_the_gru_module_predicts_its_input():
    enc = CPCAudioEncoder(channels=8, gru_hidden=6)
    outs = enc.forward_modules(torch.randn(2, 1, 3200), detach=True)
    assert outs[5].rep.shape == (2, 6, 20) and torch.equal(outs[5].target, outs[4].rep)
    assert all(o.target is o.rep for o in outs[:5])


def test_no_autoregressive_module_leaves_five_conv_modules():
    enc = CPCAudioEncoder(channels=8, gru_hidden=6, autoregressive=False)
    assert len(enc.blocks) == 5 and enc(torch.randn(1, 1, 1600)).shape == (1, 8, 10)


def test_without_bptt_no_gradient_reaches_earlier_steps():
    x = torch.randn(2, 4, 12, requires_grad=True)
    for bptt, leaks in ((True, True), (False, False)):
        torch.manual_seed(0)
        block = GRUBlock(4, 5, bptt=bptt)
        x.grad = None
        block(x)[:, :, -1].sum().backward()
        assert bool(x.grad[:, :, -1].abs().sum() > 0)
        assert bool(x.grad[:, :, :-1].abs().sum() > 0) == leaks


def test_ablation_methods_set_the_task_fields():
    assert resolve(RunSpec(method="gim_no_bptt", task="synthetic_speech")).task.bptt is False
    assert resolve(RunSpec(method="gim_no_ar", task="synthetic_speech")).task.autoregressive is False
    assert resolve(RunSpec(method="gim", task="synthetic_speech")).task.bptt is True
    text = describe_task(RunSpec(method="gim_no_bptt", task="librispeech"))
    assert "no BPTT" in text
