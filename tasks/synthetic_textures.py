"""The embedded default vision task: procedurally generated "texton chain" images, no download needed.

Each image is a grid of cells (8x8 pixels); each cell shows one of a few textons (an oriented grating with
a random phase and contrast, plus pixel noise). Along every column the textons follow a class-specific
permutation: the cell below a texton ``t`` shows ``perm_c(t)``. The first row is uniformly random, so every
class has the same texton frequencies and an image's texture statistics (what a random network's pooled
features mostly report) say almost nothing about its class; the class is carried only by what each cell
predicts about the cell below it. That is exactly what GIM's InfoNCE learns to encode (predict rows below
from rows above), so a contrastive method has something to find and raw pixels do not already solve it.
The data depend on ``task.data_seed`` only (not on the run's seed), so every method sees the same images.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch

from bench.registry import TASKS
from tasks._vision import ImageTask, Split, VisionConfig


@dataclass(frozen=True)
class Config(VisionConfig):
    n_train: int = 4096
    """Images for pretraining and for training the probe."""
    n_test: int = 1024
    """Images for testing the probe (and the validation loss)."""
    image_size: int = 40
    cell: int = 8
    textons: int = 4
    classes: int = 10
    noise: float = 0.35
    """Pixel noise standard deviation relative to the grating amplitude."""
    data_seed: int = 0
    crop: int = 32
    patch: int = 8
    patch_stride: int = 4
    block: Literal["bottleneck", "basic"] = "basic"
    stem_channels: int = 16
    blocks: tuple[int, ...] = (1, 1, 1)
    planes: tuple[int, ...] = (16, 32, 64)
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.2,)



@TASKS.register("synthetic_textures")
class SyntheticTextures(ImageTask):
    description = "embedded default: procedurally generated texton-chain images, 10 classes (no download)"
    Config = Config
    needs_data = False
    presets = {
        "smoke": {
            "task": {"n_train": 64, "n_test": 32, "stem_channels": 8, "planes": [8, 8, 8]},
            "train": {"epochs": 1, "batch_size": 16, "steps_per_epoch": 2, "warmup_steps": 1, "val_batches": 1},
            "eval": {"epochs": 2},
        },
        "small": {"train": {"epochs": 3, "batch_size": 32}, "eval": {"epochs": 40, "lrs": [3e-3, 1e-3, 3e-4]}},
        "paper": {"task": {"n_train": 20000, "n_test": 4000}, "train": {"epochs": 20, "batch_size": 32}},
        "memory": {"train": {"epochs": 1, "steps_per_epoch": 6, "batch_size": 8, "warmup_steps": 2}},
    }

    @property
    def num_classes(self) -> int:
        return self.config.classes

    def load_splits(self) -> dict[str, Split]:
        c = self.config
        perms = class_permutations(c.textons, c.classes, c.data_seed)
        return {
            "train": render(c, perms, c.n_train, torch.Generator().manual_seed(c.data_seed * 2 + 1)),
            "test": render(c, perms, c.n_test, torch.Generator().manual_seed(c.data_seed * 2 + 2)),
        }

    def validation_split(self) -> str:
        return "test"


def class_permutations(textons: int, classes: int, seed: int) -> torch.Tensor:
    """``classes`` distinct permutations of the textons, (classes, textons)."""
    every = list(itertools.permutations(range(textons)))
    if classes > len(every):
        raise ValueError(f"{textons} textons allow at most {len(every)} classes, not {classes}")
    pick = torch.randperm(len(every), generator=torch.Generator().manual_seed(seed))[:classes]
    return torch.tensor([every[i] for i in pick.tolist()])


def render(c: Config, perms: torch.Tensor, n: int, gen: torch.Generator) -> Split:
    """n images (N, S, S, 1) uint8 with their class labels."""
    cells = c.image_size // c.cell
    labels = torch.randint(0, len(perms), (n,), generator=gen)
    rows = [torch.randint(0, c.textons, (n, cells), generator=gen)]
    for _ in range(cells - 1):  # the cell below texton t shows perm[t]
        rows.append(torch.gather(perms[labels], 1, rows[-1]))
    tex = torch.stack(rows, dim=1)  # (N, cells, cells) texton per cell
    phase = torch.rand(n, cells, cells, generator=gen) * 2 * math.pi
    contrast = 0.5 + 0.5 * torch.rand(n, cells, cells, generator=gen)
    angle = tex.float() * math.pi / c.textons  # orientations 0, 45, 90, 135 degrees for 4 textons
    ys, xs = torch.meshgrid(torch.arange(c.image_size), torch.arange(c.image_size), indexing="ij")
    cy, cx = ys // c.cell, xs // c.cell  # (S, S) cell of every pixel

    def per_pixel(t: torch.Tensor) -> torch.Tensor:
        return t[:, cy, cx]  # (N, cells, cells) -> (N, S, S)

    theta = per_pixel(angle)
    wave = torch.sin(2 * math.pi * 0.25 * (xs * torch.cos(theta) + ys * torch.sin(theta)) + per_pixel(phase))
    img = 0.5 + 0.3 * per_pixel(contrast) * (wave + c.noise * torch.randn(n, c.image_size, c.image_size, generator=gen))
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8).unsqueeze(-1)
    return Split(images, labels)
