"""CIFAR-10 at half the STL-10 geometry: 32x32 images, a 7x7 grid of 8x8 patches with stride 4.

Reads, under ``--data-root`` (or ``./data``), either the official python batches
(``cifar-10-batches-py/data_batch_{1..5}``, ``test_batch``) or a class-folder layout
(``train/<class>/*.jpg|png`` with optional ``test/<class>/...``), directly or inside a ``cifar10/`` folder.
When nothing is found and the machine is online, the official archive is downloaded and verified (md5 as
published on the CIFAR-10 page). Decoded class folders are cached as a .npz next to them (or under
~/.cache/bench when that is read-only) so JPEGs are decoded once.

Evaluation: the probe trains on ``train`` and tests on ``test`` when present, else on a validation split
carved from ``train`` (``task.eval_split`` chooses explicitly). The carve and the caps (``max_pretrain``,
``max_probe_train``) are seeded random draws, the same for every run, whatever the order on disk.
"""

from __future__ import annotations

import logging
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from bench.data import DataError, data_root, download
from bench.registry import TASKS
from tasks._image_folders import load_class_folders
from tasks._vision import ImageTask, Split, VisionConfig, draw, take

log = logging.getLogger(__name__)
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Config(VisionConfig):
    crop: int = 32
    pad: int = 4
    patch: int = 8
    patch_stride: int = 4
    block: Literal["bottleneck", "basic"] = "basic"
    stem_channels: int = 32
    blocks: tuple[int, ...] = (1, 1, 1)
    planes: tuple[int, ...] = (32, 64, 128)
    mean: tuple[float, ...] = (0.4809,)
    std: tuple[float, ...] = (0.2392,)
    eval_split: Literal["auto", "test", "val"] = "auto"
    """auto: the test split when present, else a validation split carved from train."""
    val_size: int = 5000
    """Images of train held out as the validation split (when it is used)."""
    max_pretrain: int = 0
    """Use at most this many training images for pretraining (0 = all)."""
    max_probe_train: int = 0
    """Use at most this many training images to train the probe (0 = all)."""
    download: bool = True


@TASKS.register("cifar10")
class Cifar10(ImageTask):
    description = "CIFAR-10 (real images, 32x32 grayscale, 7x7 grid of 8x8 patches); official batches or class folders"
    Config = Config
    presets = {
        "smoke": {
            "task": {"max_pretrain": 64, "max_probe_train": 64, "val_size": 32, "stem_channels": 8, "planes": [8, 8, 8]},
            "train": {"epochs": 1, "batch_size": 16, "steps_per_epoch": 2, "warmup_steps": 1},
            "eval": {"epochs": 2},
        },
        # A few minutes on 2 CPU cores: one epoch over 8,000 images at batch 16 (500 steps; small batches learn
        # more per second here), bf16 autocast where the CPU has it natively (amp auto, else float32) and
        # channels-last; the probe trains on 4,000 images and tests on 2,500 held out of train (or on test/).
        "small": {
            "task": {"max_pretrain": 8000, "max_probe_train": 4000, "val_size": 2500},
            "train": {"epochs": 1, "batch_size": 16, "val_batches": 4, "amp": "auto", "channels_last": True},
            "eval": {"epochs": 30, "lrs": [3e-3, 1e-3]},
        },
        "paper": {"train": {"epochs": 300, "batch_size": 32}, "eval": {"epochs": 100, "lrs": [1e-2, 1e-3, 1e-4]}},
        "memory": {"train": {"epochs": 1, "steps_per_epoch": 6, "batch_size": 8, "warmup_steps": 2}},
    }

    def check_data(self) -> None:
        self.splits  # loads (and, when online, downloads) or raises a DataError

    def load_splits(self) -> dict[str, Split]:
        raw = self.read_raw()
        c = self.config
        use_test = "test" in raw and c.eval_split != "val"
        if c.eval_split == "test" and "test" not in raw:
            raise DataError("task.eval_split=test but the CIFAR-10 data found has no test split")
        # train in a seeded random order (the same for every run): class folders list their images class by
        # class, so the validation carve and the caps take random draws, never the first classes.
        train = draw(raw["train"])
        splits: dict[str, Split] = {}
        if use_test:
            splits["test"] = raw["test"]
        else:
            splits["test"] = take(train, torch.arange(min(c.val_size, len(train.images))))
            train = take(train, torch.arange(min(c.val_size, len(train.images)), len(train.images)))
        splits["train"] = cap(train, c.max_pretrain)
        splits["probe_train"] = cap(train, c.max_probe_train)
        return splits

    probe_splits = ("probe_train", "test")

    def validation_split(self) -> str:
        return "test"

    def read_raw(self) -> dict[str, Split]:
        root = data_root(self.data_root)
        for base in (root, root / "cifar10"):
            if (base / "cifar-10-batches-py").is_dir():
                return read_batches(base / "cifar-10-batches-py")
            if (base / "train").is_dir():
                return load_class_folders(base, CLASSES)
        if self.config.download:
            archive = download(URL, root / "cifar-10-python.tar.gz", md5=MD5)
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
            return read_batches(root / "cifar-10-batches-py")
        raise DataError(f"no CIFAR-10 data under {root} (looked for cifar-10-batches-py/ and train/<class>/)")


def cap(split: Split, n: int) -> Split:
    """The first ``n`` images of a split already in random order (``draw``)."""
    return split if not n or n >= len(split.images) else take(split, torch.arange(n))


def read_batches(folder: Path) -> dict[str, Split]:
    """The official python batches: rows of 3072 bytes, channel-major (1024 R, 1024 G, 1024 B)."""
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    out = {}
    for split, files in names.items():
        present = [folder / f for f in files if (folder / f).is_file()]
        if not present:
            continue
        if len(present) != len(files):
            log.warning("CIFAR-10 %s: only %d of %d batch files found in %s", split, len(present), len(files), folder)
        images, labels = [], []
        for path in present:
            try:
                with path.open("rb") as fh:
                    batch = pickle.load(fh, encoding="bytes")
                data = torch.as_tensor(batch[b"data"]).view(-1, 3, 32, 32).permute(0, 2, 3, 1)
            except Exception as err:
                raise DataError(f"{path} is not a readable CIFAR-10 batch ({err}); delete it and download again") from None
            images.append(data)
            labels.append(torch.as_tensor(batch[b"labels"], dtype=torch.long))
        out[split] = Split(torch.cat(images).contiguous(), torch.cat(labels))
    if "train" not in out:
        raise DataError(f"{folder} holds no data_batch_* files")
    return out
