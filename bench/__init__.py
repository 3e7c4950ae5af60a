"""bench: a benchmark harness for local-learning methods (Greedy InfoMax and its baselines)."""

import os

# OpenMP threads that sleep while waiting instead of spinning: on a CPU shared with other processes, spinning
# threads wait for a descheduled peer at every parallel region (measured here: 2.4 s instead of 4.9 s per
# paper-size GIM step with another training job running). Read once, when torch loads OpenMP, so it is set
# before anything imports torch; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# The plugin surface: everything a method or task defined outside this repository needs.
from bench.config import ConfigError, bounded  # noqa: E402
from bench.data import DataError  # noqa: E402
from bench.interfaces import (  # noqa: E402
    Batch,
    EvalConfig,
    FeatureFn,
    Method,
    Metric,
    ModularEncoder,
    ModuleOutput,
    Task,
    TrainConfig,
)
from bench.local import LocalMethod  # noqa: E402
from bench.registry import METHODS, TASKS  # noqa: E402

__all__ = [
    "METHODS", "TASKS", "Method", "LocalMethod", "Task", "Batch", "Metric", "ModularEncoder", "ModuleOutput", "FeatureFn",
    "TrainConfig", "EvalConfig", "ConfigError", "DataError", "bounded", "load_encoder",
]  # fmt: skip


def __getattr__(name: str):
    """``bench.load_encoder`` (bench/export.py), imported on first use (PEP 562): ``import bench`` stays light,
    and the package that plugins import does not itself depend on the plugin loader that export calls."""
    if name == "load_encoder":
        import importlib

        return importlib.import_module("bench.export").load_encoder
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
