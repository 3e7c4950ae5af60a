"""CPC: the same encoder trained end to end with one InfoNCE loss on its last module (GIM_PROTOCOL.md 4.1-4.2).

Vision: a masked PixelCNN-style stack (methods/_pixelcnn.py) turns the encoder output z (B, C, 7, 7) into a
context c at every grid position; c at row i predicts z at the rows below through W_k (``grid_infonce``
with separate context and target). Audio: the context is the last (GRU) module's output and the target its
input, the conv5 output (``ModuleOutput.target``), scored by ``sequence_infonce``. No detach anywhere: the
gradient runs through every module. The probes read the encoder output (not the context), as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bench.interfaces import Batch, Method, Metric, ModuleOutput
from bench.registry import METHODS
from methods._heads import probe_outputs
from methods._infonce import GridPredictors, grid_infonce, offset_metric
from bench.optim import adam
from methods._pixelcnn import PixelCNN


@dataclass(frozen=True)
class Config:
    lr: float = 2e-4
    """Adam learning rate."""
    prediction_steps: int = 5
    """K: grid rows (vision) or time steps (audio) predicted ahead."""
    negatives: int = 16
    offset: Literal["paper", "reference"] = "paper"
    """Vision: predict row i+k (paper) or row i+k+1 (the reference code's skip)."""
    window: int = 128
    """Audio: InfoNCE on a random window of this many steps for longer sequences."""
    ar_width: int = 0
    """Vision: PixelCNN hidden width (0 = the encoder's channels: 1024 at paper size, as the reference)."""
    ar_layers: int = 4
    """Vision: gated PixelCNN layers (4 as the reference: about 123 M parameters at paper size)."""
    weight_decay: float = 0.0


@METHODS.register("cpc")
class CPC(Method):
    description = "CPC: the encoder end to end with an autoregressive context network and one InfoNCE loss"
    Config = Config
    presets = {
        "always": {"audio": {"method": {"prediction_steps": 12, "negatives": 10}}},
        "smoke": {"any": {"method": {"lr": 1e-3}}},
        # Vision at 2e-3: on cifar10 small (seed 0) the probe's validation accuracy on the encoder output was
        # 34.1 % against 33.6 % at 1e-3 and lower at 4e-3.
        "small": {"vision": {"method": {"lr": 2e-3}}, "audio": {"method": {"lr": 1e-3}}},
        "paper": {"vision": {"method": {"lr": 1.5e-4}}, "audio": {"method": {"lr": 2e-4}}},
    }

    def __init__(self, config: Config, encoder, task, device: torch.device) -> None:
        super().__init__(config, encoder, task, device)
        out = probe_outputs(encoder, task, device)[-1]
        self.last = len(encoder.blocks) - 1
        self.grid = out.rep.dim() == 4
        self.heads = self.build_heads(out, config).to(device)
        params = [*encoder.parameters(), *self.heads.parameters()]
        self.optimizer = adam(params, config.lr, config.weight_decay)

    def build_heads(self, out: ModuleOutput, cfg: Config) -> nn.ModuleDict:
        if self.grid:  # (B, C, G, G): PixelCNN context and W_k over the grid
            channels = out.rep.shape[1]
            return nn.ModuleDict({
                "context": PixelCNN(channels, cfg.ar_width, cfg.ar_layers),
                "predict": GridPredictors(channels, channels, cfg.prediction_steps),
            })  # fmt: skip
        # (B, C, L): the GRU output is the context; one linear map to K stacked target predictions
        predict = nn.Linear(out.rep.shape[1], out.target.shape[1] * cfg.prediction_steps, bias=False)
        return nn.ModuleDict({"predict": predict})

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        out = self.encoder.forward_modules(x, detach=False)[-1]
        cfg = self.config
        if self.grid:
            context = self.heads["context"](out.rep)
            return grid_infonce(context, out.rep, self.heads["predict"], cfg.negatives, cfg.offset)
        from methods._infonce_seq import sequence_infonce

        return sequence_infonce(out.rep, out.target, self.heads["predict"], cfg.prediction_steps, cfg.negatives,
                                cfg.window)  # fmt: skip

    def train_step(self, batch: Batch, phase: int) -> dict[int, torch.Tensor]:
        self.encoder.train()
        loss = self.loss(batch.x)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {self.last: loss.detach()}

    @torch.no_grad()
    def val_losses(self, batch: Batch, phase: int) -> dict[int, float]:
        self.encoder.eval()
        return {self.last: float(self.loss(batch.x))}

    def state_dict(self) -> dict:
        return {"heads": self.heads.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])

    def extra_metrics(self) -> list[Metric]:
        return [offset_metric(self.config.offset)] if self.grid else []
