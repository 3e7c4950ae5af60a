"""Greedy supervised baseline: every module trained with its own linear classifier, gradient-isolated.

A per-module learner (``bench.local``): each module's input is the previous module's output detached and
each module's cross-entropy is back-propagated before the next module runs, with its own Adam, so no
gradient crosses a module boundary and only one module's graph is alive at a time (GIM_PROTOCOL.md 4.3:
``--loss 1`` with 3 splits).
Heads as in methods/_heads.py: pooled for clip/image labels, per frame (time axis pooled to T) for frames.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.interfaces import Batch, ModuleOutput
from bench.local import LocalMethod
from bench.registry import METHODS
from methods._heads import head_loss, label_set, num_classes
from methods.supervised import Config, Supervised  # the same settings and per-preset learning rates


@METHODS.register("greedy_supervised")
class GreedySupervised(LocalMethod):
    description = "greedy supervised: each module its own linear classifier, gradient-isolated"
    Config = Config
    supervised = True
    presets = Supervised.presets

    def __init__(self, config: Config, encoder, task, device: torch.device) -> None:
        self.target = label_set(task, config.target)
        self.classes = num_classes(task, self.target)
        super().__init__(config, encoder, task, device)

    def make_head(self, m: int, out: ModuleOutput) -> nn.Module:
        return nn.Linear(out.rep.shape[1], self.classes)

    def module_loss(self, m: int, out: ModuleOutput, batch: Batch) -> torch.Tensor:
        return head_loss(self.heads[m], out.rep, batch.labels[self.target])

    def validates(self, batch: Batch) -> bool:
        return self.target in batch.labels
