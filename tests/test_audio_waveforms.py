"""Sample-level audio maths: Kaldi frame counts, label alignment, crops, normalisation, resampling."""

from __future__ import annotations

import math

import numpy as np
import torch

from tasks._waveforms import (
    IGNORE,
    Recordings,
    align_labels,
    gather,
    kaldi_frames,
    normalise,
    resample,
    resample_many,
    spaced_starts,
    tile_starts,
    train_starts,
)


def test_kaldi_frame_counts_of_the_real_labelled_utterances():
    assert kaldi_frames(81520) == 508 and kaldi_frames(179360) == 1119 and kaldi_frames(399) == 0


def test_label_j_lands_on_latent_frame_j_plus_offset():
    labels = np.arange(10, 30)
    assert align_labels(labels, 0, 4, offset=2).tolist() == [IGNORE, IGNORE, 10, 11]
    assert align_labels(labels, 160 * 5, 3, offset=2).tolist() == [13, 14, 15]
    assert align_labels(labels, 160 * 20, 3, offset=2).tolist() == [28, 29, IGNORE]
    assert align_labels(labels, -320, 4, offset=0).tolist() == [IGNORE, IGNORE, 10, 11]


def test_crops_are_zero_padded_outside_the_utterance():
    rec = Recordings.from_list([np.arange(1, 6, dtype=np.int16), np.arange(10, 13, dtype=np.int16)])
    assert rec.crop(0, -2, 4).tolist() == [0, 0, 1, 2]
    assert rec.crop(1, 1, 4).tolist() == [11, 12, 0, 0]
    x = gather(rec, np.array([0, 1]), np.array([0, 0]), 3)
    assert x.shape == (2, 1, 3) and torch.allclose(x[1, 0, 0], normalise(torch.tensor(10)))


def test_normalisation_uses_the_reference_constants():
    assert math.isclose(float(normalise(torch.tensor(0))), 6.781e-4 / 0.063, rel_tol=1e-5)
    assert math.isclose(float(normalise(torch.tensor(16384))), (0.5 + 6.781e-4) / 0.063, rel_tol=1e-5)


def test_training_starts_sit_on_the_grid_inside_the_utterance():
    lengths = np.array([20480, 50000, 3000])
    starts = train_starts(lengths, 20480, torch.Generator().manual_seed(0))
    assert (starts % 160 == 0).all() and starts[0] == 0 and 0 <= starts[1] <= 50000 - 20480
    assert -(20480 - 3000) <= starts[2] <= 0
    again = train_starts(lengths, 20480, torch.Generator().manual_seed(0))
    assert (starts == again).all()


def test_probe_clip_positions():
    assert tile_starts(50000, 20480).tolist() == [0, 20480, 40960]
    assert spaced_starts(50000, 20480, 3).tolist() == [0, 14720, 29440]
    assert spaced_starts(3200, 20480, 2).tolist() == [-8640, -8640]


def test_resampling_keeps_a_tone_and_doubles_the_length():
    t8, t16 = torch.arange(8000) / 8000, torch.arange(16000) / 16000
    up = resample(torch.sin(2 * math.pi * 1000 * t8), 8000, 16000)
    assert up.shape == (16000,) and (up - torch.sin(2 * math.pi * 1000 * t16))[200:-200].abs().max() < 2e-3
    down = resample(torch.sin(2 * math.pi * 1000 * t16), 16000, 8000)
    assert down.shape == (8000,) and (down - torch.sin(2 * math.pi * 1000 * t8))[200:-200].abs().max() < 2e-3
    odd = resample(torch.randn(2, 443), 44100, 16000)  # 443 * 16000 / 44100 = 160.7
    assert odd.shape == (2, 161)


def test_resampling_many_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    waves = [(rng.standard_normal(n) * 3000).astype(np.int16) for n in (3000, 4501, 20)]
    together = resample_many(waves, 8000, 16000)
    for w, t in zip(waves, together, strict=True):
        alone = resample(torch.from_numpy(w.astype(np.float32)), 8000, 16000).round().clamp(-32768, 32767)
        assert len(t) == 2 * len(w) and np.array_equal(t, alone.to(torch.int16).numpy())
