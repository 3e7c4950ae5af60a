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

from bench.interfaces import Metric

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


MATRIX_MAX = 2048
"""Up to this many positions, score every context against every target (one matmul) and pick the entries."""


def scores(queries: torch.Tensor, pool: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """[positive, negatives] scores (P, 1 + N) of contexts (P, C) against targets (P, C), negatives ``idx``.

    Both ways give the same numbers: for small P the (P, P) matrix of all scores, read at (p, p) and (p, idx)
    (dense maths, no copy of negative vectors, a cheap backward); for large P, gathered negative vectors.
    """
    if len(pool) <= MATRIX_MAX:
        everything = queries @ pool.t()  # (P, P)
        return torch.cat([everything.diagonal().unsqueeze(1), everything.gather(1, idx)], dim=1)
    positive = (queries * pool).sum(dim=1, keepdim=True)  # (P, 1)
    neg = pool[idx]  # (P, N, C)
    return torch.cat([positive, torch.bmm(neg, queries.unsqueeze(2)).squeeze(2)], dim=1)  # (P, N, C) @ (P, C, 1)


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
        pool = ztwk.permute(0, 2, 3, 1).reshape(b * h * w, c)  # (P, C): every target position of the batch
        queries = ctx.permute(0, 2, 3, 1).reshape(b * h * w, c)  # (P, C), position p = (b, row, col)
        idx = torch.randint(pool.shape[0], (b * h * w * negatives,), device=pool.device).view(-1, negatives)
        logits = scores(queries, pool, idx)  # (P, 1 + N)
        losses.append(-F.log_softmax(logits.float(), dim=-1)[:, 0].mean())
    if not losses:
        raise ValueError(f"a grid of {height} rows is too small for any prediction step")
    return torch.stack(losses).mean()


def offset_metric(offset: Offset) -> Metric:
    """The offset in use as a result row: rows skipped beyond k (paper 0, reference 1)."""
    return Metric("prediction_skip_rows", float(row_offset(1, offset) - 1))


def chance_loss(negatives: int) -> float:
    """The InfoNCE loss of an uninformed model: ln(1 + negatives)."""
    return math.log(1 + negatives)
