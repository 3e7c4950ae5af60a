"""CPC's autoregressive context network over a patch grid: a stack of gated PixelCNN-style layers.

As described for the reference (GIM_PROTOCOL.md 4.1): every layer has a vertical 3x3 convolution whose
kernel rows below the centre are masked (output row i sees input rows <= i), a 1x1 vertical-to-horizontal
convolution, a horizontal 1x3 convolution, ``tanh(a) * sigmoid(b)`` gates and a 1x1 horizontal output;
the first layer has no residual paths, the others add their inputs to both streams; a final 1x1
convolution maps the horizontal stream back to the encoder's channels. The context at grid position
(i, j) therefore depends only on rows <= i (all columns of row i), so predicting rows below stays honest.

Size: ``width`` (0 = the encoder's channels) and ``layers``. At the paper's 1024 channels, width 1024 and
4 layers this is 122.7 M parameters (the reference reports about 128 M); the masked kernel rows are kept
as parameters, as in a masked convolution, so memory matches a 3x3 layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RowMaskedConv2d(nn.Conv2d):
    """A k x k convolution (k odd) that ignores input rows below the output row."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3) -> None:
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2)
        mask = torch.ones_like(self.weight)
        mask[:, :, kernel // 2 + 1 :, :] = 0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def gate(x: torch.Tensor) -> torch.Tensor:
    """(B, 2W, H, W') -> (B, W, H, W'): tanh of the first half times sigmoid of the second."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    def __init__(self, width: int, residual: bool) -> None:
        super().__init__()
        self.vertical = RowMaskedConv2d(width, 2 * width)
        self.vertical_to_horizontal = nn.Conv2d(2 * width, 2 * width, 1)
        self.horizontal = nn.Conv2d(width, 2 * width, (1, 3), padding=(0, 1))
        self.horizontal_out = nn.Conv2d(width, width, 1)
        self.residual = residual

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v_pre = self.vertical(v)  # (B, 2W, G, G)
        h_pre = self.horizontal(h) + self.vertical_to_horizontal(v_pre)  # (B, 2W, G, G)
        v_out, h_out = gate(v_pre), self.horizontal_out(gate(h_pre))  # (B, W, G, G) each
        if self.residual:
            v_out, h_out = v_out + v, h_out + h
        return v_out, h_out


class PixelCNN(nn.Module):
    """(B, C, G, G) -> context (B, C, G, G); position (i, j) sees only rows <= i of the input."""

    def __init__(self, channels: int, width: int = 0, layers: int = 4) -> None:
        super().__init__()
        width = width or channels
        self.inp = nn.Identity() if width == channels else nn.Conv2d(channels, width, 1)
        self.layers = nn.ModuleList(GatedLayer(width, residual=i > 0) for i in range(layers))
        self.out = nn.Conv2d(width, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = h = self.inp(x)
        for layer in self.layers:
            v, h = layer(v, h)
        return self.out(h)
