"""Local learning as an object the harness drives: per-module learners.

A local method (``LocalMethod``) says, for each module of the encoder, what that module learns from: a head
built from the module's output (``make_head``), a loss on (module output, batch) (``module_loss``) and an
optimiser over the module's and its head's parameters (``make_optimizer``). The harness owns the loop:
``local_step`` runs a contiguous range of modules from an input, back-propagates each trained module's loss
(or their sum, ``backward=summed``), steps each module's own optimiser and returns the losses and the last
module's detached output. One process runs every module this way (``LocalMethod.train_step``); a stage of a
module-parallel run (``bench.pipeline``) runs its own range on the output it received from the stage before.

Every module's loss draws its random numbers (negatives, windows) from its own stream, seeded by the step's
seed and the module's index (``module_stream``), so its draws are the same whichever modules ran before it
and in whichever process: a pipeline of stages reproduces the single-process run step for step. (The
encoders' forward passes draw nothing at random; a method whose forward does must draw in ``module_loss``.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.interfaces import Batch, Method, ModularEncoder, ModuleOutput, Task
from bench.optim import adam

PARTS = ("forward", "loss", "backward", "step")
"""The parts of a module's step that ``ModuleClock`` times (rows ``module_<part>_s``)."""


def module_seed(step_seed: int, module: int) -> int:
    """The seed of module ``module``'s random stream at the step seeded ``step_seed``."""
    return (step_seed * 6_364_136_223_846_793_005 + (module + 1) * 1_442_695_040_888_963_407) % (2**63 - 1)


def module_stream(batch: Batch, module: int) -> None:
    """Seed the global generators (CPU and CUDA) for module ``module``'s draws at this batch's step; nothing
    when the batch carries no seed (a batch made by hand: the global stream as it stands)."""
    if batch.seed is not None:
        torch.manual_seed(module_seed(batch.seed, module))


@torch.no_grad()
def probe_outputs(encoder: ModularEncoder, task: Task, device: torch.device) -> list[ModuleOutput]:
    """Module outputs for a tiny batch, to size the heads."""
    was_training = encoder.training
    outs = encoder.eval().forward_modules(task.example_input(2).to(device), detach=True)
    encoder.train(was_training)
    return outs


@dataclass
class ModuleClock:
    """Seconds per part of each module's step, summed over the steps it is active for (the timed steps).

    On CPU the parts are read off the clock; on CUDA they are timed with events (no synchronisation inside
    a step, which would change what is measured), read back at the next step's start or at the end."""

    device: torch.device
    active: bool = False
    sums: dict[tuple[int, str], float] = field(default_factory=dict)
    steps: dict[int, int] = field(default_factory=dict)
    _t: float = 0.0
    _events: list = field(default_factory=list)

    def start(self) -> None:
        if not self.active:
            return
        if self.device.type == "cuda":
            self._resolve()
            self._events = [(None, None, self._event())]
        else:
            self._t = time.perf_counter()

    def lap(self, module: int, part: str) -> None:
        if not self.active:
            return
        if self.device.type == "cuda":
            self._events.append((module, part, self._event()))
            return
        now = time.perf_counter()
        self._add(module, part, now - self._t)
        self._t = now

    def count(self, modules: list[int]) -> None:
        if self.active:
            for m in modules:
                self.steps[m] = self.steps.get(m, 0) + 1

    def means(self) -> dict[tuple[int, str], float]:
        """(module, part) -> mean seconds per step."""
        self._resolve()
        return {(m, part): s / self.steps[m] for (m, part), s in sorted(self.sums.items()) if self.steps.get(m)}

    def _add(self, module: int, part: str, seconds: float) -> None:
        self.sums[(module, part)] = self.sums.get((module, part), 0.0) + seconds

    def _event(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _resolve(self) -> None:
        if len(self._events) > 1:
            self._events[-1][2].synchronize()
            for (_, _, before), (module, part, after) in zip(self._events, self._events[1:], strict=False):
                self._add(module, part, before.elapsed_time(after) / 1000.0)
        self._events = []


class LocalMethod(Method):
    """A method of per-module learners. Subclasses define ``make_head`` and ``module_loss``; the config may
    carry ``lr``, ``weight_decay``, ``train_modules`` (which modules learn; empty = all) and ``backward``
    (per_module | summed). ``module_phases`` groups the trained modules into phases run one after another
    (one phase by default: simultaneous training)."""

    local = True
    gradient_isolated = True

    def __init__(self, config, encoder, task, device: torch.device) -> None:
        super().__init__(config, encoder, task, device)
        outs = probe_outputs(encoder, task, device)
        n = len(outs)
        self.trained = sorted(set(getattr(config, "train_modules", ()) or range(n)))
        if not self.trained or self.trained[0] < 0 or self.trained[-1] >= n:
            raise ValueError(f"method.train_modules={list(config.train_modules)} must name modules 0..{n - 1}")
        self.heads = nn.ModuleList(self.make_head(m, out) for m, out in enumerate(outs)).to(device)
        self.module_optimizers = {m: self.make_optimizer(self.module_parameters(m)) for m in self.trained}
        self.phases = self.module_phases()
        self.active_phase = -1
        self.clock: ModuleClock | None = None

    # --- what a local method defines -------------------------------------------------------------------
    def make_head(self, m: int, out: ModuleOutput) -> nn.Module:
        """Module ``m``'s head, sized from its output on a tiny batch (``nn.Identity()`` when it has none)."""
        raise NotImplementedError

    def module_loss(self, m: int, out: ModuleOutput, batch: Batch) -> torch.Tensor:
        """Module ``m``'s local loss on its output (a scalar); its head is ``self.heads[m]``."""
        raise NotImplementedError

    def validates(self, batch: Batch) -> bool:
        """Whether ``module_loss`` can be computed on ``batch`` (e.g. it carries the labels the loss needs)."""
        return True

    def module_phases(self) -> list[list[int]]:
        return [self.trained]

    def module_parameters(self, m: int) -> list[nn.Parameter]:
        return [*self.encoder.blocks[m].parameters(), *self.heads[m].parameters()]

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return adam(params, self.config.lr, getattr(self.config, "weight_decay", 0.0))

    def module_inputs(self, batch: Batch, first: int, last: int, z_in: torch.Tensor | None) -> Iterator[tuple[int, ModuleOutput]]:
        """(module, output) for modules ``first..last``: from ``z_in`` (module ``first - 1``'s output) when
        given, else from the batch's inputs. Each module's input is detached (gradient isolation)."""
        z = self.encoder.prepare(batch.x) if z_in is None else z_in
        yield from enumerate(self.encoder.iter_from(z, first, detach=True, upto=last), start=first)

    # --- what the harness calls -----------------------------------------------------------------------
    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return list(self.module_optimizers.values())

    def num_phases(self) -> int:
        return len(self.phases)

    def last_module(self, phase: int) -> int:
        """The last module that must run in ``phase`` (modules after it are not run)."""
        return self.phases[phase][-1]

    def activate(self, phase: int) -> None:
        """Only the modules of ``phase`` require gradients: the others build no graph."""
        if phase != self.active_phase:
            for m in range(len(self.encoder.blocks)):
                self.encoder.blocks[m].requires_grad_(m in self.phases[phase])
            self.active_phase = phase

    def train_step(self, batch: Batch, phase: int) -> dict[int, torch.Tensor]:
        return local_step(self, batch, phase, 0, self.last_module(phase), None)[0]

    @torch.no_grad()
    def val_losses(self, batch: Batch, phase: int) -> dict[int, float]:
        return local_val(self, batch, phase, 0, self.last_module(phase), None)[0]

    def learning_rates(self) -> dict[str, float]:
        items = self.module_optimizers.items()
        return {f"lr/module_{m}": float(o.param_groups[0]["lr"]) for m, o in items}

    def state_dict(self) -> dict:
        return {"heads": self.heads.state_dict(), "optimizers": {m: o.state_dict() for m, o in self.module_optimizers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.heads.load_state_dict(state["heads"])
        saved = state["optimizers"]
        if not isinstance(saved, dict) or set(saved) != set(self.module_optimizers):
            raise ValueError("the checkpoint's optimisers are not this run's per-module optimisers")
        for m, optimizer in self.module_optimizers.items():
            optimizer.load_state_dict(saved[m])


def local_step(method: LocalMethod, batch: Batch, phase: int, first: int, last: int,
               z_in: torch.Tensor | None) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:  # fmt: skip
    """One training step of modules ``first..last`` (those of them in ``phase`` learn): returns each trained
    module's loss (detached) and module ``last``'s output ``z`` detached (None when nothing ran)."""
    method.activate(phase)
    method.encoder.train()
    trained = [m for m in method.phases[phase] if first <= m <= last]
    summed = getattr(method.config, "backward", "per_module") == "summed"
    clock = method.clock if method.clock is not None else _NO_CLOCK
    losses: dict[int, torch.Tensor] = {}
    pending: list[torch.Tensor] = []
    z_out = None
    clock.start()
    for m, out in method.module_inputs(batch, first, last, z_in):
        clock.lap(m, "forward")
        z_out = out.z
        if m not in trained:
            continue
        module_stream(batch, m)
        loss = method.module_loss(m, out, batch)
        clock.lap(m, "loss")
        if summed:
            pending.append(loss)
        else:
            loss.backward()  # frees this module's graph before the next module runs
            clock.lap(m, "backward")
        losses[m] = loss.detach()
    if pending:
        torch.stack(pending).sum().backward()
        clock.lap(trained[-1], "backward")
    for m in trained:
        optimizer = method.module_optimizers[m]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.lap(m, "step")
    clock.count(trained)
    return losses, None if z_out is None else z_out.detach()


@torch.no_grad()
def local_val(method: LocalMethod, batch: Batch, phase: int, first: int, last: int,
              z_in: torch.Tensor | None) -> tuple[dict[int, float], torch.Tensor | None]:  # fmt: skip
    """The validation losses of modules ``first..last`` in ``phase`` without updating anything, from the
    raw inputs (never a cache), and module ``last``'s output."""
    method.encoder.eval()
    losses: dict[int, float] = {}
    z = method.encoder.prepare(batch.x) if z_in is None else z_in
    z_out = None
    trained = method.phases[phase]
    for m, out in enumerate(method.encoder.iter_from(z, first, detach=True, upto=last), start=first):
        z_out = out.z
        if m in trained and method.validates(batch):
            module_stream(batch, m)
            losses[m] = float(method.module_loss(m, out, batch))
    return losses, z_out


class _NoClock:
    def start(self) -> None: ...
    def lap(self, module: int, part: str) -> None: ...
    def count(self, modules: list[int]) -> None: ...


_NO_CLOCK = _NoClock()
