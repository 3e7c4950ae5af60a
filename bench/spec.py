"""Run specifications and their resolution into validated configs.

A ``RunSpec`` names a method, a task, a seed, a preset and free-form overrides. ``resolve`` merges, in this
order, the plugins' dataclass defaults, the task's preset, the method's preset, the method's fixed task
settings and the spec's overrides, validates every section strictly and hashes the result: the run id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from bench import config as cfg
from bench.interfaces import EvalConfig, Method, Task, TrainConfig
from bench.registry import METHODS, TASKS

DEFAULT_METHOD = "gim"
DEFAULT_TASK = "synthetic_textures"
PRESETS = ("smoke", "small", "paper", "memory")
SECTIONS = ("task", "method", "train", "eval")


@dataclass(frozen=True)
class RunSpec:
    """What to run. ``overrides`` is a nested dict over the sections task/method/train/eval."""

    method: str = DEFAULT_METHOD
    task: str = DEFAULT_TASK
    seed: int = 0
    preset: str | None = None
    overrides: dict = field(default_factory=dict)
    experiment: str = "adhoc"
    data_root: str | None = None


@dataclass(frozen=True)
class Resolved:
    """A validated run: plugin classes, one config per section, the resolved dict and its hash."""

    spec: RunSpec
    method_cls: type[Method]
    task_cls: type[Task]
    method: Any
    task: Any
    train: TrainConfig
    eval: EvalConfig
    as_dict: dict
    config_hash: str

    @property
    def run_id(self) -> str:
        return self.config_hash[:12]


def check_preset(preset: str | None) -> None:
    if preset is not None and preset not in PRESETS:
        import difflib

        close = difflib.get_close_matches(preset, PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise cfg.ConfigError(f"unknown preset {preset!r}.{hint} Presets: {', '.join(PRESETS)}")


def merged_overrides(spec: RunSpec, method_cls: type[Method], task_cls: type[Task]) -> dict:
    unknown = sorted(set(spec.overrides) - set(SECTIONS))
    if unknown:
        raise cfg.ConfigError(f"unknown config section {unknown[0]!r}; sections are {', '.join(SECTIONS)}")
    layers = [
        task_cls.presets.get(spec.preset or "", {}),
        method_cls.overrides(spec.preset, task_cls.modality),
        method_cls.overrides("always", task_cls.modality),
        spec.overrides,
    ]
    merged: dict = {}
    for layer in layers:
        merged = cfg.merge(merged, layer)
    return merged


def check_modality(spec: RunSpec, method_cls: type[Method], task_cls: type[Task]) -> None:
    """A method applies only to tasks of the modalities it declares (the audio ablations, MFCC: audio)."""
    if task_cls.modality in method_cls.modalities:
        return
    fits = [m for m in METHODS.names() if task_cls.modality in METHODS.get(m).modalities]
    raise cfg.ConfigError(
        f"method {spec.method} applies to {' and '.join(method_cls.modalities)} tasks, and {spec.task} is a "
        f"{task_cls.modality} task; methods for it: {', '.join(fits)}"
    )


def resolve(spec: RunSpec) -> Resolved:
    """Validate ``spec`` and build every section's config; raises ConfigError or UnknownNameError."""
    check_preset(spec.preset)
    method_cls, task_cls = METHODS.get(spec.method), TASKS.get(spec.task)
    check_modality(spec, method_cls, task_cls)
    values = merged_overrides(spec, method_cls, task_cls)
    method = cfg.build(method_cls.Config, values.get("method", {}), "method")
    task = cfg.build(task_cls.Config, values.get("task", {}), "task")
    train = cfg.build(TrainConfig, values.get("train", {}), "train")
    evaluation = cfg.build(EvalConfig, values.get("eval", {}), "eval")
    if train.stages > 1 and not method_cls.local:  # the rest of the placement is checked with the encoder built
        raise cfg.ConfigError(f"train.stages={train.stages}: method {spec.method} trains the whole network at "
                              "once; module-parallel stages need a local method (gim, greedy_supervised, ...)")  # fmt: skip
    as_dict = {
        "method": {"name": spec.method, "version": method_cls.version, **cfg.to_dict(method)},
        "task": {"name": spec.task, "version": task_cls.version, **cfg.to_dict(task)},
        "train": cfg.to_dict(train),
        "eval": cfg.to_dict(evaluation),
        "seed": spec.seed,
    }
    digest = hashlib.sha256(json.dumps(as_dict, sort_keys=True).encode()).hexdigest()
    return Resolved(spec, method_cls, task_cls, method, task, train, evaluation, as_dict, digest)


def variant_of(resolved: Resolved) -> str:
    """The method settings named in its ``variant_keys`` that differ from their default, as
    ``key=value[,key=value]`` (tuples joined by ``+``): ``""`` for the method's default configuration."""
    defaults = resolved.method_cls.Config()
    parts = []
    for key in resolved.method_cls.variant_keys:
        value = getattr(resolved.method, key)
        if value != getattr(defaults, key):
            shown = "+".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
            parts.append(f"{key}={shown}")
    return ",".join(parts)
