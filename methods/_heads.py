"""Shared pieces of the supervised baselines: the label set, sizing heads, and a linear head's loss.

Label conventions (tasks/_audio.py, tasks/_vision.py): clip-level labels are LongTensor (B,) and the
representation is mean-pooled over its grid or time axis; frame-level labels are LongTensor (B, T) aligned
with the last module's frames, -100 where unknown, and the representation's time axis is average-pooled to
T frames (the identity on the last module; intermediate modules run at higher frame rates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.interfaces import Task
from bench.local import probe_outputs  # noqa: F401  (re-exported for the methods)

IGNORE = -100


def label_set(task: Task, name: str) -> str:
    """``name`` if the task has that label set, else an error; empty means the task's first label set."""
    sets = tuple(task.label_sets)
    if not sets:
        raise ValueError(f"task {task.name} has no label sets: a supervised method cannot train on it")
    if not name:
        return sets[0]
    if name not in sets:
        raise ValueError(f"method.target={name!r} is not a label set of task {task.name}; choose from {sets}")
    return name


def num_classes(task: Task, name: str) -> int:
    return int(task.num_classes_of(name))  # type: ignore[attr-defined]


def logits(head: nn.Linear, rep: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class scores shaped for cross-entropy against ``labels``: (B, classes) or (B, classes, T)."""
    if labels.dim() == 1:  # one label per clip or image
        return head(rep.flatten(2).mean(dim=2))  # (B, C, ...) -> (B, C) -> (B, classes)
    frames = F.adaptive_avg_pool1d(rep, labels.shape[1])  # (B, C, L) -> (B, C, T)
    return head(frames.transpose(1, 2)).transpose(1, 2)  # (B, T, C) -> (B, T, classes) -> (B, classes, T)


def head_loss(head: nn.Linear, rep: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the known labels (zero, with a graph, when a batch has none)."""
    scores = logits(head, rep, labels).float()
    if not bool((labels != IGNORE).any()):
        return scores.sum() * 0.0
    return F.cross_entropy(scores, labels, ignore_index=IGNORE)
