"""Greedy supervised baseline: every module trained with its own linear classifier, gradient-isolated.

Each module's input is the previous module's output detached (``iter_modules(detach=True)``) and each
module's cross-entropy is back-propagated before the next module runs, so no gradient crosses a module
boundary and only one module's graph is alive at a time (GIM_PROTOCOL.md 4.3: ``--loss 1`` with 3 splits).
Heads as in methods/_heads.py: pooled for clip/image labels, per frame (time axis pooled to T) for frames.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.interfaces import Batch, Method
from bench.registry import METHODS
from methods._heads import head_loss, label_set, num_classes, probe_outputs
from methods._optim import adam
from methods.supervised import Config, Supervised  # the same settings and per-preset learning rates


@METHODS.register("greedy_supervised")
class GreedySupervised(Method):
    gradient_isolated = True
    description = "greedy supervised: each module its own linear classifier, gradient-isolated"
    Config = Config
    supervised = True
    presets = Supervised.presets

    def __init__(self, config: Config, encoder, task, device: torch.device) -> None:
        super().__init__(config, encoder, task, device)
        self.target = label_set(task, config.target)
        classes = num_classes(task, self.target)
        outs = probe_outputs(encoder, task, device)
        self.heads = nn.ModuleList(nn.Linear(out.rep.shape[1], classes) for out in outs).to(device)
        params = [*encoder.parameters(), *self.heads.parameters()]
        self.optimizer = adam(params, config.lr, config.weight_decay)

    def train_step(self, batch: Batch, phase: int) -> dict[int, torch.Tensor]:
        self.encoder.train()
        labels = batch.labels[self.target]
        losses = {}
        for m, out in enumerate(self.encoder.iter_modules(batch.x, detach=True)):
            loss = head_loss(self.heads[m], out.rep, labels)
            loss.backward()  # frees this module's graph before the next module runs
            losses[m] = loss.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return losses

    @torch.no_grad()
    def val_losses(self, batch: Batch, phase: int) -> dict[int, float]:
        if self.target not in batch.labels:
            return {}
        self.encoder.eval()
        labels = batch.labels[self.target]
        outs = self.encoder.iter_modules(batch.x, detach=True)
        return {m: float(head_loss(self.heads[m], out.rep, labels)) for m, out in enumerate(outs)}

    def state_dict(self) -> dict:
        return {"heads": self.heads.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
