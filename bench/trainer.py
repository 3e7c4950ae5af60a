"""The training loop: deterministic data order, resumable checkpoints, throughput and memory.

Every step reseeds the global RNGs from (seed, global step) and draws its batch from an epoch permutation
seeded by (seed, phase, epoch). A run resumed from a checkpoint therefore takes exactly the steps an
uninterrupted run would have taken, and ends with the same result.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench import progress
from bench.events import FOLDER as EVENTS_FOLDER
from bench.events import EventWriter, NoEvents
from bench.interfaces import Batch, Method, Metric, ModularEncoder, Task, TrainConfig
from bench.local import ModuleClock
from bench.measure import HeapReuse, PeakMemory, Throughput, precision

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoints/last.pt"
PREVIOUS = "checkpoints/prev.pt"
"""The checkpoint before the latest: resumed from when the latest cannot be read."""


class Interrupted(Exception):
    """Training stopped on request (SIGTERM, SIGINT, preemption) after saving a checkpoint."""


class Diverged(Exception):
    """A module's loss became non-finite, or did not move over a whole phase; the run stops (checkpoint kept)."""

    def __init__(self, module: int, step: int, what: str) -> None:
        super().__init__(f"module {module} {what} at step {step}")
        self.module, self.step, self.what = module, step, what


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between steps, saves a checkpoint and stops."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict = {}

    def install(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.requested = signal.Signals(signum).name

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


@dataclass
class Position:
    phase: int = 0
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    done: bool = False


@dataclass
class TrainState:
    position: Position = field(default_factory=Position)
    restarts: int = 0
    metrics: list[Metric] = field(default_factory=list)
    loss_sums: dict[int, float] = field(default_factory=dict)
    loss_counts: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0
    """Seconds of the earlier segments of this run (before the last resume)."""
    first_loss: dict[int, float] = field(default_factory=dict)
    """Each module's first loss of the current phase, and whether it has moved since (health check)."""
    moved: dict[int, bool] = field(default_factory=dict)
    seen: dict[int, int] = field(default_factory=dict)
    """Steps of the current phase that reported each module's loss."""
    window_sums: dict[int, float] = field(default_factory=dict)
    window_counts: dict[int, int] = field(default_factory=dict)
    """Each module's losses since the last point of its training curve (``train.log_every``)."""


@dataclass
class TrainResult:
    metrics: list[Metric]
    restarts: int
    steps: int
    earlier_wall_s: float = 0.0
    """Wall time of the run's earlier segments (interrupted and resumed)."""


def seed_step(seed: int, global_step: int) -> int:
    value = (seed * 1_000_003 + global_step * 7_919 + 12_345) % (2**63 - 1)
    torch.manual_seed(value)
    random.seed(value)
    np.random.seed(value % (2**32))
    return value


def seeded_batch(task: Task, split: str, idx: torch.Tensor, device: torch.device, seed: int, step: int,
                 augment: bool) -> Batch:  # fmt: skip
    """Samples ``idx`` of ``split`` at step ``step`` of a run seeded ``seed``: the global generators reseeded
    from (seed, step), the augmentation drawn from a generator of that seed, the batch carrying its indices and
    the step's seed (each module's random stream derives from it)."""
    step_seed = seed_step(seed, step)
    gen = torch.Generator(device=device).manual_seed(step_seed)
    batch = task.batch(split, idx, device, gen, augment=augment)
    batch.index, batch.seed = idx, step_seed
    return batch


def epoch_permutation(seed: int, phase: int, epoch: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed((seed * 7_777 + phase * 1_009 + epoch) % (2**63 - 1))
    return torch.randperm(n, generator=gen)


def save_checkpoint(path: Path, encoder: ModularEncoder, method: Method, state: TrainState,
                    segment_s: float = 0.0) -> None:  # fmt: skip
    """Write, fsync, then rename into place, keeping the latest good checkpoint as ``prev.pt``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "encoder": encoder.state_dict(),
        "method": method.state_dict(),
        "position": asdict(state.position),
        "restarts": state.restarts,
        "metrics": [asdict(m) for m in state.metrics],
        "loss_sums": state.loss_sums,
        "loss_counts": state.loss_counts,
        "wall_s": state.wall_s + segment_s,
        "first_loss": state.first_loss,
        "moved": state.moved,
        "seen": state.seen,
        "window_sums": state.window_sums,
        "window_counts": state.window_counts,
    }
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if path.is_file():
        os.replace(path, path.with_name(Path(PREVIOUS).name))
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: Path, encoder: ModularEncoder, method: Method) -> TrainState | None:
    """The latest readable checkpoint: ``path``, else (with a warning) the previous one, else None (with a
    warning when there was one that could not be read: the run starts over)."""
    candidates = [p for p in (path, path.with_name(Path(PREVIOUS).name)) if p.is_file()]
    for i, candidate in enumerate(candidates):
        try:
            payload = torch.load(candidate, map_location="cpu", weights_only=False)
            encoder.load_state_dict(payload["encoder"])
            method.load_state_dict(payload["method"])
            state = TrainState(
                position=Position(**payload["position"]),
                restarts=payload["restarts"] + 1,
                metrics=[Metric(**m) for m in payload["metrics"]],
                loss_sums=payload["loss_sums"],
                loss_counts=payload["loss_counts"],
                wall_s=payload.get("wall_s", 0.0),
                first_loss=payload.get("first_loss", {}),
                moved=payload.get("moved", {}),
                seen=payload.get("seen", {}),
                window_sums=payload.get("window_sums", {}),
                window_counts=payload.get("window_counts", {}),
            )
        except Exception as err:  # a cut or corrupt file: torch raises several kinds of error
            later = f"; resuming from {candidates[i + 1]}" if i + 1 < len(candidates) else "; starting over"
            logging.getLogger("bench.run").warning("checkpoint %s cannot be read (%s: %s)%s", candidate,
                                                   type(err).__name__, err, later)  # fmt: skip
            continue
        if i:
            logging.getLogger("bench.run").warning("resumed from the previous checkpoint %s", candidate)
        return state
    return None


@dataclass
class StepMeter:
    """Which steps measure what: memory over the first steps of each phase, speed over the rest.

    The first ``max(1, warmup)`` steps of each phase (counted in this process, so also after a resume) run
    with heap reuse off and the resident peak tracked; the later ones run with heap reuse on (much faster on
    CPU, but resident memory would then include the heap's fragmentation) and are timed. Every step of a
    phase has the same shapes, so its first steps reach the phase's peak; the first step also allocates the
    optimizer state.
    """

    memory: PeakMemory
    heap: HeapReuse
    speed: Throughput
    warmup: int
    phase_steps: int = 0

    def new_phase(self) -> None:
        self.phase_steps = 0

    def step_begin(self) -> None:
        if self.phase_steps < max(1, self.warmup):
            self.heap.disable()
            self.memory.resume()
        else:
            self.memory.pause()
            self.heap.enable()
        self.speed.step_begin(timed=self.phase_steps >= self.warmup)

    def step_end(self, samples: int) -> None:
        self.speed.step_end(samples)
        self.phase_steps += 1

    @property
    def timed(self) -> bool:
        """Whether the step begun is timed."""
        return self.phase_steps >= self.warmup


@dataclass
class Curve:
    """The cadence of the loss curves' points within a phase, and the current window's step time."""

    log_every: int
    val_every: int
    phase_steps: int = 0
    window_s: float = 0.0
    window_samples: int = 0

    @classmethod
    def of(cls, cfg: TrainConfig, phase_steps: int) -> Curve:
        log_every = cfg.log_every or max(1, phase_steps // 20)
        return cls(log_every, cfg.val_every or log_every, phase_steps)

    def due(self, phase_step: int, every: int) -> bool:
        """A point after the ``phase_step``-th step of a phase: every ``every`` steps, and at its last step."""
        return phase_step % every == 0 or phase_step == self.phase_steps


@dataclass
class Trainer:
    task: Task
    method: Method
    encoder: ModularEncoder
    cfg: TrainConfig
    seed: int
    device: torch.device
    run_dir: Path
    stop: StopFlag

    def __post_init__(self) -> None:
        self.t0 = time.perf_counter()
        self.bf16 = precision(self.cfg.amp, self.device) == "bf16"
        self.events: EventWriter | NoEvents = NoEvents()
        self.curve = Curve(1, 1)
        self.last_val: tuple[tuple[int, int], dict[int, float]] | None = None
        """((phase, global step), losses) of the latest validation: an epoch's end reuses the curve's point."""
        self.clock = ModuleClock(self.device) if self.method.local else None
        self.method.clock = self.clock  # type: ignore[attr-defined]

    def load(self, path: Path) -> TrainState:
        return load_checkpoint(path, self.encoder, self.method) or TrainState()

    def save(self, path: Path, state: TrainState) -> None:
        save_checkpoint(path, self.encoder, self.method, state, time.perf_counter() - self.t0)

    def run(self) -> TrainResult:
        path = self.checkpoint_path()
        state = self.load(path)
        self.position = pos = state.position
        if state.restarts:
            logging.getLogger("bench.run").info("resuming from checkpoint at step %d (restart %d)", pos.global_step, state.restarts)
        if pos.done or not self.method.trains:
            return TrainResult(state.metrics, state.restarts, pos.global_step, state.wall_s)
        self.method.work_dir = self.run_dir
        split = self.task.pretrain_split(self.method.supervised)
        n = self.task.split_size(split)
        steps = self.steps_per_epoch(n)
        total = self.method.num_phases() * self.cfg.epochs * steps
        memory, speed = PeakMemory(self.device), Throughput(self.device)
        memory.start()
        heap = HeapReuse(self.cfg.reuse_heap and memory.pausable)
        meter = StepMeter(memory, heap, speed, self.cfg.warmup_steps)
        bar = progress.bar(total=total, initial=pos.global_step, desc="train", unit="step")
        self.curve = Curve.of(self.cfg, self.cfg.epochs * steps)
        self.open_events(state)
        with bar, heap, closing(self.events):
            while pos.phase < self.method.num_phases():
                meter.new_phase()
                if pos.epoch == 0 and pos.step == 0:
                    self.validation_point(state)
                while pos.epoch < self.cfg.epochs:
                    self.run_epoch(state, split, n, steps, meter, bar, path)
                    pos.epoch, pos.step = pos.epoch + 1, 0
                    self.save(path, state)
                check_moved(state, pos.global_step)
                pos.phase, pos.epoch = pos.phase + 1, 0
                state.first_loss, state.moved, state.seen = {}, {}, {}
        memory.pause()
        pos.done = True
        metrics = state.metrics + self.measurements(memory, speed)
        state.metrics = metrics
        self.save(path, state)
        return TrainResult(metrics, state.restarts, pos.global_step, state.wall_s)

    def open_events(self, state: TrainState) -> None:
        """The run's TensorBoard event file for this segment (``train.tensorboard``)."""
        if self.cfg.tensorboard:
            resumed = state.position.global_step + 1 if state.restarts else None
            self.events = EventWriter(self.run_dir / EVENTS_FOLDER, resumed_at=resumed)

    def steps_per_epoch(self, n: int) -> int:
        if self.cfg.steps_per_epoch:
            return self.cfg.steps_per_epoch
        if n < self.cfg.batch_size:
            raise ValueError(
                f"the pretraining split has {n} samples, fewer than train.batch_size={self.cfg.batch_size}; "
                "lower train.batch_size or set train.steps_per_epoch"
            )
        return n // self.cfg.batch_size

    def run_epoch(self, state: TrainState, split: str, n: int, steps: int, meter: StepMeter, bar: tqdm,
                  path: Path) -> None:  # fmt: skip
        pos, bs = state.position, self.cfg.batch_size
        perm = epoch_permutation(self.seed, pos.phase, pos.epoch, n)
        while pos.step < steps:
            batch, began = self.train_batch(split, perm[(pos.step * bs + torch.arange(bs)) % n], meter)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                losses = self.train_step(batch, pos.phase)
            meter.step_end(len(batch))
            check_health(state, losses, pos.global_step, lambda: self.save(path, state))
            self.curve.window_s += time.perf_counter() - began
            self.curve.window_samples += len(batch)
            for m, value in losses.items():
                for sums, counts in ((state.loss_sums, state.loss_counts), (state.window_sums, state.window_counts)):
                    sums[m] = sums.get(m, 0.0) + float(value)
                    counts[m] = counts.get(m, 0) + 1
            pos.step, pos.global_step = pos.step + 1, pos.global_step + 1
            self.curve_points(state, pos.epoch * steps + pos.step)
            bar.update(1)
            if pos.global_step % 10 == 1 or pos.step == steps:
                bar.set_postfix({f"loss{m}": f"{float(v):.3f}" for m, v in losses.items()}, refresh=False)
            if self.stopping():
                self.save(path, state)
                raise Interrupted(f"stopped by {self.stop.requested or 'request'} at step {pos.global_step}; "
                                  "checkpoint saved")  # fmt: skip
            if pos.global_step % self.cfg.checkpoint_every == 0:
                self.save(path, state)
        self.close_epoch(state)

    def train_batch(self, split: str, idx: torch.Tensor, meter: StepMeter) -> tuple[Batch, float]:
        """The step's batch (samples ``idx`` of ``split``, augmented with the step's seed), and the time its
        step began: the meter starts after the batch is made."""
        batch = seeded_batch(self.task, split, idx, self.device, self.seed, self.position.global_step, augment=True)
        meter.step_begin()
        self.clock_step(meter)
        return batch, time.perf_counter()

    def clock_step(self, meter: StepMeter) -> None:
        """A local method's module clock times the steps the throughput times."""
        if self.clock is not None:
            self.clock.active = meter.timed

    def train_step(self, batch: Batch, phase: int) -> dict:
        return self.method.train_step(batch, phase)

    def stopping(self) -> bool:
        """Whether to checkpoint and stop after the step just taken."""
        return bool(self.stop.requested)

    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def curve_points(self, state: TrainState, phase_step: int) -> None:
        """After a phase's ``phase_step``-th step: the points of the loss curves that fall due (rows with
        ``step`` set, and TensorBoard scalars with the throughput and learning rates of the window)."""
        pos, curve = state.position, self.curve
        if curve.due(phase_step, curve.log_every):
            epoch = pos.phase * self.cfg.epochs + pos.epoch
            means = {m: state.window_sums[m] / state.window_counts[m] for m in sorted(state.window_sums)}
            for m, mean in means.items():
                state.metrics.append(Metric("train_loss", mean, module=m, epoch=epoch, step=pos.global_step))
            scalars = {f"train_loss/module_{m}": mean for m, mean in means.items()}
            if curve.window_s > 0:
                scalars["samples_per_s"] = curve.window_samples / curve.window_s
            self.events.scalars(pos.global_step, scalars | self.method.learning_rates())
            state.window_sums, state.window_counts = {}, {}
            curve.window_s, curve.window_samples = 0.0, 0
        if curve.due(phase_step, curve.val_every):
            self.validation_point(state)

    def validation_point(self, state: TrainState) -> None:
        """A point of each module's validation curve at the current step (also at a phase's start)."""
        pos = state.position
        epoch = pos.phase * self.cfg.epochs + min(pos.epoch, self.cfg.epochs - 1)
        losses = self.validation_losses(pos.phase, pos.global_step)
        for m, value in losses.items():
            state.metrics.append(Metric("val_loss", value, module=m, epoch=epoch, step=pos.global_step))
        if losses:
            self.events.scalars(pos.global_step, {f"val_loss/module_{m}": v for m, v in losses.items()})

    def close_epoch(self, state: TrainState) -> None:
        """Record the epoch's mean training loss per module, and the validation loss if asked for."""
        pos = state.position
        epoch = pos.phase * self.cfg.epochs + pos.epoch
        scalars = {}
        for m in sorted(state.loss_sums):
            mean = state.loss_sums[m] / max(1, state.loss_counts[m])
            state.metrics.append(Metric("train_loss", mean, module=m, epoch=epoch))
            scalars[f"epoch/train_loss/module_{m}"] = mean
            log.info("phase %d epoch %d module %d train_loss %.4f", pos.phase, pos.epoch, m, mean)
        state.loss_sums, state.loss_counts = {}, {}
        for m, value in self.validation_losses(pos.phase, pos.global_step).items():
            state.metrics.append(Metric("val_loss", value, module=m, epoch=epoch))
            scalars[f"epoch/val_loss/module_{m}"] = value
            log.info("phase %d epoch %d module %d val_loss %.4f", pos.phase, pos.epoch, m, value)
        self.events.scalars(pos.global_step, scalars)

    def validation_losses(self, phase: int, step: int) -> dict[int, float]:
        """Each module's mean loss over ``train.val_batches`` validation batches after ``step`` steps (the
        same batches, negatives and crops every time)."""
        split = self.task.validation_split()
        if not self.cfg.val_batches or split is None:
            return {}
        if self.last_val is not None and self.last_val[0] == (phase, step):
            return self.last_val[1]
        n, bs = self.task.split_size(split), self.cfg.batch_size
        sums: dict[int, float] = {}
        for b in range(self.cfg.val_batches):
            for m, v in self.val_batch_losses(split, b, n, bs, phase).items():
                sums[m] = sums.get(m, 0.0) + float(v) / self.cfg.val_batches
        self.last_val = ((phase, step), sums)
        return sums

    def val_batch(self, split: str, b: int, n: int, bs: int) -> Batch:
        """Validation batch ``b``: the same samples, negatives and crops at every point of the curve."""
        return seeded_batch(self.task, split, (b * bs + torch.arange(bs)) % n, self.device, self.seed, 10**9 + b,
                            augment=False)  # fmt: skip

    def val_batch_losses(self, split: str, b: int, n: int, bs: int, phase: int) -> dict[int, float]:
        return self.method.val_losses(self.val_batch(split, b, n, bs), phase)

    def measurements(self, memory: PeakMemory, speed: Throughput) -> list[Metric]:
        out = [Metric("peak_mem_bytes", float(memory.peak_bytes()))]
        if speed.samples_per_s is not None:
            out.append(Metric("samples_per_s", speed.samples_per_s))
            out.append(Metric("s_per_step", speed.s_per_step or 0.0))
        if self.clock is not None:
            out += [Metric(f"module_{part}_s", s, module=m) for (m, part), s in self.clock.means().items()]
        return out


def check_health(state: TrainState, losses: dict, step: int, keep: Callable[[], None]) -> None:
    """Stop with Diverged on a non-finite loss (after saving the checkpoint of the last good step: the step's
    update is in the parameters, so the checkpoint is of the state that diverged; the previous one is kept
    as ``prev.pt``). Tracks whether each module's loss has moved since the phase began."""
    for m, value in losses.items():
        v = float(value)
        if not math.isfinite(v):
            keep()
            raise Diverged(m, step + 1, f"loss is {v}")
        first = state.first_loss.setdefault(m, v)
        state.seen[m] = state.seen.get(m, 0) + 1
        if not state.moved.get(m) and abs(v - first) > 1e-6 * max(1.0, abs(first)):
            state.moved[m] = True


def check_moved(state: TrainState, step: int) -> None:
    """A trained module whose loss stayed the same over a whole phase of several steps is not learning."""
    for m in sorted(state.first_loss):
        if not state.moved.get(m) and state.seen.get(m, 0) > 1:
            raise Diverged(m, step, f"loss stayed at {state.first_loss[m]:.6g} for the whole phase (not learning)")
