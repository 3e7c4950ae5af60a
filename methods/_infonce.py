"""InfoNCE over a patch grid (the vision form of GIM and CPC), as a small pure function.

For each k = 1..K the context at grid row i predicts the target at row i + offset(k), through a bilinear
map W_k (a 1x1 convolution without bias). The positive is the target at the same column and image; the
negatives are drawn uniformly with replacement from all W_k-transformed target positions of the batch
(other images and other positions of the same image, as in the reference code). The loss of each k is the
mean cross-entropy of the positive among [positive, negatives]; the total is the mean over k, so every k
weighs the same. At initialisation it is about ln(1 + negatives).

Deliberate difference from the reference code: ``log_softmax`` instead of ``log(softmax + 1e-11)``; they
differ only when a probability underflows (the reference caps each term at about 25.3).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Offset = Literal["paper", "reference"]


def row_offset(k: int, offset: Offset) -> int:
    """Rows between context and target for step k: k as the paper describes, k + 1 as the code does."""
    return k if offset == "paper" else k + 1


class GridPredictors(nn.Module):
    """W_1..W_K: one 1x1 convolution per prediction step, mapping target channels to context channels."""

    def __init__(self, target_channels: int, context_channels: int, steps: int) -> None:
        super().__init__()
        self.steps = nn.ModuleList(
            nn.Conv2d(target_channels, context_channels, kernel_size=1, bias=False) for _ in range(steps)
        )

    def forward(self, k: int, target: torch.Tensor) -> torch.Tensor:
        return self.steps[k - 1](target)


def grid_infonce(
    context: torch.Tensor,
    target: torch.Tensor,
    predictors: GridPredictors,
    negatives: int,
    offset: Offset = "paper",
) -> torch.Tensor:
    """Mean over k of the InfoNCE loss on a (B, C, H, W) grid; uses the global RNG for the negatives."""
    height = context.shape[2]
    losses = []
    for k in range(1, len(predictors.steps) + 1):
        shift = row_offset(k, offset)
        if shift >= height:
            break
        ztwk = predictors(k, target[:, :, shift:, :])  # (B, C, H', W) with H' = H - shift
        ctx = context[:, :, : height - shift, :]  # (B, C, H', W)
        b, c, h, w = ctx.shape
        positive = (ctx * ztwk).sum(dim=1)  # (B, H', W)
        pool = ztwk.permute(0, 2, 3, 1).reshape(b * h * w, c)  # every target position of the batch
        idx = torch.randint(pool.shape[0], (b * h * w * negatives,), device=pool.device)
        neg = pool[idx].view(b, h, w, negatives, c)  # (B, H', W, N, C)
        neg_scores = torch.einsum("bchw,bhwnc->bhwn", ctx, neg)
        logits = torch.cat([positive.unsqueeze(-1), neg_scores], dim=-1)  # (B, H', W, 1 + N)
        losses.append(-F.log_softmax(logits.float(), dim=-1)[..., 0].mean())
    if not losses:
        raise ValueError(f"a grid of {height} rows is too small for any prediction step")
    return torch.stack(losses).mean()


def chance_loss(negatives: int) -> float:
    """The InfoNCE loss of an uninformed model: ln(1 + negatives)."""
    return math.log(1 + negatives)
