"""From an experiment file to checked runs: names, keys, data and resources, before anything is submitted.

``check(experiment)`` resolves every run (unknown names and keys are errors), asks each task whether its data
is present, builds each task's job resources, and compares each run's effective batch with its preset's
protocol. All problems are reported together, in one error that says what to fix.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from bench import config as cfg
from bench.data import DataError
from bench.registry import UnknownNameError
from bench.spec import Resolved, RunSpec, resolve, variant_of
from bench.sweep import slurm, state
from bench.sweep.experiment import Experiment
from bench.sweep.state import PlannedRun

log = logging.getLogger(__name__)
WORLD_SIZE = 1  # data-parallel training inside a job is not implemented: every run uses one device


@dataclass
class PlanItem:
    spec: RunSpec
    run: PlannedRun
    resources: slurm.Resources


@dataclass
class Plan:
    items: list[PlanItem]
    warnings: list[str]


def check(exp: Experiment, data: bool = True) -> Plan:
    """Every run of ``exp``, checked (its data too unless ``data`` is false); raises ConfigError listing
    every problem found."""
    problems: list[str] = []
    warnings: list[str] = []
    resources = task_resources(exp, problems, warnings)
    items, data_checked, places = [], set(), {}
    for spec in exp.expand():
        where = f"{spec.method} on {spec.task}"
        try:
            resolved = resolve(spec)
        except UnknownNameError as err:
            problems.append(str(err))  # once per name, not once per run
            continue
        except cfg.ConfigError as err:
            problems.append(f"{where}: {err}")
            continue
        key = (spec.task, repr(resolved.as_dict["task"]))
        if data and key not in data_checked:
            data_checked.add(key)
            check_data(resolved, problems)
        run = planned_run(resolved)
        place = state.slot(spec.experiment, run.task, run.method, run.variant, run.seed)
        same_place(places.setdefault(place, resolved), resolved, run.variant, problems)
        if spec.task in resources:
            items.append(PlanItem(spec, run, resources[spec.task]))
    problems = list(dict.fromkeys(problems))  # the same problem for every seed once
    if problems:
        listing = "\n  - ".join(problems)
        raise cfg.ConfigError(f"{exp.path} has {len(problems)} problem(s):\n  - {listing}")
    warnings += batch_warnings(items)
    return Plan(items, warnings)


def same_place(first: Resolved, other: Resolved, variant: str, problems: list[str]) -> None:
    """A problem when two runs of the file would fill one place of the experiment (``state.slot``: task, method,
    variant, seed) with different settings: the later would supersede the other, so `bench collect` would keep
    one and a swept setting would silently vanish from the results."""
    if first.run_id == other.run_id:
        return
    a, b = flat(first.as_dict), flat(other.as_dict)
    diff = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
    method, task = first.spec.method, first.spec.task
    keys = ", ".join(first.method_cls.variant_keys) or "none"
    problems.append(f"{method} on {task}: two entries give runs with different settings ({diff}) but the same "
                    f"results cell ({method}{f' [{variant}]' if variant else ''}): `bench collect` would keep "
                    f"one and mark the other superseded. Runs of a method are told apart only by its variant "
                    f"keys ({keys}); sweep other settings as separate experiment files with their own --out")  # fmt: skip


def flat(tree: dict, prefix: str = "") -> dict:
    """Nested settings as dotted keys: {"method": {"lr": 1}} -> {"method.lr": 1}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def task_resources(exp: Experiment, problems: list[str], warnings: list[str]) -> dict[str, slurm.Resources]:
    out = {}
    for task, entry in exp.tasks.items():
        try:
            out[task] = slurm.resources(exp.preset, exp.slurm, entry.slurm)
        except cfg.ConfigError as err:
            problems.append(f"slurm resources of {task}: {err}")
            continue
        if out[task].gpus_per_node > 1:
            warnings.append(
                f"{task}: slurm.gpus_per_node={out[task].gpus_per_node}, but a run trains on one device "
                "(data-parallel training inside a job is not implemented); ask for 1 GPU per run"
            )
    return out


def check_data(resolved: Resolved, problems: list[str]) -> None:
    spec = resolved.spec
    try:
        task = resolved.task_cls(resolved.task, Path(spec.data_root) if spec.data_root else None, spec.seed)
        task.check_data()
    except DataError as err:
        problems.append(f"data of {spec.task}: {err}")


def planned_run(resolved: Resolved) -> PlannedRun:
    spec = resolved.spec
    protocol = resolve(dataclasses.replace(spec, overrides={})).train.batch_size
    return PlannedRun(resolved.run_id, spec.method, spec.task, spec.seed, resolved.train.batch_size, protocol,
                      WORLD_SIZE, variant=variant_of(resolved))  # fmt: skip


def batch_warnings(items: list[PlanItem]) -> list[str]:
    seen, out = set(), []
    for item in items:
        run = item.run
        if run.effective_batch_size != run.protocol_batch_size and (run.method, run.task) not in seen:
            seen.add((run.method, run.task))
            out.append(
                f"{run.method} on {run.task}: effective batch {run.effective_batch_size} differs from the "
                f"{item.spec.preset or 'default'} protocol's {run.protocol_batch_size}"
            )
    return out
