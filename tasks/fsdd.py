"""The Free Spoken Digit Dataset: real speech at CPU scale (6 speakers, 10 digits, 8 kHz WAV).

Files ``recordings/{digit}_{speaker}_{index}.wav``; the official split puts indices 0-4 in the test split and
the rest in the train split (pretraining, probe training). Each recording is resampled to 16 kHz (Kaiser-
windowed sinc, torch ops) for the CPC encoder and kept in memory as int16. Recordings are short (mean 0.44 s),
so a crop shorter than ``clip_samples`` is zero-padded: placed at a random 10 ms offset inside the clip for
training, centred for the probes. Clip-level labels ``speaker`` (speakers sorted by name) and ``digit``.

Data layout: ``--data-root`` may be the FSDD folder itself (holding ``recordings/``), or a folder holding
``fsdd/recordings/`` (e.g. ``--data-root ../shared/data``). When neither exists and ``task.download`` is on,
the release tarball is fetched from the project's GitHub repository into ``DATA_ROOT/fsdd/`` (GitHub
publishes no checksum for it; the extracted files are checked by name and count instead).

The ``small`` preset is the CPU acceptance run (about 3 minutes on 2 cores): a 64-channel encoder (GRU 64),
0.5 s clips, 6 epochs of batch 16 (900 steps), one intra-op thread (the small model is overhead-bound: one
thread is about as fast as two on an idle machine and several times faster on a busy one), and probes trained
for 200 epochs with the learning rate chosen among 1e-1, 3e-2 and 1e-2 on a 25 % validation split (30 epochs
at 1e-3, or 100 epochs topping out at 3e-2, leave the probes under-fitted: the largest rate won in the runs
checked, gim and random_init seed 0). 32 channels learn too little speaker information in that
budget; 20480-sample clips would be two-thirds padding.
"""

from __future__ import annotations

import logging
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.data import DataError, data_root, download
from bench.registry import TASKS
from tasks._audio import AudioConfig, AudioData, AudioSplit, AudioTask
from tasks._waveforms import Recordings, resample_many

log = logging.getLogger(__name__)
VERSION = "v1.0.10"
URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/{VERSION}.tar.gz"
NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
SR = 16000


@dataclass(frozen=True)
class Config(AudioConfig):
    test_indices: int = 5
    """Recordings with index below this are the test split (the official split: 0-4)."""
    download: bool = True
    """Fetch the dataset from GitHub when it is not found under the data root."""
    clip_samples: int = 8000
    """0.5 s: covers most recordings (mean 0.44 s) with little padding."""


@TASKS.register("fsdd")
class FSDD(AudioTask):
    description = "Free Spoken Digit Dataset (real speech, 6 speakers x 10 digits), speaker and digit probes"
    Config = Config
    clip_label_sets = ("speaker", "digit")
    label_sets = ("speaker", "digit")
    presets = {
        "smoke": {
            "task": {"channels": 8, "gru_hidden": 8, "clip_samples": 6400},
            "train": {"epochs": 1, "batch_size": 8, "steps_per_epoch": 2, "warmup_steps": 1},
            "eval": {"epochs": 2, "val_fraction": 0.25},
        },
        "small": {
            "task": {"channels": 64, "gru_hidden": 64, "feature_batch": 128},
            "train": {"epochs": 6, "batch_size": 16, "threads": 1},
            "eval": {"epochs": 200, "lrs": [1e-1, 3e-2, 1e-2], "val_fraction": 0.25},
        },
        "paper": {
            "task": {"channels": 512, "gru_hidden": 256},
            "train": {"epochs": 100, "batch_size": 8},
            "eval": {"epochs": 50, "lrs": [1e-3, 1e-4], "val_fraction": 0.25},
        },
        "memory": {
            "task": {"channels": 512, "gru_hidden": 256, "clip_samples": 20480},
            "train": {"epochs": 1, "steps_per_epoch": 6, "batch_size": 8, "warmup_steps": 2},
            "eval": {"epochs": 1, "val_fraction": 0.25},
        },
    }

    def recordings_dir(self) -> Path | None:
        root = data_root(self.data_root)
        for folder in (root / "recordings", root / "fsdd" / "recordings"):
            if folder.is_dir() and any(NAME.match(p.name) for p in folder.iterdir()):
                return folder
        return None

    def check_data(self) -> None:
        if self.recordings_dir() is not None:
            return
        root = data_root(self.data_root)
        looked = f"{root / 'recordings'} and {root / 'fsdd' / 'recordings'}"
        if not self.config.download:
            raise DataError(f"no FSDD recordings in {looked}; set task.download=true or clone {URL} there")
        try:
            fetch(root / "fsdd")
        except DataError as err:
            raise DataError(f"no FSDD recordings in {looked}, and the download failed: {err}") from None

    def load(self) -> AudioData:
        folder = self.recordings_dir()
        if folder is None:
            raise DataError(f"no FSDD recordings under {data_root(self.data_root)}; run check_data() first")
        files = sorted((m.group(2), int(m.group(1)), int(m.group(3)), p) for p in folder.iterdir()
                       if (m := NAME.match(p.name)))  # fmt: skip
        speakers = sorted({f[0] for f in files})
        waves = read_16k([f[3] for f in files])
        rec = Recordings.from_list(waves, [f[3].stem for f in files])
        spk = np.array([speakers.index(f[0]) for f in files], dtype=np.int64)
        digit = np.array([f[1] for f in files], dtype=np.int64)
        is_test = np.array([f[2] < self.config.test_indices for f in files])
        splits = {
            name: AudioSplit(np.flatnonzero(mask), {"speaker": spk[mask], "digit": digit[mask]})
            for name, mask in (("train", ~is_test), ("test", is_test))
        }
        log.info("FSDD: %d recordings (%d train, %d test), %d speakers, from %s", len(files),
                 int((~is_test).sum()), int(is_test.sum()), len(speakers), folder)  # fmt: skip
        return AudioData(rec, splits, {}, {"speaker": len(speakers), "digit": 10})


def read_16k(paths: list[Path]) -> list[np.ndarray]:
    """Mono WAVs as int16 at 16 kHz (resampled together, grouped by sample rate)."""
    waves, rates = [], []
    for path in paths:
        data, sr = sf.read(path, dtype="int16", always_2d=True)
        waves.append(data[:, 0])
        rates.append(sr)
    out: list[np.ndarray] = list(waves)
    for sr in set(rates) - {SR}:
        idx = [i for i, r in enumerate(rates) if r == sr]
        for i, wave in zip(idx, resample_many([waves[i] for i in idx], sr, SR), strict=True):
            out[i] = wave
    return out


def fetch(dest: Path) -> None:
    """Download the release tarball and extract its ``recordings/*.wav`` into ``dest/recordings``."""
    archive = download(URL, dest / f"fsdd-{VERSION}.tar.gz")
    out = dest / "recordings"
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and "/recordings/" in member.name and NAME.match(name):
                (out / name).write_bytes(tar.extractfile(member).read())
    count = sum(1 for p in out.iterdir() if NAME.match(p.name))
    if count < 3000:
        raise DataError(f"{archive} held {count} recordings, expected 3000; delete it and try again")
    log.info("FSDD: extracted %d recordings into %s", count, out)
