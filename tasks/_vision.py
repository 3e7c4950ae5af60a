"""Shared machinery of the image tasks: in-memory uint8 splits, batched augmentation, the class probe.

Images are kept as uint8 (N, H, W, C) tensors; a batch is gathered, moved to the training device and
transformed there as batched tensor ops (no torchvision): grayscale (ITU-R 601 luma, as PIL's "L"), a
random crop and a horizontal flip for training or a centre crop for evaluation, then normalisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

from bench import progress
from bench.data import DataError
from bench.interfaces import Batch, EvalConfig, FeatureFn, Metric, Task
from tasks._probe import linear_probe
from tasks._resnet import PatchResNet

log = logging.getLogger(__name__)
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class VisionConfig:
    """Geometry and encoder settings shared by the image tasks."""

    grayscale: bool = True
    """Convert to one channel first (the paper's setting)."""
    crop: int = 64
    """Side of the random (training) or centre (evaluation) crop."""
    flip: bool = True
    """Random horizontal flips for training."""
    pad: int = 0
    """Zero padding added on every side before the random training crop (CIFAR-style augmentation)."""
    patch: int = 16
    patch_stride: int = 8
    block: Literal["bottleneck", "basic"] = "bottleneck"
    stem_channels: int = 64
    blocks: tuple[int, ...] = (3, 4, 6)
    """Residual blocks per module (one module per entry)."""
    planes: tuple[int, ...] = (64, 128, 256)
    """Bottleneck width per module (output channels = 4 x planes for bottleneck blocks)."""
    mean: tuple[float, ...] = (0.4120,)
    """Normalisation mean, one value per channel after the grayscale step (reference constants)."""
    std: tuple[float, ...] = (0.2570,)


@dataclass
class Split:
    images: torch.Tensor
    """(N, H, W, C) uint8, or a lazy stand-in with ``len()`` whose ``[indices]`` gives such a tensor."""
    labels: torch.Tensor | None  # (N,) int64


class ImageTask(Task):
    """Base of the image tasks; subclasses implement ``load_splits`` and name their probe splits."""

    modality = "vision"
    label_sets = ("class",)
    num_classes = 10
    probe_splits = ("train", "test")
    """(probe training split, probe test split)."""

    def __init__(self, config, data_root, seed) -> None:
        super().__init__(config, data_root, seed)
        self._splits: dict[str, Split] | None = None
        if len(config.mean) != self.channels or len(config.std) != self.channels:
            raise ValueError(f"task.mean and task.std need {self.channels} value(s) for grayscale={config.grayscale}")

    @property
    def channels(self) -> int:
        return 1 if self.config.grayscale else 3

    def load_splits(self) -> dict[str, Split]:
        raise NotImplementedError

    @property
    def splits(self) -> dict[str, Split]:
        if self._splits is None:
            self._splits = self.load_splits()
        return self._splits

    def num_classes_of(self, label_set: str) -> int:
        return self.num_classes

    def build_encoder(self) -> PatchResNet:
        c = self.config
        return PatchResNet(self.channels, c.crop, c.patch, c.patch_stride, c.block, c.stem_channels, c.blocks, c.planes)

    def example_input(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, self.channels, self.config.crop, self.config.crop)

    def split_size(self, split: str) -> int:
        return len(self.splits[split].images)

    def batch(self, split, indices, device, generator, augment) -> Batch:
        data = self.splits[split]
        x = self.transform(data.images[indices].to(device), generator, augment)
        labels = {} if data.labels is None else {"class": data.labels[indices].to(device)}
        return Batch(x, labels)

    def prepare(self, raw: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, H, W, 3) RGB (or (B, H, W, 1) for a grayscale task), at the scale of the task's own
        images and at least ``task.crop`` pixels a side: centre crop and normalisation, as the test batches."""
        raw = torch.as_tensor(raw)
        channels = (1, 3) if self.config.grayscale else (3,)
        if raw.dtype != torch.uint8 or raw.ndim != 4 or raw.shape[-1] not in channels:
            want = " or ".join(f"(B, H, W, {c})" for c in channels)
            raise ValueError(f"{self.name}: images must be uint8 {want}, got {raw.dtype} {tuple(raw.shape)}; e.g. "
                             "torch.from_numpy(np.stack([np.asarray(PIL.Image.open(f).convert('RGB')) ...]))")  # fmt: skip
        if min(raw.shape[1:3]) < self.config.crop:
            raise ValueError(f"{self.name}: images of {raw.shape[1]}x{raw.shape[2]} pixels are smaller than the "
                             f"centre crop task.crop={self.config.crop}; resize them to the task's image size")  # fmt: skip
        return self.transform(raw, None, augment=False)

    def transform(self, images: torch.Tensor, gen: torch.Generator, augment: bool) -> torch.Tensor:
        """uint8 (B, H, W, C) -> normalised float (B, C', crop, crop) on the images' device."""
        x = images.float().div_(255)
        if self.config.grayscale and x.shape[-1] == 3:
            x = (x * torch.tensor(LUMA, device=x.device)).sum(dim=-1, keepdim=True)
        if augment and self.config.pad:
            x = torch.nn.functional.pad(x, (0, 0, self.config.pad, self.config.pad, self.config.pad, self.config.pad))
        x = crop(x, self.config.crop, gen if augment else None)  # (B, crop, crop, C')
        if augment and self.config.flip:
            flip = torch.rand(len(x), generator=gen, device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(2), x)
        mean = torch.tensor(self.config.mean, device=x.device)
        std = torch.tensor(self.config.std, device=x.device)
        return ((x - mean) / std).permute(0, 3, 1, 2).contiguous()

    def check_evaluation(self, cfg: EvalConfig) -> None:
        for split in self.probe_splits:
            data = self.splits[split]
            if data.labels is None or len(data.labels) == 0:
                raise DataError(f"{self.name}: the probe's {split} split is empty or unlabelled, so the evaluation "
                                "would fail after training; check the data (and task.max_* caps)")  # fmt: skip

    def evaluate(self, features: FeatureFn, cfg: EvalConfig, modules, device, seed) -> list[Metric]:
        train, test = self.probe_splits
        batch = cfg.feature_batch or cfg.batch_size
        train_f, train_y = self.extract(features, train, modules, device, batch)
        test_f, test_y = self.extract(features, test, modules, device, batch)
        metrics = []
        for m in modules:
            result = linear_probe(train_f[m], train_y, test_f[m], test_y, self.num_classes, cfg, seed, f"probe m{m}")
            metrics.append(Metric("class_acc", result.test_acc, module=m))
            metrics.append(Metric("class_probe_lr", result.lr, module=m))
        return metrics

    @torch.no_grad()
    def extract(self, features: FeatureFn, split: str, modules, device, batch_size: int) -> tuple[dict, torch.Tensor]:
        """Mean-pooled (over the patch grid) features of every module in ``modules`` for a whole split."""
        data, n = self.splits[split], self.split_size(split)
        chunks: dict[int, list[torch.Tensor]] = {m: [] for m in modules}
        for idx in progress.bar(iterable=torch.arange(n).split(batch_size), desc=f"features {split}", leave=False):
            reps = features(self.transform(data.images[idx].to(device), None, augment=False))
            for m in modules:
                chunks[m].append(reps[m].flatten(2).mean(dim=2).float().cpu())  # (B, C, G, G) -> (B, C)
        return {m: torch.cat(c) for m, c in chunks.items()}, data.labels


def draw(split: Split, n: int = 0, seed: int = 0) -> Split:
    """The first ``n`` images (all when 0) of ``split`` in a seeded random order, the same for every run: a
    cap never takes the first images of a split sorted by class."""
    order = torch.randperm(len(split.images), generator=torch.Generator().manual_seed(seed))
    return take(split, order[:n] if n else order)


def take(split: Split, rows: torch.Tensor) -> Split:
    return Split(split.images[rows], None if split.labels is None else split.labels[rows])


def crop(x: torch.Tensor, size: int, gen: torch.Generator | None) -> torch.Tensor:
    """Per-sample random crops (``gen`` given) or centre crops of (B, H, W, C) images."""
    b, h, w, _ = x.shape
    if size > h or size > w:
        raise ValueError(f"task.crop={size} is larger than the {h}x{w} images")
    if gen is None:
        top, left = (h - size) // 2, (w - size) // 2
        return x[:, top : top + size, left : left + size]
    tops = torch.randint(0, h - size + 1, (b,), generator=gen, device=x.device)
    lefts = torch.randint(0, w - size + 1, (b,), generator=gen, device=x.device)
    ar = torch.arange(size, device=x.device)
    rows, cols = tops[:, None] + ar, lefts[:, None] + ar  # (B, size)
    return x[torch.arange(b, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
