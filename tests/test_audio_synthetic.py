"""The embedded audio task: deterministic data, label shapes and conventions, speakers and phones."""

from __future__ import annotations

import numpy as np
import torch

from bench.spec import RunSpec, resolve
from tasks._waveforms import kaldi_frames


def make_task(preset="smoke", **task):
    resolved = resolve(
        RunSpec(method="gim", task="synthetic_speech", preset=preset, overrides={"task": task})
    )
    return resolved.task_cls(resolved.task, None, 0)


def test_data_depend_on_the_data_seed_only():
    a, b = make_task().data, make_task().data
    assert np.array_equal(a.recordings.audio, b.recordings.audio)
    other = make_task(data_seed=1).data
    assert not np.array_equal(a.recordings.audio, other.recordings.audio)


def test_splits_speakers_and_frame_labels():
    task = make_task()
    data, c = task.data, task.config
    assert task.split_size("train") == c.speakers * c.train_per_speaker
    assert task.split_size("test") == c.speakers * c.test_per_speaker
    assert sorted(set(data.splits["test"].clip_labels["speaker"].tolist())) == list(range(c.speakers))
    for i in range(len(data.recordings)):
        labels = data.frame_labels["phone"][i]
        assert len(labels) == kaldi_frames(data.recordings.length(i)) and labels.max() < c.phones
    assert data.classes == {"speaker": c.speakers, "phone": c.phones}
    assert task.num_classes_of("phone") == c.phones


def test_batch_label_conventions():
    task = make_task()
    batch = task.batch(
        "train", torch.tensor([0, 3]), torch.device("cpu"), torch.Generator().manual_seed(0), True
    )
    clip = task.config.clip_samples
    assert batch.x.shape == (2, 1, clip) and batch.x.dtype == torch.float32
    assert batch.labels["speaker"].shape == (2,) and batch.labels["speaker"].dtype == torch.long
    phone = batch.labels["phone"]
    assert phone.shape == (2, clip // 160) and phone.dtype == torch.long
    assert ((phone >= 0) | (phone == -100)).all()


def test_silence_is_quiet_and_speakers_differ_in_pitch():
    task = make_task(speakers=4, train_per_speaker=1, test_per_speaker=1, seconds=1.0)
    data = task.data
    rec = data.recordings
    wave = rec.crop(0, 0, rec.length(0)).astype(np.float64) / 32768
    labels = data.frame_labels["phone"][0]
    rms = np.array([np.sqrt(np.mean(wave[160 * j : 160 * j + 400] ** 2)) for j in range(len(labels))])
    if (labels == 0).any():
        assert rms[labels == 0].mean() < 0.2 * rms[labels != 0].mean()
    assert len({round(rec.length(i)) for i in range(len(rec))}) == 1
