"""A tiny STL-10 copy in the official binary layout (deterministic), for tests and quick local runs.

Images are written column-major exactly as the official files are (per image: channel, then column, then
row); labels are bytes 1..10. Pixel (row r, column c, channel ch) of image i is ``pattern(i, r, c, ch)``, so
a reader's decoding can be checked against a known image. Run as a script to make a copy for the CLI:
``python tests/fixtures_stl10.py /tmp/stl10_tiny`` then ``bench run --task stl10 --data-root /tmp/stl10_tiny
--set task.verify_sizes=false ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SIDE = 96


def pattern(index: int) -> np.ndarray:
    """Image ``index`` as (H, W, C) uint8: row gradient in red, column gradient in green, a mix in blue."""
    r, c = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    red = (2 * r + index) % 256
    green = (2 * c + 3 * index) % 256
    blue = (r + c + 5 * index) % 256
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def noisy(index: int, rng: np.random.Generator) -> np.ndarray:
    """The pattern plus noise, so that crops differ and a contrastive loss has something to fit."""
    noise = rng.integers(-20, 21, size=(SIDE, SIDE, 3))
    return np.clip(pattern(index).astype(np.int64) + noise, 0, 255).astype(np.uint8)


def write_images(path: Path, images: list[np.ndarray]) -> None:
    stack = np.stack(images)  # (N, H, W, C)
    path.write_bytes(np.ascontiguousarray(stack.transpose(0, 3, 2, 1)).tobytes())  # -> (N, C, W, H) on disk


def write_stl10(root: Path, unlabeled: int = 48, train: int = 40, test: int = 30, exact: bool = True) -> Path:
    """Write ``root/stl10_binary/`` with that many images per split; ``exact`` = the plain pattern (no noise)."""
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    offset = 0
    for split, n in (("unlabeled", unlabeled), ("train", train), ("test", test)):
        ids = range(offset, offset + n)
        write_images(folder / f"{split}_X.bin", [pattern(i) if exact else noisy(i, rng) for i in ids])
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes(bytes(1 + (i % 10) for i in range(n)))
        offset += n
    return Path(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--unlabeled", type=int, default=256)
    parser.add_argument("--train", type=int, default=128)
    parser.add_argument("--test", type=int, default=128)
    args = parser.parse_args()
    write_stl10(args.root, args.unlabeled, args.train, args.test, exact=False)


if __name__ == "__main__":
    main()
