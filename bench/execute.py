"""``execute(spec, run_dir)``: the one place where a Method meets a Task.

Named steps: resolve the config, seed, build the task, build the encoder, build the method, train
(resumable), evaluate, record. Whatever happens, the run ends with ``rows.csv`` written atomically: the
metrics when it succeeded, else one row with the status and the error.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench import progress, record
from bench.aggregate import variant_from_config
from bench.interfaces import Metric
from bench.measure import HeapReuse, device_label, resolve_device
from bench.spec import Resolved, RunSpec, resolve
from bench.trainer import Interrupted, StopFlag, Trainer

log = logging.getLogger("bench.run")


@dataclass
class RunOutcome:
    run_id: str
    run_dir: str
    status: str
    error: str = ""
    rows: list[dict] | None = None
    reused: bool = False


def execute(spec: RunSpec, run_dir: Path, quiet: bool = False) -> RunOutcome:
    """Run ``spec`` in ``run_dir`` (resuming from its checkpoint if one exists) and record its rows."""
    resolved = resolve(spec)
    progress.set_quiet(quiet)
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_config(run_dir, resolved.as_dict)
    handler = attach_log(run_dir)
    stop = StopFlag().install()
    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    base = provenance(resolved, started)
    try:
        metrics, restarts = train_and_evaluate(resolved, run_dir, stop, base)
        status, error = record.STATUS_OK, ""
    except (Interrupted, KeyboardInterrupt) as err:
        metrics, restarts = [], None
        status, error = record.STATUS_INTERRUPTED, str(err) or "interrupted (Ctrl-C)"
        log.warning("run %s interrupted: %s; run the same command again to resume", resolved.run_id, error)
    except Exception as err:  # a failed run still writes its row
        metrics, restarts = [], None
        status, error = record.STATUS_FAILED, f"{type(err).__name__}: {err}"
        log.error("run %s failed:\n%s", resolved.run_id, traceback.format_exc())
    finally:
        stop.uninstall()
    wall = time.perf_counter() - t0
    rows = make_rows(base, metrics, status, error, wall, restarts)
    rows = record.read_rows(record.write_rows(run_dir, rows))
    log.info("run %s %s in %.1f s; rows in %s", resolved.run_id, status, wall, run_dir / record.ROWS_FILE)
    logging.getLogger().removeHandler(handler)
    handler.close()
    return RunOutcome(resolved.run_id, str(run_dir), status, error, rows)


def train_and_evaluate(resolved: Resolved, run_dir: Path, stop: StopFlag, base: dict) -> tuple:
    train_cfg, spec = resolved.train, resolved.spec
    device = resolve_device(train_cfg.device)
    base["device"] = device_label(device)
    if train_cfg.threads and device.type == "cpu":
        torch.set_num_threads(train_cfg.threads)
    if train_cfg.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(train_cfg.deterministic, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN, a debugging aid against reads of uninitialised
    # memory that changes no result: 1,122 fills, 0.12 s of a 2.6 s GIM step at the stl10 memory preset (profiled).
    torch.utils.deterministic.fill_uninitialized_memory = False
    data_root = Path(spec.data_root).expanduser() if spec.data_root else None
    task = resolved.task_cls(resolved.task, data_root, spec.seed)
    task.check_data()
    torch.manual_seed(spec.seed)
    encoder = task.build_encoder().to(device)
    if train_cfg.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    method = resolved.method_cls(resolved.method, encoder, task, device)
    log.info("run %s: %s on %s, seed %d, device %s", resolved.run_id, spec.method, spec.task, spec.seed, device)
    trainer = Trainer(task, method, encoder, train_cfg, spec.seed, device, run_dir, stop)
    result = trainer.run()
    stop.uninstall()  # from here on signals take their usual course (submitit's requeue, Ctrl-C)
    n_modules = len(encoder.blocks)
    modules = list(range(n_modules)) if resolved.eval.all_modules else [n_modules - 1]
    encoder.eval()
    with HeapReuse(train_cfg.reuse_heap and device.type == "cpu"):
        accuracies = task.evaluate(method.features, resolved.eval, modules, device, spec.seed)
    last = n_modules - 1
    # The main representation's accuracy has an empty module column; other modules carry their index.
    for metric in accuracies:
        if metric.module == last:
            metric.module = None
    return result.metrics + accuracies + method.extra_metrics(), result.restarts


def provenance(resolved: Resolved, started: str) -> dict:
    sha, dirty = record.git_state()
    spec = resolved.spec
    return {
        "run_id": resolved.run_id,
        "experiment": spec.experiment,
        "method": spec.method,
        "variant": variant_from_config(resolved.as_dict),
        "task": spec.task,
        "seed": spec.seed,
        "preset": spec.preset or "",
        "method_version": resolved.method_cls.version,
        "task_version": resolved.task_cls.version,
        "git_sha": sha,
        "git_dirty": dirty,
        "device": "",
        "torch_version": torch.__version__,
        "config_hash": resolved.config_hash,
        "started_at": started,
        "world_size": 1,
        "batch_size": resolved.train.batch_size,
        "host": record.host_name(),
    }


def make_rows(base: dict, metrics: list[Metric], status: str, error: str, wall: float, restarts) -> list[dict]:
    common = {**base, "status": status, "error": error, "wall_s": round(wall, 3), "restarts": restarts or 0}
    if status != record.STATUS_OK:
        return [{**common, "metric": "status", "value": ""}]
    rows = [
        {**common, "metric": m.metric, "value": repr(float(m.value)), "module": m.module, "epoch": m.epoch}
        for m in metrics
    ]
    rows.append({**common, "metric": "wall_s", "value": repr(round(wall, 3))})
    return rows


def attach_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / record.LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler
