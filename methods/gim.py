"""Greedy InfoMax: every module trained with its own InfoNCE loss on its own output, gradient-isolated.

Each module's input is the previous module's output detached (``ModularEncoder.iter_modules(detach=True)``),
so no gradient crosses a module boundary. Vision modules predict grid rows below from rows above
(``grid_infonce``); audio modules predict future time steps (``sequence_infonce``), the autoregressive
module predicting the module below it from its context.

``backward=per_module`` back-propagates each module's loss before the next module runs (one module's graph
alive at a time: the memory saving); ``summed`` runs one backward over the summed losses as the reference
code does (all graphs alive at once). Both give the same gradients. ``train_modules`` limits training
to some modules (``[0]``: the first module alone, Table 2); modules after the last trained one are not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bench.interfaces import Batch, Method, ModuleOutput
from bench.registry import METHODS
from methods._infonce import GridPredictors, Offset, grid_infonce


@dataclass(frozen=True)
class Config:
    lr: float = 1e-3
    """Adam learning rate. 1e-3 suits the short runs of the default, smoke and small presets; the paper
    preset sets the published 1.5e-4 (vision) and 2e-4 (audio; also the reference code's default)."""
    prediction_steps: int = 5
    """K: grid rows (vision) or time steps (audio) predicted ahead."""
    negatives: int = 16
    """Negatives per positive, drawn uniformly from the batch."""
    offset: Literal["paper", "reference"] = "paper"
    """Vision: predict row i+k (paper) or row i+k+1 (the reference code's skip)."""
    window: int = 128
    """Audio: InfoNCE on a random window of this many steps for longer sequences."""
    train_modules: tuple[int, ...] = ()
    """Modules to train (empty = all)."""
    backward: Literal["per_module", "summed"] = "per_module"
    """per_module: backward each module's loss before running the next; summed: one backward."""
    weight_decay: float = 0.0


def make_head(out: ModuleOutput, cfg: Config) -> nn.Module:
    """The bilinear predictors W_k for one module, sized from its output."""
    if out.rep.dim() == 4:  # (B, C, H, W) patch grid
        return GridPredictors(out.target.shape[1], out.rep.shape[1], cfg.prediction_steps)
    # (B, C, L) sequence: one linear map from the context to K stacked target predictions
    return nn.Linear(out.rep.shape[1], out.target.shape[1] * cfg.prediction_steps, bias=False)


def infonce_loss(out: ModuleOutput, head: nn.Module, cfg: Config) -> torch.Tensor:
    if out.rep.dim() == 4:
        offset: Offset = cfg.offset
        return grid_infonce(out.rep, out.target, head, cfg.negatives, offset)
    from methods._infonce_seq import sequence_infonce

    return sequence_infonce(out.rep, out.target, head, cfg.prediction_steps, cfg.negatives, cfg.window)


@METHODS.register("gim")
class GIM(Method):
    description = "Greedy InfoMax: gradient-isolated modules, each trained with its own InfoNCE loss"
    Config = Config
    presets = {
        "always": {"audio": {"method": {"prediction_steps": 12, "negatives": 10}}},
        "paper": {"vision": {"method": {"lr": 1.5e-4}}, "audio": {"method": {"lr": 2e-4}}},
    }

    def __init__(self, config: Config, encoder, task, device: torch.device) -> None:
        super().__init__(config, encoder, task, device)
        outs = probe_outputs(encoder, task, device)
        n = len(outs)
        self.trained = sorted(set(config.train_modules or range(n)))
        if not self.trained or self.trained[0] < 0 or self.trained[-1] >= n:
            raise ValueError(f"method.train_modules={list(config.train_modules)} must name modules 0..{n - 1}")
        self.heads = nn.ModuleList(make_head(out, config) for out in outs).to(device)
        for m in range(n):  # untrained modules build no graph
            encoder.blocks[m].requires_grad_(m in self.trained)
        params = [p for m in self.trained for p in (*encoder.blocks[m].parameters(), *self.heads[m].parameters())]
        self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)

    def train_step(self, batch: Batch, phase: int) -> dict[int, torch.Tensor]:
        self.encoder.train()
        losses: dict[int, torch.Tensor] = {}
        pending = []
        for m, out in enumerate(self.encoder.iter_modules(batch.x, detach=True, upto=self.trained[-1])):
            if m not in self.trained:
                continue
            loss = infonce_loss(out, self.heads[m], self.config)
            if self.config.backward == "per_module":
                loss.backward()
            else:
                pending.append(loss)
            losses[m] = loss.detach()
        if pending:
            torch.stack(pending).sum().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return losses

    @torch.no_grad()
    def val_losses(self, batch: Batch, phase: int) -> dict[int, float]:
        self.encoder.eval()
        outs = self.encoder.iter_modules(batch.x, detach=True, upto=self.trained[-1])
        return {m: float(infonce_loss(o, self.heads[m], self.config)) for m, o in enumerate(outs) if m in self.trained}

    def state_dict(self) -> dict:
        return {"heads": self.heads.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])


@torch.no_grad()
def probe_outputs(encoder, task, device: torch.device) -> list[ModuleOutput]:
    """Module outputs for a tiny batch, to size the heads."""
    was_training = encoder.training
    outs = encoder.eval().forward_modules(task.example_input(2).to(device), detach=True)
    encoder.train(was_training)
    return outs
