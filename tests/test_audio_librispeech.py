"""The LibriSpeech reader: layout, split lists, speakers, phone labels and their alignment, the decoded-audio
cache (no FLAC decoding after the first load), missing utterances, offline errors, and the real excerpt."""

from __future__ import annotations

import logging
import urllib.error

import numpy as np
import pytest
import soundfile as sf
import torch

from bench.cli import main
from bench.data import DataError
from bench.spec import RunSpec, resolve
from tasks._cpc_audio import conv_lengths
from tasks._waveforms import HOP, kaldi_frames
from tests.conftest import shared_data
from tests.fixtures_audio import fixture_labels, write_librispeech


def make_task(root, preset="smoke", **task):
    resolved = resolve(RunSpec(method="gim", task="librispeech", preset=preset, overrides={"task": task}))
    return resolved.task_cls(resolved.task, root, 0)


@pytest.fixture
def corpus(tmp_path):
    return tmp_path, write_librispeech(tmp_path)


class ReadCounter:
    """Counts soundfile.read calls (FLAC decodes)."""

    def __init__(self, monkeypatch):
        self.calls, real = 0, sf.read

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(sf, "read", counting)


def test_splits_speakers_and_labels_from_the_lists(corpus):
    root, lists = corpus
    task = make_task(root)
    task.check_data()
    data = task.data
    assert task.split_size("train") == 6 and task.split_size("test") == 2
    assert data.classes == {"speaker": 3, "phone": 41}
    assert data.splits["train"].clip_labels["speaker"].tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]  # 26, 19, 32 by first appearance
    assert data.splits["test"].clip_labels["speaker"].tolist() == [0, 1]
    assert data.recordings.names == lists["train"] + lists["test"]
    labelled = sorted(data.frame_labels["phone"])
    assert labelled == [0, 1, 6, 7]
    n = data.recordings.length(0)
    assert np.array_equal(data.frame_labels["phone"][0], fixture_labels(n, 0))


def test_batches_carry_clip_and_frame_labels(corpus):
    task = make_task(corpus[0])
    batch = task.batch(
        "train", torch.tensor([0, 5]), torch.device("cpu"), torch.Generator().manual_seed(1), True
    )
    assert batch.x.shape == (2, 1, 20480) and batch.labels["speaker"].tolist() == [0, 2]
    phone = batch.labels["phone"]
    assert phone.shape == (2, 128) and phone.dtype == torch.long
    assert (phone[1] == -100).all() and (phone[0] != -100).any()  # utterance 5 has no labels


def test_flac_is_decoded_once_and_never_in_a_later_epoch(tmp_path, monkeypatch):
    write_librispeech(tmp_path)
    reads = ReadCounter(monkeypatch)
    seen = []
    original = type(make_task(tmp_path)).batch

    def spy(self, *args, **kwargs):
        seen.append(reads.calls)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(make_task(tmp_path)), "batch", spy)
    sets = ["train.epochs=2", "train.val_batches=0", "task.speaker_split=lists", "task.clip_samples=3200"]
    code = main(["run", "--method", "gim", "--task", "librispeech", "--preset", "smoke", "--data-root", str(tmp_path),
                 "--out", str(tmp_path / "runs"), "--quiet"] + [a for s in sets for a in ("--set", s)])  # fmt: skip
    assert code == 0
    assert len(seen) == 4 and seen[0] == 8  # 8 utterances decoded before the first batch ...
    assert (
        seen[2:] == [8, 8] and reads.calls == 8
    )  # ... and nothing decoded in the second epoch or the probes
    again = make_task(tmp_path)
    _ = again.data
    assert reads.calls == 8  # a new run reads the cache
    assert (tmp_path / ".bench_cache").is_dir()


def test_missing_utterances_are_reported_not_fatal(tmp_path, caplog):
    write_librispeech(tmp_path, missing=("19-198-0001", "26-495-0002"))
    with caplog.at_level(logging.WARNING):
        task = make_task(tmp_path)
        assert task.split_size("train") == 5 and task.split_size("test") == 1
    assert "1 of the 6 utterances of train_split.txt are missing" in caplog.text
    assert "1 of the 2 utterances of test_split.txt are missing" in caplog.text
    assert task.data.classes["speaker"] == 3  # speakers still indexed over the lists


def test_offline_without_data_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DataError, match="LibriSpeech100_labels_split.*download failed"):
        make_task(tmp_path).check_data()
    with pytest.raises(DataError, match="task.download=true"):
        make_task(tmp_path, download=False).check_data()


def test_label_alignment_on_the_real_labelled_utterances():
    root = shared_data("librispeech")
    task = make_task(root)
    data = task.data
    names = data.recordings.names
    for utt, count in (("4051-11218-0044", 1119), ("2911-12359-0007", 508)):
        i = names.index(utt)
        n, labels = data.recordings.length(i), data.frame_labels["phone"][i]
        assert len(labels) == count == kaldi_frames(n)
        assert conv_lengths(n)[-1] - len(labels) == 2  # the reference keeps the last #labels latent frames
        tiles = task.frame_targets("phone", np.array([i, i]), np.array([0, 20480]))  # (2, 128)
        assert (tiles[0, :2] == -100).all() and np.array_equal(tiles[0, 2:], labels[:126])
        assert np.array_equal(tiles[1], labels[126:254])  # latent frame 128 + t <-> label 126 + t
        audio = data.recordings.crop(i, 0, n).astype(np.float64) / 32768
        rms = np.array([np.sqrt(np.mean(audio[HOP * j : HOP * j + 400] ** 2)) for j in range(count)])
        assert rms[labels == 0].mean() < 0.3 * rms[labels != 0].mean()  # label 0 is silence: labels line up


def test_real_excerpt_runs_the_smoke_preset(tmp_path, capsys):
    root = shared_data("librispeech")
    code = main(
        [
            "run",
            "--method",
            "gim",
            "--task",
            "librispeech",
            "--preset",
            "smoke",
            "--data-root",
            str(root),
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "speaker_acc" in out and "phone_acc" in out


def crops(probe) -> set[tuple[int, int]]:
    return set(zip(probe.utterances.tolist(), probe.starts.tolist(), strict=True))


def test_within_utterance_speaker_split(corpus):
    task = make_task(corpus[0], clip_samples=3200, within_clips=0)
    train, test = task.probe_sets("speaker")
    assert not crops(train) & crops(test)
    assert set(test.labels.tolist()) == set(train.labels.tolist()) == {0, 1, 2}
    assert abs(len(test.labels) / (len(train.labels) + len(test.labels)) - 0.25) < 0.05
    assert (test.starts + 3200 <= task.data.recordings.lengths()[test.utterances]).all()  # whole clips only


def test_missing_label_files_are_fetched_from_the_mirror_with_checksums(tmp_path, monkeypatch):
    from tasks import _librispeech_files as files

    source = tmp_path / "source"
    write_librispeech(source)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "LibriSpeech").symlink_to(source / "LibriSpeech")
    calls = []

    def fake_download(url, dest, sha256=None, md5=None, quiet=False):
        calls.append((url.rsplit("/", 1)[1], sha256))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((source / files.LABELS / dest.name).read_bytes())
        return dest

    monkeypatch.setattr(files, "download", fake_download)
    make_task(tmp_path / "data").check_data()
    assert calls == list(files.LABEL_FILES.items())
    assert make_task(tmp_path / "data").split_size("train") == 6
