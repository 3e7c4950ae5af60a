"""The linear probe shared by every task: a linear classifier on frozen, cached features.

Features are extracted once (no gradient), standardised with the training statistics, and a linear layer is
trained with Adam. With several learning rates, each is trained on a deterministic (1 - val_fraction) part
of the training data and scored on the rest; the best is retrained on all the training data and the test
set is evaluated once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench import progress
from bench.interfaces import EvalConfig

log = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    test_acc: float
    lr: float
    val_acc: float | None


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic (train, validation) split of range(n)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction)))
    return perm[n_val:], perm[:n_val]


def fit(x: torch.Tensor, y: torch.Tensor, classes: int, lr: float, cfg: EvalConfig, seed: int) -> nn.Linear:
    """Train a linear classifier on (N, C) features and (N,) labels."""
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(x.shape[1], classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head.reset_parameters()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(cfg.batch_size):
            loss = F.cross_entropy(head(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return head


@torch.no_grad()
def accuracy(head: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((head(x).argmax(dim=1) == y).float().mean()) if len(y) else float("nan")


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
    classes: int, cfg: EvalConfig, seed: int, name: str = "probe",
) -> ProbeResult:  # fmt: skip
    """Choose the learning rate on a validation split (if several), refit on all training data, test once."""
    train_x, test_x = standardise(train_x.float(), test_x.float())
    best_lr, best_val = cfg.lrs[0], None
    if len(cfg.lrs) > 1:
        fit_idx, val_idx = split_indices(len(train_x), cfg.val_fraction, seed)
        x_fit, x_val = standardise(train_x[fit_idx], train_x[val_idx])
        for lr in progress.bar(iterable=cfg.lrs, desc=f"{name} lr", leave=False):
            val = accuracy(fit(x_fit, train_y[fit_idx], classes, lr, cfg, seed), x_val, train_y[val_idx])
            log.info("%s: lr %g -> validation accuracy %.4f", name, lr, val)
            if best_val is None or val > best_val:
                best_lr, best_val = lr, val
    head = fit(train_x, train_y, classes, best_lr, cfg, seed)
    result = ProbeResult(accuracy(head, test_x, test_y), best_lr, best_val)
    log.info("%s: lr %g, test accuracy %.4f", name, best_lr, result.test_acc)
    return result
