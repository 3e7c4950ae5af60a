"""Class-folder image datasets (``SPLIT/<class>/*.jpg|png``), decoded once with Pillow and cached as .npz."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import torch

from bench import progress
from bench.data import DataError, cache_dir
from tasks._vision import Split

log = logging.getLogger(__name__)
EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(folder: Path, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{folder} has class folders {unknown} that are not among {list(classes)}")
    files = []
    for label, name in enumerate(classes):
        if (folder / name).is_dir():
            files += [(p, label) for p in sorted((folder / name).iterdir()) if p.suffix.lower() in EXTENSIONS]
    if not files:
        raise DataError(f"{folder} holds no .jpg/.png images in class folders")
    return files


def decode(files: list[tuple[Path, int]], desc: str) -> Split:
    from PIL import Image

    images, labels = [], []
    for path, label in progress.bar(iterable=files, desc=desc, unit="img"):
        try:
            with Image.open(io.BytesIO(path.read_bytes())) as img:
                images.append(np.asarray(img.convert("RGB")))
        except Exception as err:
            raise DataError(f"cannot decode {path} ({err}); replace or delete the file") from None
        labels.append(label)
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise DataError(f"images in {files[0][0].parent.parent} have different sizes {sorted(shapes)[:3]}")
    return Split(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long))


def load_split(folder: Path, classes: tuple[str, ...]) -> Split:
    files = list_images(folder, classes)
    key = hashlib.sha256("\n".join(f"{p}:{os.path.getsize(p)}" for p, _ in files).encode()).hexdigest()[:16]
    cached = cache_dir(folder.parent) / f"{folder.name}_{key}.npz"
    if cached.is_file():
        with np.load(cached) as data:
            return Split(torch.from_numpy(data["x"]), torch.from_numpy(data["y"]))
    split = decode(files, f"decode {folder.name}")
    tmp = cached.with_name(cached.name + ".tmp.npz")
    np.savez(tmp, x=split.images.numpy(), y=split.labels.numpy())
    tmp.replace(cached)
    log.info("decoded %d images of %s once; cached at %s", len(files), folder, cached)
    return split


def load_class_folders(root: Path, classes: tuple[str, ...]) -> dict[str, Split]:
    return {s: load_split(root / s, classes) for s in ("train", "test") if (root / s).is_dir()}
