"""Greedy InfoMax: every module trained with its own InfoNCE loss on its own output, gradient-isolated.

Each module's input is the previous module's output detached (``ModularEncoder.iter_modules(detach=True)``),
so no gradient crosses a module boundary. Vision modules predict grid rows below from rows above
(``grid_infonce``); audio modules predict future time steps (``sequence_infonce``), the autoregressive
module predicting the module below it from its context.

``backward=per_module`` back-propagates each module's loss before the next module runs (one module's graph
alive at a time: the memory saving); ``summed`` runs one backward over the summed losses as the reference
code does (all graphs alive at once). Both give the same gradients. ``train_modules`` limits training
to some modules (``[0]``: the first module alone, Table 2); modules after the last trained one are not run.

``schedule=simultaneous`` trains every module at every step (one phase). ``iterative`` runs one phase per
trained module, each to the full budget (train.epochs): module m is trained on the frozen outputs of
module m - 1, read from a float16 cache written once over the pretraining split (methods/_module_cache.py)
or, with ``iterative_inputs=recompute``, recomputed every step. Each phase has its own Adam; every module's
training and validation losses are recorded in its own phase (the trainer numbers epochs across phases).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from bench.interfaces import Batch, Method, Metric, ModuleOutput
from bench.registry import METHODS
from methods._heads import probe_outputs
from methods._infonce import GridPredictors, Offset, grid_infonce, offset_metric
from methods._module_cache import ModuleCache
from methods._optim import adam


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
    schedule: Literal["simultaneous", "iterative"] = "simultaneous"
    """simultaneous: all trained modules every step; iterative: one module after another, each to the budget."""
    iterative_inputs: Literal["cache", "recompute"] = "cache"
    """Iterative: the module below's outputs from a float16 disk cache (fixed augmentation) or recomputed."""
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
    gradient_isolated = True
    variant_keys = ("schedule", "train_modules", "backward")
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
        self.iterative = config.schedule == "iterative"
        self.phases = [[m] for m in self.trained] if self.iterative else [self.trained]
        self.heads = nn.ModuleList(make_head(out, config) for out in outs).to(device)
        self.optimizers = [self.make_optimizer(modules) for modules in self.phases]
        self.active_phase = -1
        self.cache: ModuleCache | None = None

    def make_optimizer(self, modules: list[int]) -> torch.optim.Optimizer:
        params = [p for m in modules for p in (*self.encoder.blocks[m].parameters(), *self.heads[m].parameters())]
        return adam(params, self.config.lr, self.config.weight_decay)

    def num_phases(self) -> int:
        return len(self.phases)

    def activate(self, phase: int) -> None:
        """Only the modules of ``phase`` require gradients: the others build no graph."""
        if phase != self.active_phase:
            for m in range(len(self.encoder.blocks)):
                self.encoder.blocks[m].requires_grad_(m in self.phases[phase])
            self.active_phase = phase

    def outputs(self, batch: Batch, modules: list[int]) -> Iterator[tuple[int, ModuleOutput]]:
        """(module, output) up to the last of ``modules``; from the cache below it when iterating on a cache."""
        last = modules[-1]
        if self.iterative and self.config.iterative_inputs == "cache" and last > 0:
            if batch.index is None:
                raise ValueError("schedule=iterative reads its cache by sample: the batch needs its index")
            z_in = self.module_cache().inputs(last, batch.index)  # (B*k, ...) output of module last - 1
            yield last, self.encoder.module_output(last, z_in, None, self.encoder.blocks[last](z_in))
            return
        yield from enumerate(self.encoder.iter_modules(batch.x, detach=True, upto=last))

    def module_cache(self) -> ModuleCache:
        if self.cache is None:
            folder = Path(self.work_dir or ".") / "module_cache"
            self.cache = ModuleCache(folder, self.encoder, self.task, self.device)
        return self.cache

    def train_step(self, batch: Batch, phase: int) -> dict[int, torch.Tensor]:
        self.activate(phase)
        modules, optimizer = self.phases[phase], self.optimizers[phase]
        self.encoder.train()
        losses: dict[int, torch.Tensor] = {}
        pending = []
        for m, out in self.outputs(batch, modules):
            if m not in modules:
                continue
            loss = infonce_loss(out, self.heads[m], self.config)
            if self.config.backward == "per_module":
                loss.backward()
            else:
                pending.append(loss)
            losses[m] = loss.detach()
        if pending:
            torch.stack(pending).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return losses

    @torch.no_grad()
    def val_losses(self, batch: Batch, phase: int) -> dict[int, float]:
        """The validation InfoNCE of the modules trained in ``phase``, computed from the raw inputs."""
        self.encoder.eval()
        modules = self.phases[phase]
        outs = self.encoder.iter_modules(batch.x, detach=True, upto=modules[-1])
        return {m: float(infonce_loss(o, self.heads[m], self.config)) for m, o in enumerate(outs) if m in modules}

    def state_dict(self) -> dict:
        return {"heads": self.heads.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        self.heads.load_state_dict(state["heads"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)

    def extra_metrics(self) -> list[Metric]:
        """The vision prediction offset in use (also in config.yaml), as a row of the results."""
        grid = isinstance(self.heads[0], GridPredictors)
        return [offset_metric(self.config.offset)] if grid else []
