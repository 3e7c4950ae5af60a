"""The contracts between the harness, tasks and methods.

A Task owns the data, the architecture split into gradient-isolated modules (a ``ModularEncoder``) and the
evaluation protocol. A Method owns the losses, the heads, the optimiser and the gradient flow. Neither
imports the other; ``bench.execute.execute`` joins them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from bench.config import bounded


@dataclass(frozen=True)
class TrainConfig:
    """Harness-level training settings (section ``train``); the same for every method."""

    epochs: int = bounded(2, 0)
    """Epochs over the pretraining split (per phase for multi-phase methods)."""
    steps_per_epoch: int = bounded(0, 0)
    """Steps per epoch; 0 = one pass over the pretraining split (last partial batch dropped)."""
    batch_size: int = bounded(32, 1)
    """Samples per step."""
    warmup_steps: int = bounded(2, 0)
    """Steps at the start of each phase left out of the throughput; peak memory is measured over them (over
    the first step when 0), the later steps are timed (``bench.trainer.StepMeter``)."""
    checkpoint_every: int = bounded(50, 1)
    """Save a resumable checkpoint every this many steps (and at the end of each epoch)."""
    val_batches: int = bounded(0, 0)
    """Batches of the task's validation split for the validation loss (0 = none): at the end of every epoch,
    and at the start of each phase and every ``val_every`` steps (the validation curve)."""
    log_every: int = bounded(0, 0)
    """Record each trained module's mean training loss over every this many steps of a phase: the points of
    its training curve (rows with ``step`` set, and TensorBoard scalars). 0 = a twentieth of the phase's
    steps (every step in a phase of fewer than 40), so that every curve has at least 20 points."""
    val_every: int = bounded(0, 0)
    """Steps between points of the validation curve (with ``val_batches``); 0 = as ``log_every``."""
    tensorboard: bool = True
    """Write the curves (losses, throughput, learning rate) as TensorBoard event files in RUN/tensorboard/
    while training (no dependency; viewing them needs the optional extra ``bench[tensorboard]``)."""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, cuda:1, ..."""
    threads: int = bounded(0, 0)
    """torch intra-op threads on CPU; 0 = torch's default."""
    amp: Literal["off", "bf16", "auto"] = "off"
    """Autocast precision for the training forward passes: off (float32), bf16, or auto: bf16 where the device
    computes it natively (CUDA with bf16 support; a CPU with AVX512-BF16 or AMX), else float32. A CPU without
    them emulates bf16: GIM's step at cifar10's small preset took 3.53 s in bf16 against 0.37 s in float32 on
    a 2-core AVX2 machine. Each run records the precision it used (``precision`` column)."""
    channels_last: bool = False
    """Use the channels-last memory format for image encoders."""
    reuse_heap: bool = True
    """CPU with glibc: after the warm-up steps, and while probing, keep memory freed by a step in the process
    heap for the next one instead of unmapping it and page-faulting it in again (``bench.measure.HeapReuse``):
    GIM's step at the stl10 memory preset took 1.85 s instead of 2.16 s. Memory is measured with it off."""
    stages: int = bounded(1, 1)
    """Module-parallel training: this many processes train the modules at once, each a contiguous group of
    modules, streaming every batch's module outputs forward to the next (``bench.pipeline``). Local methods
    only (per-module learners, one phase). Gives the same losses and results as one process, step for step.
    On CPU each stage takes ``train.threads`` threads (0: the machine's cores shared out); on CUDA stage s
    takes device s (mod the devices there are)."""
    pipeline_depth: int = bounded(2, 1)
    """Batches a stage may have queued for sending to the next stage before it waits (the transport may hold
    a few more small ones in its buffers); the results do not depend on it."""
    stage_modules: tuple[tuple[int, ...], ...] = ()
    """The modules of each stage, e.g. [[0], [1, 2]]: contiguous, in order, covering the modules the run
    trains. Empty: balanced by each module's step time, measured by a short profiling pass before training
    (recorded as rows ``profile_module_s`` and ``stage_of_module``)."""
    deterministic: bool = True
    """torch.use_deterministic_algorithms: bit-identical reruns and resumes (the loss's index backward is
    otherwise order-dependent across threads); turn off for speed on GPUs if exactness does not matter."""


@dataclass(frozen=True)
class EvalConfig:
    """Linear-probe settings (section ``eval``)."""

    all_modules: bool = False
    """Probe every module's representation, not only the last one."""
    epochs: int = bounded(30, 1)
    """Probe training epochs over the cached features."""
    batch_size: int = bounded(256, 1)
    """Probe training batch (on the extracted features)."""
    feature_batch: int = bounded(0, 0)
    """Images per feature-extraction batch on image tasks; 0 = the training batch size, so that extraction
    (a forward pass without gradients) holds less memory than a training step. Audio tasks use
    ``task.feature_batch``."""
    amp: Literal["off", "train"] = "off"
    """Precision of feature extraction: off (float32, the default: features as every committed result was
    probed), or train (the training autocast, bf16 where ``train.amp`` gives bf16; faster there, and the
    features differ in bf16's last bits)."""
    lrs: tuple[float, ...] = bounded((1e-3,), 0.0)
    """Probe learning rates (Adam); with more than one, the best on the validation split is used."""
    val_fraction: float = bounded(0.2, 0.0, 0.9)
    """Deterministic share of the probe's training data held out to choose the learning rate."""
    weight_decay: float = bounded(0.0, 0.0)


@dataclass
class Batch:
    """A training batch already on the device: inputs and the labels the task provides."""

    x: torch.Tensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor | None = None
    """Positions of the samples in their split (set by the trainer), e.g. to read a per-sample cache."""
    seed: int | None = None
    """The step's seed (set by the trainer from the run's seed and the global step): a local method's module m
    draws its random numbers from a stream seeded by (seed, m) (``bench.local.module_stream``), so that a
    module's draws do not depend on which other modules ran before it, in which process. None: the global
    stream as it stands."""

    def __len__(self) -> int:
        """Samples in the batch (``x`` of a later stage of a pipeline is a module's output: by index then)."""
        return self.x.shape[0] if self.index is None else self.index.shape[0]


@dataclass
class ModuleOutput:
    """What one gradient-isolated module produced.

    ``z`` goes on to the next module; ``rep`` is the module's representation used by losses and probes
    (vision: (B, C, 7, 7) patch grid; audio: (B, C, L) sequence); ``target`` is what a predictive loss on
    this module predicts: ``rep`` itself, except for an autoregressive module, which predicts the
    representation of the module below it (its input).
    """

    z: torch.Tensor
    rep: torch.Tensor
    target: torch.Tensor


@dataclass
class Metric:
    """One measured value: becomes one row of ``rows.csv``."""

    metric: str
    value: float
    module: int | None = None
    epoch: int | None = None
    step: int | None = None
    """Set on the points of a loss curve: the run's global step count when it was measured."""


class ModularEncoder(nn.Module):
    """An encoder split by depth into modules; ``iter_modules(detach=True)`` is the one isolation point.

    Subclasses define ``blocks`` (an ``nn.ModuleList``), ``prepare(x)`` (e.g. patchify the image) and
    ``module_output(m, z_in, z_out)`` (how module m's raw output becomes its representation and target).
    """

    blocks: nn.ModuleList

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def module_output(self, m: int, z_in: torch.Tensor, rep_in: torch.Tensor | None, z: torch.Tensor) -> ModuleOutput:
        raise NotImplementedError

    def iter_modules(self, x: torch.Tensor, detach: bool, upto: int | None = None) -> Iterator[ModuleOutput]:
        """Run the modules in order, yielding each output before the next module runs.

        With ``detach=True`` every module's input is the previous module's output detached, so no
        gradient crosses a module boundary; a caller may back-propagate each module's loss before asking
        for the next one, so that only one module's graph is alive at a time.
        """
        return self.iter_from(self.prepare(x), 0, detach, upto)

    def iter_from(self, z: torch.Tensor, first: int, detach: bool, upto: int | None = None) -> Iterator[ModuleOutput]:
        """As ``iter_modules`` from module ``first``, whose input is ``z`` (module ``first - 1``'s output ``z``,
        or the prepared input when ``first`` is 0): how a stage of a module-parallel run continues the
        network from the stage before it."""
        rep_in = None
        last = len(self.blocks) - 1 if upto is None else upto
        for m in range(first, last + 1):
            if detach:
                z = z.detach()
                rep_in = None if rep_in is None else rep_in.detach()
            out = self.module_output(m, z, rep_in, self.blocks[m](z))
            yield out
            z, rep_in = out.z, out.rep

    def forward_modules(self, x: torch.Tensor, detach: bool, upto: int | None = None) -> list[ModuleOutput]:
        return list(self.iter_modules(x, detach=detach, upto=upto))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last module's representation, end to end (no detach)."""
        return self.forward_modules(x, detach=False)[-1].rep

    def describe_layers(self, m: int) -> str:
        """A short human description of module m's layers (for ``bench describe``)."""
        return type(self.blocks[m]).__name__


FeatureFn = Callable[[torch.Tensor], list[torch.Tensor]]
"""Maps a batch of inputs to one representation per module (the probes' input), without gradients."""


class Task:
    """Base class of tasks: data, encoder, evaluation. Register with ``@TASKS.register(name)``."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    modality: ClassVar[Literal["vision", "audio"]]
    Config: ClassVar[type]
    label_sets: ClassVar[tuple[str, ...]] = ()
    """Label sets the probes report, e.g. ("class",) -> metric ``class_acc``."""
    presets: ClassVar[dict[str, dict]] = {}
    """Preset name -> nested overrides of the sections task/train/eval."""
    needs_data: ClassVar[bool] = True
    """False for embedded (procedurally generated) tasks."""

    def __init__(self, config: Any, data_root: Path | None, seed: int) -> None:
        self.config = config
        self.data_root = data_root
        self.seed = seed

    def build_encoder(self) -> ModularEncoder:
        raise NotImplementedError

    def example_input(self, batch_size: int) -> torch.Tensor:
        """A batch of inputs of the training shape (for describe, memory and throughput checks)."""
        raise NotImplementedError

    def prepare(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw inputs in the task's storage format (e.g. uint8 images, int16 waveforms) made into the encoder's
        input exactly as the evaluation makes its test batches (no augmentation); for one's own data
        (``bench.load_encoder``). Raise ValueError naming the expected format when ``raw`` is not in it."""
        raise NotImplementedError(f"task {type(self).__name__} does not say how to prepare raw inputs")

    def pretrain_split(self, supervised: bool) -> str:
        """The split a method pretrains on: unlabelled data for self-supervised methods."""
        return "train"

    def split_size(self, split: str) -> int:
        raise NotImplementedError

    def num_classes_of(self, label_set: str) -> int:
        """Classes of a label set (e.g. ``class``, ``speaker``): the size of a supervised method's head."""
        raise NotImplementedError

    def validation_split(self) -> str | None:
        """The split of the per-epoch validation loss (``train.val_batches``); None when there is none."""
        return None

    def batch(
        self, split: str, indices: torch.Tensor, device: torch.device, generator: torch.Generator, augment: bool
    ) -> Batch:
        """The samples ``indices`` of ``split`` as a Batch on ``device``, augmented with ``generator``."""
        raise NotImplementedError

    def evaluate(
        self, features: FeatureFn, cfg: EvalConfig, modules: list[int], device: torch.device, seed: int
    ) -> list[Metric]:
        """Train and test the probes on the representations of ``modules``; return accuracy metrics."""
        raise NotImplementedError

    def check_data(self) -> None:
        """Raise a DataError saying what is missing and how to get it, before any training starts."""

    def check_evaluation(self, cfg: EvalConfig) -> None:
        """Raise a DataError when the evaluation would fail on this data (an empty or unlabelled probe split),
        before any training starts. Called after ``check_data``."""


class Method:
    """Base class of methods: losses, heads, optimiser, gradient flow. Register with ``@METHODS.register``."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    Config: ClassVar[type]
    supervised: ClassVar[bool] = False
    """Pretrains on labelled data (batches carry labels)."""
    trains: ClassVar[bool] = True
    """False for methods without a training phase (random init, hand-made features)."""
    local: ClassVar[bool] = False
    """True for methods of per-module learners (``bench.local.LocalMethod``): the harness drives their
    modules, which is what lets them train in separate processes (``train.stages``)."""
    gradient_isolated: ClassVar[bool] = False
    """True when no gradient crosses a module boundary (each module learns from its own loss); the contract
    tests check it on every embedded task."""
    modalities: ClassVar[tuple[str, ...]] = ("vision", "audio")
    """The task modalities the method applies to (e.g. the audio ablations: ``("audio",)``)."""
    presets: ClassVar[dict[str, dict[str, dict]]] = {}
    """Preset name -> modality ("vision", "audio" or "any") -> nested overrides of any section."""
    variant_keys: ClassVar[tuple[str, ...]] = ()
    """Config keys that make a *variant* of the method when they differ from their default (e.g. GIM's
    ``schedule``): the tables show each variant as its own row (``variant`` column, ``bench.spec.variant_of``)."""
    work_dir: Path | None = None
    """A folder of the run where the method may keep files (set by the trainer before training)."""

    @classmethod
    def overrides(cls, preset: str | None, modality: str) -> dict:
        """Overrides this method contributes for ``preset`` on a task of ``modality``."""
        from bench.config import merge

        bundle = cls.presets.get(preset or "", {})
        return merge(bundle.get("any", {}), bundle.get(modality, {}))

    def __init__(self, config: Any, encoder: ModularEncoder, task: Task, device: torch.device) -> None:
        self.config = config
        self.encoder = encoder
        self.task = task
        self.device = device

    def num_phases(self) -> int:
        """Training phases run one after another (e.g. one per module for iterative training)."""
        return 1

    def train_step(self, batch: Batch, phase: int) -> dict[int, float]:
        """One optimisation step; returns the loss of each trained module (module index -> loss)."""
        raise NotImplementedError

    def val_losses(self, batch: Batch, phase: int) -> dict[int, float]:
        """Per-module validation losses on ``batch`` without updating anything (default: none)."""
        return {}

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The representation of every module for the probes."""
        return [out.rep for out in self.encoder.iter_modules(x, detach=True)]

    def state_dict(self) -> dict:
        """Everything needed to resume: heads and optimiser state (the encoder is saved by the harness)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def learning_rates(self) -> dict[str, float]:
        """The current learning rate of each optimiser (for the live curves): read from the attribute
        ``optimizer`` or the list ``optimizers``; override when a method keeps them elsewhere."""
        optimizers = getattr(self, "optimizers", None) or [getattr(self, "optimizer", None)]
        named = {"lr" if len(optimizers) == 1 else f"lr/{i}": o for i, o in enumerate(optimizers)}
        return {name: float(o.param_groups[0]["lr"]) for name, o in named.items() if o is not None}

    def extra_metrics(self) -> list[Metric]:
        """Method-specific metrics recorded with the run (e.g. the prediction offset in use)."""
        return []
