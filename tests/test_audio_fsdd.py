"""The FSDD reader: file names, the official split, speakers and digits, 8 -> 16 kHz, layouts, offline errors."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import soundfile as sf
import torch

from bench.cli import main
from bench.data import DataError
from bench.spec import RunSpec, resolve
from tests.conftest import shared_data
from tests.fixtures_audio import write_fsdd


def make_task(root, preset="smoke", **task):
    resolved = resolve(RunSpec(method="gim", task="fsdd", preset=preset, overrides={"task": task}))
    return resolved.task_cls(resolved.task, root, 0)


def test_fixture_splits_labels_and_resampling(tmp_path):
    write_fsdd(tmp_path)
    task = make_task(tmp_path)
    task.check_data()
    data = task.data
    assert task.split_size("train") == 12 and task.split_size("test") == 30  # indices 5-6 train, 0-4 test
    assert data.classes == {"speaker": 2, "digit": 10}
    name = data.recordings.names[0]
    digit, speaker, index = name.split("_")
    original, sr = sf.read(tmp_path / "recordings" / f"{name}.wav", dtype="int16")
    assert sr == 8000 and data.recordings.length(0) == 2 * len(original)
    train = data.splits["train"]
    assert sorted(set(train.clip_labels["speaker"].tolist())) == [0, 1]  # alice = 0, bob = 1 (sorted names)
    names = [data.recordings.names[u] for u in train.utterances]
    assert all(int(n.split("_")[2]) >= 5 for n in names)
    assert [int(n.split("_")[0]) for n in names] == train.clip_labels["digit"].tolist()
    assert [n.split("_")[1] == "bob" for n in names] == (train.clip_labels["speaker"] == 1).tolist()


def test_resampled_tone_keeps_its_pitch(tmp_path):
    write_fsdd(tmp_path, speakers=("bob",), digits=(2,), indices=(5,))
    wave = make_task(tmp_path).data.recordings.crop(0, 0, 4096).astype(np.float64)
    peak_hz = np.argmax(np.abs(np.fft.rfft(wave))) * 16000 / 4096
    assert abs(peak_hz - 600) < 8  # 300 + 150 * digit


def test_batches_pad_short_recordings_on_the_grid(tmp_path):
    write_fsdd(tmp_path)
    task = make_task(tmp_path, clip_samples=16000)
    batch = task.batch("train", torch.arange(4), torch.device("cpu"), torch.Generator().manual_seed(0), True)
    assert batch.x.shape == (4, 1, 16000) and set(batch.labels) == {"speaker", "digit"}
    assert batch.labels["digit"].dtype == torch.long and batch.labels["speaker"].shape == (4,)


def test_both_layouts_are_found(tmp_path):
    write_fsdd(tmp_path / "fsdd", indices=(0, 5))
    assert make_task(tmp_path).split_size("train") == 6
    assert make_task(tmp_path / "fsdd").split_size("test") == 6


def test_offline_without_data_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DataError, match="no FSDD recordings in .*download failed"):
        make_task(tmp_path).check_data()
    with pytest.raises(DataError, match="task.download=true"):
        make_task(tmp_path, download=False).check_data()


def test_smoke_run_on_the_fixture(tmp_path, capsys):
    write_fsdd(tmp_path / "data")
    code = main(["run", "--method", "gim", "--task", "fsdd", "--preset", "smoke", "--data-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "runs"), "--quiet", "--set", "train.batch_size=4"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "speaker_acc" in out and "digit_acc" in out


def test_real_fsdd_split():
    root = shared_data("fsdd")
    task = make_task(root)
    data = task.data
    assert task.split_size("train") == 2400 and task.split_size("test") == 300
    assert data.classes["speaker"] == 6 and len(data.recordings) == 2700
    lengths = data.recordings.lengths()
    assert lengths.min() >= 2 * 1140 and lengths.max() <= 2 * 18300


def test_download_extracts_the_recordings_and_checks_their_count(tmp_path, monkeypatch):
    import tarfile

    from tasks import fsdd

    write_fsdd(tmp_path / "src" / "free-spoken-digit-dataset-1.0.10", indices=(0,))
    archive = tmp_path / "release.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(
            tmp_path / "src" / "free-spoken-digit-dataset-1.0.10", arcname="free-spoken-digit-dataset-1.0.10"
        )
    monkeypatch.setattr(fsdd, "download", lambda url, dest, **kw: archive)
    with pytest.raises(DataError, match="held 6 recordings, expected 3000"):
        make_task(tmp_path / "data").check_data()
    assert len(list((tmp_path / "data" / "fsdd" / "recordings").glob("*.wav"))) == 6
