"""Experiment files: methods x tasks x seeds, with overrides at each level, expanded into RunSpecs.

An experiment file opens with a comment giving the command that runs it, then::

    experiment: smoke            # label recorded in the rows (default: the file's folder name)
    preset: smoke                # smoke | small | paper | memory
    seeds: [0, 1, 2]             # a list, or a range "0-2"
    data_root: data              # optional; relative to the current directory; --data-root wins
    overrides: {train: {threads: 1}}          # every run (sections task/method/train/eval)
    methods:                     # the methods, each with its own overrides ({} for none); a list; or
      gim: {}                    # `all`: every registered method (built-in and plugins)
      gim@iterative:             # NAME@LABEL: method NAME again, with other settings (a variant)
        method: {schedule: iterative}
      random_init: {}
    tasks:
      synthetic_textures:
        methods: [gim]           # optional: the methods run on this task (default, or `all`: those of
                                 # the file that apply to the task's modality); a mapping name ->
                                 # overrides gives overrides for that method on this task
        overrides: {}            # this task's runs
        slurm: {timeout_min: 30} # this task's job resources (see bench.sweep.slurm.Resources)
    slurm: {partition: gpu}      # every job's resources

Overrides merge from general to specific: ``overrides``, ``methods.M``, ``tasks.T.overrides``,
``tasks.T.methods.M``. A method key ``NAME@LABEL`` runs the registered method ``NAME`` under its own
overrides, so a file can hold a method's variants (e.g. GIM's iterative schedule for Figure 3, its first
module alone for Table 2) beside its default; the label only tells the keys apart, the tables name the variant
from the run's resolved settings. Methods that do not apply to a task's modality (e.g. the audio-only
ablations on a vision task) are left out of its default list; naming one explicitly is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench import config as cfg
from bench.data import data_root as default_data_root
from bench.registry import METHODS, TASKS
from bench.spec import RunSpec, check_preset

TOP_KEYS = ("experiment", "preset", "seeds", "data_root", "overrides", "methods", "tasks", "slurm")
TASK_KEYS = ("methods", "overrides", "slurm")


@dataclass(frozen=True)
class TaskEntry:
    methods: dict[str, dict]
    """Method name -> overrides for that method on this task."""
    overrides: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    preset: str | None
    seeds: tuple[int, ...]
    data_root: str | None
    overrides: dict
    methods: dict[str, dict]
    tasks: dict[str, TaskEntry]
    slurm: dict

    def expand(self) -> list[RunSpec]:
        """Every run of the file, in file order: tasks, then methods, then seeds."""
        root = str(default_data_root(Path(self.data_root) if self.data_root else None).resolve())
        specs = []
        for task, entry in self.tasks.items():
            for method, task_method_overrides in entry.methods.items():
                overrides = self.overrides
                for layer in (self.methods[method], entry.overrides, task_method_overrides):
                    overrides = cfg.merge(overrides, layer)
                specs += [
                    RunSpec(method=method_name(method), task=task, seed=seed, preset=self.preset, overrides=overrides,
                            experiment=self.name, data_root=root)
                    for seed in self.seeds
                ]  # fmt: skip
        return specs


def method_name(key: str) -> str:
    """``gim@iterative`` -> ``gim``: the registered method a ``methods`` key runs."""
    return key.split("@", 1)[0]


def load(path: Path, data_root: Path | None = None) -> Experiment:
    """Read and check the structure of an experiment file; names and keys are checked by ``validate``."""
    raw = cfg.load_yaml(path)
    check_keys(raw, TOP_KEYS, str(path))
    for key in ("methods", "tasks"):
        if not raw.get(key):
            raise cfg.ConfigError(f"{path}: `{key}` is missing or empty; list at least one {key[:-1]}")
    preset = raw.get("preset")
    check_preset(preset)
    methods = {m: {} for m in METHODS.names()} if raw["methods"] == "all" else name_map(raw["methods"], f"{path}: methods")
    tasks = {
        name: task_entry(name, value, methods, f"{path}: tasks.{name}") for name, value in raw["tasks"].items()
    }
    root = str(data_root) if data_root is not None else raw.get("data_root")
    return Experiment(
        name=str(raw.get("experiment") or path.resolve().parent.name),
        path=path, preset=preset, seeds=parse_seeds(raw.get("seeds", [0]), f"{path}: seeds"),
        data_root=root, overrides=mapping(raw.get("overrides"), f"{path}: overrides"),
        methods=methods, tasks=tasks, slurm=mapping(raw.get("slurm"), f"{path}: slurm"),
    )  # fmt: skip


def task_entry(task: str, value: object, methods: dict[str, dict], where: str) -> TaskEntry:
    value = mapping(value, where)
    check_keys(value, TASK_KEYS, where)
    listed = value.get("methods", "all")
    chosen = fitting(task, methods) if listed == "all" else name_map(listed, f"{where}.methods")
    outside = [m for m in chosen if m not in methods]
    if outside:
        raise cfg.ConfigError(
            f"{where}.methods names {', '.join(outside)}, which the file's `methods` does not list; "
            f"add it there or choose from {', '.join(methods)}"
        )
    overrides, slurm = (
        mapping(value.get("overrides"), f"{where}.overrides"),
        mapping(value.get("slurm"), f"{where}.slurm"),
    )
    return TaskEntry(chosen, overrides, slurm)


def fitting(task: str, methods: dict[str, dict]) -> dict[str, dict]:
    """The methods (keys, with their labels) that apply to ``task``'s modality; unknown task or method names
    stay, for ``validate`` to name them."""
    if task not in TASKS:
        return {m: {} for m in methods}
    modality = TASKS.get(task).modality
    return {m: {} for m in methods
            if method_name(m) not in METHODS or modality in METHODS.get(method_name(m)).modalities}  # fmt: skip


def name_map(value: object, where: str) -> dict[str, dict]:
    """A list of names, or a mapping name -> overrides (None meaning none)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if len(set(value)) != len(value):
            raise cfg.ConfigError(f"{where} lists a name twice: {value}")
        return {v: {} for v in value}
    if isinstance(value, dict):
        return {str(k): mapping(v, f"{where}.{k}") for k, v in value.items()}
    raise cfg.ConfigError(f"{where} must be a list of names or a mapping name -> overrides, got {value!r}")


def mapping(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise cfg.ConfigError(f"{where} must be a mapping, got {value!r}")
    return value


def check_keys(value: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise cfg.ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(known)}")


def parse_seeds(value: object, where: str) -> tuple[int, ...]:
    """``[0, 1, 2]``, ``3`` (one seed) or ``"0-2"``."""
    if isinstance(value, bool):
        raise cfg.ConfigError(f'{where} must be a list of integers or a range like "0-4", got {value!r}')
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        first, sep, last = value.partition("-")
        if sep and first.strip().isdigit() and last.strip().isdigit() and int(first) <= int(last):
            return tuple(range(int(first), int(last) + 1))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        if len(set(value)) == len(value):
            return tuple(value)
    raise cfg.ConfigError(f'{where} must be a list of distinct integers or a range like "0-4", got {value!r}')
