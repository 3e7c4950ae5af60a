"""STL-10 as in the paper (GIM_PROTOCOL.md 1.1-1.3): the official binary files, read through memory maps.

Files under ``DATA_ROOT/stl10_binary/``: ``unlabeled_X.bin`` (100,000 images), ``train_X.bin`` /
``train_y.bin`` (5,000), ``test_X.bin`` / ``test_y.bin`` (8,000). Every image is 96x96x3 uint8 stored
column-major (channel, then column, then row); labels are one byte each, 1..10 on disk, 0..9 here. The image
files are never loaded whole: batches are gathered from ``numpy.memmap`` views (2.7 GB unlabeled).

Splits: self-supervised methods pretrain on ``unlabeled``, supervised ones on ``train``; the probe trains on
``train`` (choosing its learning rate on a deterministic 20% of it, see tasks/_probe.py) and tests once on
``test``; the per-epoch validation loss uses ``val``, a fixed 20% of ``train`` (the reference's --validate).
Geometry (paper): random 64x64 crop and flip, grayscale, normalised with the reference's 0.4120 / 0.2570;
centre crop for evaluation; a 7x7 grid of 16x16 patches with stride 8; ResNet-50 v2 stages 1-3 without BN.
"""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.data import DataError, data_root, download
from bench.registry import TASKS
from tasks._vision import ImageTask, Split, VisionConfig

log = logging.getLogger(__name__)
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
ARCHIVE_MD5 = "91f7769df0f17e558f3565bffb0c7dfb"
FOLDER = "stl10_binary"
SIDE, CHANNELS = 96, 3
IMAGE_BYTES = SIDE * SIDE * CHANNELS
OFFICIAL_SIZES = {"unlabeled": 100_000, "train": 5_000, "test": 8_000}
"""Images per split in the official release."""
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Config(VisionConfig):
    """Paper geometry and encoder by default (VisionConfig's defaults are STL-10's)."""

    verify_sizes: bool = True
    """Require the official image counts; off for the tiny test copies (files must still hold whole images)."""
    download: bool = True
    """Download the official archive (2.6 GB, md5-verified, resumable) when the files are absent."""
    max_pretrain: int = 0
    """Use at most this many images of the pretraining split (0 = all)."""
    max_probe_train: int = 0
    """Train the probe on at most this many ``train`` images (0 = all 5,000)."""
    max_test: int = 0
    """Test the probe on at most this many ``test`` images (0 = all 8,000)."""


class BinaryImages:
    """The images of one ``*_X.bin`` file as a lazy (N, 96, 96, 3) uint8 array, optionally a row subset."""

    def __init__(self, path: Path, rows: np.ndarray | None = None) -> None:
        self.path = path
        self.raw = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, CHANNELS, SIDE, SIDE)  # (N, C, W, H)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.raw) if self.rows is None else len(self.rows)

    def subset(self, rows: np.ndarray) -> BinaryImages:
        base = rows if self.rows is None else self.rows[rows]
        return BinaryImages(self.path, np.asarray(base, dtype=np.int64))

    def __getitem__(self, indices: torch.Tensor | np.ndarray) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.rows is not None:
            idx = self.rows[idx]
        block = self.raw[idx]  # reads only these images from disk: (B, C, W, H), column-major on disk
        return torch.from_numpy(np.ascontiguousarray(block.transpose(0, 3, 2, 1)))  # -> (B, H, W, C)


def read_labels(path: Path) -> torch.Tensor:
    """One byte per image, 1..10 on disk -> int64 0..9."""
    raw = np.fromfile(path, dtype=np.uint8)
    if len(raw) and (raw.min() < 1 or raw.max() > 10):
        raise DataError(f"{path} holds labels outside 1..10; the file is corrupt, download it again")
    return torch.from_numpy(raw.astype(np.int64) - 1)


def check_split(folder: Path, split: str, verify_sizes: bool) -> None:
    """Raise a DataError when a split's files are absent, truncated or inconsistent."""
    images = folder / f"{split}_X.bin"
    if not images.is_file():
        raise DataError(f"{images} is missing")
    size = images.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise DataError(
            f"{images} has {size} bytes, not a whole number of {IMAGE_BYTES}-byte images: truncated"
        )
    n = size // IMAGE_BYTES
    if verify_sizes and n != OFFICIAL_SIZES[split]:
        raise DataError(f"{images} holds {n} images, the official file {OFFICIAL_SIZES[split]}: truncated or "
                        "not the official release (task.verify_sizes=false accepts other sizes)")  # fmt: skip
    if split == "unlabeled":
        return
    labels = folder / f"{split}_y.bin"
    if not labels.is_file():
        raise DataError(f"{labels} is missing")
    if labels.stat().st_size != n:
        raise DataError(
            f"{labels} has {labels.stat().st_size} labels for the {n} images of {images}: truncated"
        )


def fetch(root: Path) -> None:
    """Download (resumably, md5-verified) and unpack the official archive under ``root``."""
    archive = download(URL, root / "stl10_binary.tar.gz", md5=ARCHIVE_MD5)
    log.info("unpacking %s", archive)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")


def fixed_split(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic (rest, held-out) split of range(n), the same for every run."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).numpy()
    held = max(1, int(round(n * fraction)))
    return np.sort(perm[held:]), np.sort(perm[:held])


def first(images: BinaryImages, labels: torch.Tensor | None, n: int) -> Split:
    """``n`` images (all when 0) drawn at random with a fixed seed, the same for every run (in file order, for
    reading): a cap never takes the first images of a file ordered by class."""
    if not n or n >= len(images):
        return Split(images, labels)  # type: ignore[arg-type]  (a lazy array stands in for the tensor)
    rows = np.sort(torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n].numpy())
    return Split(images.subset(rows), None if labels is None else labels[rows])  # type: ignore[arg-type]


@TASKS.register("stl10")
class STL10(ImageTask):
    description = "STL-10 (official binary files; 64x64 grayscale crops, 7x7 grid of 16x16 patches, ResNet-50 v2 stages 1-3)"
    Config = Config
    presets = {
        "smoke": {
            "task": {"verify_sizes": False, "stem_channels": 8, "blocks": [1, 1, 1], "planes": [4, 4, 4]},
            "train": {
                "epochs": 1,
                "batch_size": 4,
                "steps_per_epoch": 2,
                "warmup_steps": 1,
                "val_batches": 1,
            },
            "eval": {"epochs": 2, "batch_size": 16},
        },
        "small": {
            "task": {"blocks": [1, 1, 1], "planes": [16, 32, 64], "max_pretrain": 10000},
            "train": {"epochs": 2, "batch_size": 32, "val_batches": 4},
            "eval": {"epochs": 30, "lrs": [3e-3, 1e-3, 3e-4]},
        },
        # The reference's per-GPU batch (32) and 300 epochs; the probe's lr chosen on 20% of train.
        # Channels-last only changes the memory layout (faster convolutions on CPU and GPU), not the maths.
        "paper": {
            "train": {"epochs": 300, "batch_size": 32, "val_batches": 50, "channels_last": True},
            "eval": {"epochs": 100, "lrs": [1e-2, 1e-3, 1e-4]},
        },
        # Paper geometry and encoder at batch 8, a few steps; a small probe so the run ends quickly. bf16
        # autocast where the CPU has it natively (amp auto; float32 elsewhere) and channels-last: GIM's step took 1.80-1.84 s alone on 2 CPU cores with bf16 instructions
        # (2.16 s on a slower day, 2.19 s in a sweep; the reference: 4.94 s in float32), its loss at
        # initialisation unchanged (ln 17). Memory is measured over the 2 warm-up steps, time over the other
        # 4. train.amp=off measures float32, as the paper's Table 2.
        "memory": {
            "task": {"max_probe_train": 64, "max_test": 64},
            "train": {
                "epochs": 1,
                "steps_per_epoch": 6,
                "batch_size": 8,
                "warmup_steps": 2,
                "channels_last": True,
                "amp": "auto",
            },
            "eval": {"epochs": 1},
        },
    }

    @property
    def folder(self) -> Path:
        return data_root(self.data_root) / FOLDER

    def check_data(self) -> None:
        try:
            self.verify()
        except DataError as err:
            if not self.config.download:
                raise DataError(f"STL-10 under {self.folder}: {err}. Put the official stl10_binary/ folder "
                                "there (or pass --data-root), or set task.download=true") from None  # fmt: skip
            log.warning("STL-10 under %s: %s; downloading the official archive", self.folder, err)
            fetch(self.folder.parent)
            self.verify()

    def verify(self) -> None:
        for split in OFFICIAL_SIZES:
            check_split(self.folder, split, self.config.verify_sizes)

    def pretrain_split(self, supervised: bool) -> str:
        return "train" if supervised else "unlabeled"

    def validation_split(self) -> str:
        return "val"

    def load_splits(self) -> dict[str, Split]:
        self.verify()
        c, folder = self.config, self.folder
        train_x, train_y = BinaryImages(folder / "train_X.bin"), read_labels(folder / "train_y.bin")
        test = first(BinaryImages(folder / "test_X.bin"), read_labels(folder / "test_y.bin"), c.max_test)
        _, val_rows = fixed_split(len(train_x), VAL_FRACTION)
        return {
            "unlabeled": first(BinaryImages(folder / "unlabeled_X.bin"), None, c.max_pretrain),
            "train": first(train_x, train_y, c.max_pretrain),
            "probe_train": first(train_x, train_y, c.max_probe_train),
            "val": Split(train_x.subset(val_rows), train_y[val_rows]),  # type: ignore[arg-type]
            "test": test,
        }

    probe_splits = ("probe_train", "test")
