"""The patch-grid encoder family: a pre-activation ResNet without batch norm, split into modules.

As in the reference (GIM_PROTOCOL.md 1.2-1.3): the image is cut into a grid of overlapping patches, every
patch runs through the network on its own, module 0 is a stem convolution (kernel 5, stride 1, padding 2,
no max-pool) plus the first stage of blocks, and every further module is one more stage whose first block
has stride 2. Each module's representation is every patch's feature map mean-pooled and laid out on the
patch grid: (B*G*G, C, h, w) -> (B, C, G, G). Every convolution has a bias; there is no normalisation.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.interfaces import ModularEncoder, ModuleOutput


class PreActBottleneck(nn.Module):
    """ReLU -> 1x1 -> ReLU -> 3x3 (stride) -> ReLU -> 1x1 (4x planes); shortcut from the pre-activation."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1)
        self.conv3 = nn.Conv2d(planes, out, 1)
        self.shortcut = nn.Conv2d(in_channels, out, 1, stride=stride) if stride != 1 or in_channels != out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(x)
        skip = self.shortcut(a) if self.shortcut is not None else x
        # In-place ReLUs on fresh convolution outputs: no extra activation kept for the backward.
        return self.conv3(F.relu(self.conv2(F.relu(self.conv1(a), inplace=True)), inplace=True)) + skip


class PreActBasic(nn.Module):
    """ReLU -> 3x3 (stride) -> ReLU -> 3x3; shortcut from the pre-activation when the shape changes."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, planes, 1, stride=stride) if stride != 1 or in_channels != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(x)
        skip = self.shortcut(a) if self.shortcut is not None else x
        return self.conv2(F.relu(self.conv1(a), inplace=True)) + skip


BLOCKS = {"bottleneck": PreActBottleneck, "basic": PreActBasic}


class SpatialMean(torch.autograd.Function):
    """Mean over each map's positions, (N, C, h, w) -> (N, C, 1, 1), with a one-pass backward.

    The forward is average pooling over the whole map: under bf16 autocast it stays in bf16, where a
    ``mean()`` would first copy z to float32. The backward writes the broadcast gradient g / (h * w) once,
    in z's memory format, so the convolution backward reads it without a copy; ``avg_pool2d``'s own
    backward gives the same values but took 37 ms instead of 2.4 ms on CPU for a (392, 256, 16, 16) bf16
    map (profiled); GIM's step at the stl10 memory preset went from 2.36 to 2.16 s (A/B medians).
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        channels_last = z.dim() == 4 and not z.is_contiguous() and z.is_contiguous(memory_format=torch.channels_last)
        ctx.layout = (z.shape, torch.channels_last if channels_last else torch.contiguous_format)
        return F.avg_pool2d(z, z.shape[2:])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        shape, memory_format = ctx.layout
        out = torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=memory_format)
        return out.copy_((grad / (shape[2] * shape[3])).expand(shape))


def patchify(x: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """(B, C, S, S) -> (B*G*G, C, patch, patch), ordered image, then patch row, then patch column."""
    b, c = x.shape[:2]
    grid = x.unfold(2, patch, stride).unfold(3, patch, stride)  # (B, C, G, G, P, P)
    g = grid.shape[2]
    return grid.permute(0, 2, 3, 1, 4, 5).reshape(b * g * g, c, patch, patch)


class PatchResNet(ModularEncoder):
    """Modules of pre-activation residual stages over a patch grid; module 0 also holds the stem conv."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        patch: int,
        patch_stride: int,
        block: Literal["bottleneck", "basic"],
        stem_channels: int,
        blocks: tuple[int, ...],
        planes: tuple[int, ...],
    ) -> None:
        super().__init__()
        if len(blocks) != len(planes):
            raise ValueError(f"task.blocks {blocks} and task.planes {planes} must have the same length")
        self.patch, self.patch_stride = patch, patch_stride
        self.grid = (image_size - patch) // patch_stride + 1
        kind = BLOCKS[block]
        stages, channels, self._layers = [], stem_channels, []
        for m, (n, p) in enumerate(zip(blocks, planes, strict=True)):
            layers: list[nn.Module] = [nn.Conv2d(in_channels, stem_channels, 5, padding=2)] if m == 0 else []
            for i in range(n):
                layers.append(kind(channels, p, stride=2 if (m > 0 and i == 0) else 1))
                channels = p * kind.expansion
            stages.append(nn.Sequential(*layers))
            stem = f"conv5x5({in_channels}->{stem_channels}) + " if m == 0 else ""
            self._layers.append(f"{stem}{n} x {block}(planes {p}) -> {channels} ch")
        self.blocks = nn.ModuleList(stages)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.patch, self.patch_stride)

    def module_output(self, m: int, z_in: torch.Tensor, rep_in: torch.Tensor | None, z: torch.Tensor) -> ModuleOutput:
        g = self.grid
        pooled = SpatialMean.apply(z).flatten(1)  # (B*G*G, C, h, w) -> (B*G*G, C)
        rep = pooled.view(-1, g, g, pooled.shape[1]).permute(0, 3, 1, 2)  # -> (B, C, G, G)
        return ModuleOutput(z=z, rep=rep, target=rep)

    def describe_layers(self, m: int) -> str:
        return self._layers[m]
