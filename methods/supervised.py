"""Supervised baseline: the whole encoder trained end to end with cross-entropy from a linear head.

The head sits on the last module's representation: mean-pooled for clip/image labels, per frame for frame
labels (methods/_heads.py). Pretrains on the task's labelled split; the probe is then trained afresh on
the frozen encoder, like every other method (the reference's own supervised evaluation path is broken).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.interfaces import Batch, Method
from bench.registry import METHODS
from methods._heads import head_loss, label_set, num_classes, probe_outputs
from bench.optim import adam


@dataclass(frozen=True)
class Config:
    lr: float = 2e-4
    """Adam learning rate."""
    target: str = ""
    """Label set to train on (empty = the task's first, e.g. class, speaker)."""
    weight_decay: float = 0.0


@METHODS.register("supervised")
class Supervised(Method):
    description = "end-to-end supervised: cross-entropy from a linear head on the last module"
    Config = Config
    supervised = True
    presets = {
        "smoke": {"any": {"method": {"lr": 1e-3}}},
        "small": {"any": {"method": {"lr": 1e-3}}},
        "paper": {"vision": {"method": {"lr": 1.5e-4}}, "audio": {"method": {"lr": 2e-4}}},
    }

    def __init__(self, config: Config, encoder, task, device: torch.device) -> None:
        super().__init__(config, encoder, task, device)
        self.target = label_set(task, config.target)
        self.last = len(encoder.blocks) - 1
        channels = probe_outputs(encoder, task, device)[-1].rep.shape[1]
        self.head = nn.Linear(channels, num_classes(task, self.target)).to(device)
        params = [*encoder.parameters(), *self.head.parameters()]
        self.optimizer = adam(params, config.lr, config.weight_decay)

    def train_step(self, batch: Batch, phase: int) -> dict[int, torch.Tensor]:
        self.encoder.train()
        loss = head_loss(self.head, self.encoder(batch.x), batch.labels[self.target])
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {self.last: loss.detach()}

    @torch.no_grad()
    def val_losses(self, batch: Batch, phase: int) -> dict[int, float]:
        if self.target not in batch.labels:
            return {}
        self.encoder.eval()
        return {self.last: float(head_loss(self.head, self.encoder(batch.x), batch.labels[self.target]))}

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
