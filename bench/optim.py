"""The optimiser every built-in method uses (and ``LocalMethod``'s default): Adam, with PyTorch's fused kernel
where it has one."""

from __future__ import annotations

from collections.abc import Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")


def adam(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam (default betas, as the reference). Fused: one pass over all parameters per step instead of a
    handful of kernels per tensor; the same update up to rounding."""
    params = list(params)
    fused = bool(params) and all(p.device.type in FUSED_DEVICES for p in params)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
