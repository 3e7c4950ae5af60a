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
or, with ``iterative_inputs=recompute``, recomputed every step. Every module has its own Adam (a per-module
learner, ``bench.local``); every module's training and validation losses are recorded in its own phase (the
trainer numbers epochs across phases). Each module's negatives and windows come from its own random stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from bench.interfaces import Batch, Metric, ModuleOutput
from bench.local import LocalMethod
from bench.registry import METHODS
from methods._infonce import GridPredictors, Offset, grid_infonce, offset_metric
from methods._module_cache import ModuleCache


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
class GIM(LocalMethod):
    variant_keys = ("schedule", "train_modules", "backward")
    description = "Greedy InfoMax: gradient-isolated modules, each trained with its own InfoNCE loss"
    Config = Config
    presets = {
        "always": {"audio": {"method": {"prediction_steps": 12, "negatives": 10}}},
        "paper": {"vision": {"method": {"lr": 1.5e-4}}, "audio": {"method": {"lr": 2e-4}}},
    }

    def __init__(self, config: Config, encoder, task, device: torch.device) -> None:
        self.iterative = config.schedule == "iterative"
        super().__init__(config, encoder, task, device)
        self.cache: ModuleCache | None = None

    def make_head(self, m: int, out: ModuleOutput) -> nn.Module:
        return make_head(out, self.config)

    def module_loss(self, m: int, out: ModuleOutput, batch: Batch) -> torch.Tensor:
        return infonce_loss(out, self.heads[m], self.config)

    def module_phases(self) -> list[list[int]]:
        return [[m] for m in self.trained] if self.iterative else [self.trained]

    def module_inputs(self, batch: Batch, first: int, last: int, z_in: torch.Tensor | None) -> Iterator[tuple[int, ModuleOutput]]:
        """As the harness's, except an iterative phase on a cache: module ``last`` alone, on the cached outputs
        of the module below it."""
        if self.iterative and self.config.iterative_inputs == "cache" and last > 0 and z_in is None:
            if batch.index is None:
                raise ValueError("schedule=iterative reads its cache by sample: the batch needs its index")
            z = self.module_cache().inputs(last, batch.index)  # (B*k, ...) output of module last - 1
            yield last, self.encoder.module_output(last, z, None, self.encoder.blocks[last](z))
            return
        yield from super().module_inputs(batch, first, last, z_in)

    def module_cache(self) -> ModuleCache:
        if self.cache is None:
            folder = Path(self.work_dir or ".") / "module_cache"
            self.cache = ModuleCache(folder, self.encoder, self.task, self.device)
        return self.cache

    def extra_metrics(self) -> list[Metric]:
        """The vision prediction offset in use (also in config.yaml), as a row of the results."""
        grid = isinstance(self.heads[0], GridPredictors)
        return [offset_metric(self.config.offset)] if grid else []
