"""Tiny copies of each data task's files in their real formats, by task name, for the contract tests.

``FIXTURES[task](root)`` writes the files under ``root`` and returns (data_root, overrides). A task that needs
data and has no entry here gets its evaluation contract test skipped with that reason: add a writer here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.fixtures_audio import write_fsdd, write_librispeech
from tests.fixtures_stl10 import write_stl10

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
OFFLINE = {"task": {"download": False}}


def cifar_class_folders(root: Path, per_class: dict[str, int]) -> Path:
    """``root/cifar10/<split>/<class>/*.png``: random 32x32 RGB images (PNG, written with Pillow)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for c, name in enumerate(CIFAR_CLASSES):
            folder = root / "cifar10" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(folder / f"{c}_{i}.png")
    return root


FIXTURES: dict[str, Callable[[Path], tuple[Path, dict]]] = {
    "stl10": lambda root: (write_stl10(root, unlabeled=16, train=20, test=10, exact=False), OFFLINE),
    "cifar10": lambda root: (cifar_class_folders(root, {"train": 8, "test": 2}), OFFLINE),
    "fsdd": lambda root: (write_fsdd(root), OFFLINE),
    "librispeech": lambda root: (write_librispeech(root) and root, {"task": {"download": False, "speaker_split": "lists"}}),
}
