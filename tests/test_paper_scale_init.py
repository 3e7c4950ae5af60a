"""The paper-size encoders at the memory preset start at chance: per-module InfoNCE about ln(1 + negatives).

One training step of GIM at paper geometry (batch 8), with the preset's precision (vision: amp auto, bf16
where the CPU has it natively):
the losses it returns are computed before the update.
Vision on a fake STL-10 in the official layout (ln 17 with 16 negatives); audio on the real LibriSpeech
excerpt (ln 11 with 10 negatives), where module 0 sees the raw waveform's scale and starts higher, as the
reference does.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.measure import precision
from bench.spec import RunSpec, resolve
from tests.conftest import shared_data
from tests.fixtures_stl10 import write_stl10


def first_step_losses(task: str, root, overrides: dict) -> tuple[dict[int, float], int]:
    resolved = resolve(RunSpec(method="gim", task=task, preset="memory", overrides=overrides, data_root=str(root)))
    torch.manual_seed(0)
    device = torch.device("cpu")
    task_obj = resolved.task_cls(resolved.task, root, 0)
    method = resolved.method_cls(resolved.method, task_obj.build_encoder(), task_obj, device)
    split = task_obj.pretrain_split(supervised=False)
    idx = torch.arange(resolved.train.batch_size) % task_obj.split_size(split)
    batch = task_obj.batch(split, idx, device, torch.Generator().manual_seed(0), augment=True)
    assert len(batch) == 8
    bf16 = precision(resolved.train.amp, device) == "bf16"
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as the trainer
        losses = method.train_step(batch, 0)
    return {m: float(v) for m, v in losses.items()}, resolved.method.negatives


@pytest.mark.slow
def test_paper_size_vision_gim_starts_at_ln_17(tmp_path):
    root = write_stl10(tmp_path, 16, 8, 8, exact=False)
    losses, negatives = first_step_losses("stl10", root, {"task": {"verify_sizes": False}})
    assert negatives == 16 and sorted(losses) == [0, 1, 2]
    assert all(v == pytest.approx(math.log(17), abs=0.02) for v in losses.values()), losses


@pytest.mark.slow
def test_paper_size_audio_gim_starts_at_ln_11():
    losses, negatives = first_step_losses("librispeech", shared_data("librispeech"), {})
    assert negatives == 10 and sorted(losses) == [0, 1, 2, 3, 4, 5]
    assert all(v == pytest.approx(math.log(11), abs=0.05) for m, v in losses.items() if m > 0), losses
    assert math.log(11) < losses[0] < 3.5, losses
