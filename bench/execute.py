"""``execute(spec, run_dir)``: the one place where a Method meets a Task.

Named steps: resolve the config, lock the run folder, prepare (check device, data and evaluation inputs;
build the task, the encoder and the method), train (resumable), evaluate, record. Bad input stops the run
before anything is written but ``run.log``; once training starts, the run ends with ``rows.csv`` written
atomically whatever happens: the metrics when it succeeded, else one row with the status (failed, diverged,
interrupted) and the error.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench import pipeline, plugins, progress, record
from bench.config import ConfigError
from bench.data import DataError
from bench.interfaces import EvalConfig, FeatureFn, Method, Metric, ModularEncoder, Task, TrainConfig
from bench.measure import PeakMemory, RunPeak, device_label, precision, resolve_device, synchronize
from bench.spec import Resolved, RunSpec, resolve, variant_of
from bench.trainer import Diverged, Interrupted, StopFlag, Trainer

log = logging.getLogger("bench.run")
trace = logging.getLogger("bench.trace")
"""Tracebacks of bad input: in run.log only (the terminal shows one message)."""


@dataclass
class RunOutcome:
    run_id: str
    run_dir: str
    status: str
    error: str = ""
    rows: list[dict] | None = None
    reused: bool = False


def execute(spec: RunSpec, run_dir: Path, quiet: bool = False) -> RunOutcome:
    """Run ``spec`` in ``run_dir`` (resuming from its checkpoint if one exists) and record its rows.

    Bad input (config, device, data, anything the evaluation will need) raises ConfigError or DataError
    before the first step, with the traceback in ``run.log`` and no rows written; a second process on the
    same run folder raises RunBusy naming the first one.
    """
    resolved = resolve(spec)
    progress.set_quiet(quiet)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        handler = attach_log(run_dir)
        try:
            return execute_locked(resolved, run_dir)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()


def execute_locked(resolved: Resolved, run_dir: Path) -> RunOutcome:
    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    base = provenance(resolved, started)
    run_peak = RunPeak(resolve_device_quietly(resolved.train.device))
    run_peak.start()
    try:
        run = prepare(resolved, base)
    except (ConfigError, DataError) as err:
        trace.info("bad input, nothing run:\n%s", traceback.format_exc())
        log.info("run %s not started: %s", resolved.run_id, err)
        raise
    record.write_config(run_dir, resolved.as_dict)
    stop = StopFlag().install()
    earlier = 0.0
    try:
        metrics, restarts, earlier = train_and_evaluate(run, run_dir, stop)
        metrics.append(Metric("run_peak_mem_bytes", float(run_peak.peak_bytes())))
        status, error = record.STATUS_OK, ""
    except (Interrupted, KeyboardInterrupt) as err:
        metrics, restarts = [], None
        status, error = record.STATUS_INTERRUPTED, str(err) or "interrupted (Ctrl-C)"
        log.warning("run %s interrupted: %s; run the same command again to resume", resolved.run_id, error)
    except Diverged as err:
        metrics, restarts = [], None
        status, error = record.STATUS_DIVERGED, str(err)
        log.error("run %s diverged: %s; its checkpoint is kept; lower the learning rate (method.lr) or check "
                  "the data", resolved.run_id, error)  # fmt: skip
    except Exception as err:  # a failed run still writes its row
        metrics, restarts = [], None
        status, error = record.STATUS_FAILED, f"{type(err).__name__}: {err}"
        log.error("run %s failed:\n%s", resolved.run_id, traceback.format_exc())
    finally:
        stop.uninstall()
    wall = time.perf_counter() - t0 + earlier
    rows = make_rows(base, metrics, status, error, wall, restarts)
    rows = record.read_rows(record.write_rows(run_dir, rows))
    log.info("run %s %s in %.1f s; rows in %s", resolved.run_id, status, wall, run_dir / record.ROWS_FILE)
    return RunOutcome(resolved.run_id, str(run_dir), status, error, rows)


@dataclass
class Prepared:
    """A run whose config, device, data and evaluation inputs were checked, with its plugins built."""

    resolved: Resolved
    device: torch.device
    task: Task
    encoder: ModularEncoder
    method: Method


def prepare(resolved: Resolved, base: dict, stage: int | None = None, threads: int = 0) -> Prepared:
    """Everything checkable before the first step: raises ConfigError or DataError naming the key or file.
    ``stage``: building stage ``stage`` of a module-parallel run (on CUDA its own device) with ``threads``."""
    train_cfg, spec = resolved.train, resolved.spec
    if resolved.method_cls.trains and train_cfg.epochs < 1:
        raise ConfigError(f"train.epochs={train_cfg.epochs}: method {spec.method} trains, so it needs at least "
                          "one epoch (random_init gives an untrained encoder)")  # fmt: skip
    device = resolve_device(train_cfg.device)
    if stage is not None and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", stage % torch.cuda.device_count())
    base["device"] = device_label(device)
    base["precision"] = precision(train_cfg.amp, device) if resolved.method_cls.trains else "fp32"
    threads = threads or train_cfg.threads
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    if train_cfg.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(train_cfg.deterministic, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN, a debugging aid against reads of uninitialised
    # memory that changes no result: 1,122 fills, 0.12 s of a 2.6 s GIM step at the stl10 memory preset (profiled).
    torch.utils.deterministic.fill_uninitialized_memory = False
    data_root = Path(spec.data_root).expanduser() if spec.data_root else None
    try:
        task = resolved.task_cls(resolved.task, data_root, spec.seed)
        task.check_data()
        torch.manual_seed(spec.seed)
        encoder = task.build_encoder().to(device)
        if train_cfg.channels_last:
            encoder = encoder.to(memory_format=torch.channels_last)
        method = resolved.method_cls(resolved.method, encoder, task, device)
        pipeline.check_stages(train_cfg, method)  # type: ignore[arg-type]  (nothing to check for one stage)
    except ValueError as err:  # a plugin refusing its settings (e.g. method.train_modules out of range)
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from err
    task.check_evaluation(resolved.eval)
    return Prepared(resolved, device, task, encoder, method)


def train_and_evaluate(run: Prepared, run_dir: Path, stop: StopFlag) -> tuple:
    resolved, device, task, encoder, method = run.resolved, run.device, run.task, run.encoder, run.method
    train_cfg, spec = resolved.train, resolved.spec
    log.info("run %s: %s on %s, seed %d, device %s", resolved.run_id, spec.method, spec.task, spec.seed, device)
    if train_cfg.stages > 1:
        result = pipeline.train(run, run_dir, stop, stage_main)
    else:
        result = Trainer(task, method, encoder, train_cfg, spec.seed, device, run_dir, stop).run()
    stop.uninstall()  # from here on signals take their usual course (submitit's requeue, Ctrl-C)
    n_modules = len(encoder.blocks)
    modules = list(range(n_modules)) if resolved.eval.all_modules else [n_modules - 1]
    encoder.eval()
    eval_cfg = resolved.eval
    if not eval_cfg.feature_batch:  # extraction at the training batch: it then holds less than a training step
        eval_cfg = dataclasses.replace(eval_cfg, feature_batch=train_cfg.batch_size)
    memory = PeakMemory(device)
    memory.start()  # also has glibc release freed memory at once: evaluation keeps no freed heap
    t0 = time.perf_counter()
    accuracies = task.evaluate(features_in(method, eval_cfg, train_cfg, device), eval_cfg, modules, device, spec.seed)
    synchronize(device)
    evaluation = [
        Metric("eval_s", time.perf_counter() - t0),
        Metric("eval_peak_mem_bytes", float(memory.peak_bytes())),
    ]
    last = n_modules - 1
    # The main representation's accuracy has an empty module column; other modules carry their index.
    for metric in accuracies:
        if metric.module == last:
            metric.module = None
    return result.metrics + accuracies + evaluation + method.extra_metrics(), result.restarts, result.earlier_wall_s


def stage_main(spec: RunSpec, run_dir: str, s: int, plan: pipeline.StagePlan) -> None:
    """Entry point of stage ``s``'s process of a module-parallel run (``bench.pipeline``): build the run as
    the launcher did (same seed, same initial parameters), then train the stage's modules."""
    plugins.load_plugins()  # a spawned process has not imported the plugins
    folder = Path(run_dir)
    logging.getLogger().addHandler(pipeline.stage_log(folder, s))
    logging.getLogger().setLevel(logging.INFO)
    progress.set_quiet(s > 0 or plan.quiet)
    stop = StopFlag().install()
    try:
        run = prepare(resolve(spec), {}, stage=s, threads=plan.threads)
    except Exception as err:  # the launcher built the same run: this is not bad input but a broken stage
        outcome = pipeline.StageOutcome("failed", f"{type(err).__name__}: {err}")
        pipeline.write_json(pipeline.outcome_path(folder, s), dataclasses.asdict(outcome))
        raise
    pipeline.run_stage(run, folder, s, plan, stop)


def features_in(method: Method, eval_cfg: EvalConfig, train_cfg: TrainConfig, device: torch.device) -> FeatureFn:
    """The method's features, under the training autocast when ``eval.amp=train`` (outputs in float32)."""
    bf16 = eval_cfg.amp == "train" and precision(train_cfg.amp, device) == "bf16"
    if not bf16:
        return method.features

    def features(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return [rep.float() for rep in method.features(x)]

    return features


def resolve_device_quietly(name: str) -> torch.device:
    """The run's device for its memory tracker, before ``prepare`` checks it (cpu when it is not there)."""
    try:
        return resolve_device(name)
    except ConfigError:
        return torch.device("cpu")


class RunBusy(RuntimeError):
    """Another process is running this run folder."""


class RunLock:
    """An advisory lock on ``RUN/.lock`` holding the owner's pid: one process per run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.fh = None

    def __enter__(self) -> RunLock:
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise RunBusy(f"{self.path.parent} is in use by process {holder} (the same run started elsewhere); "
                          "wait for it to end, or stop that process, then run again") from None  # fmt: skip
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} on {record.host_name()}\n")
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.truncate(0)
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


def provenance(resolved: Resolved, started: str) -> dict:
    sha, dirty = record.git_state()
    spec = resolved.spec
    return {
        "run_id": resolved.run_id,
        "experiment": spec.experiment,
        "method": spec.method,
        "variant": variant_of(resolved),
        "task": spec.task,
        "seed": spec.seed,
        "preset": spec.preset or "",
        "method_version": resolved.method_cls.version,
        "task_version": resolved.task_cls.version,
        "git_sha": sha,
        "git_dirty": dirty,
        "device": "",
        "precision": "",
        "torch_version": torch.__version__,
        "config_hash": resolved.config_hash,
        "started_at": started,
        "world_size": 1,
        "stages": resolved.train.stages,
        "batch_size": resolved.train.batch_size,
        "host": record.host_name(),
        "plugins": " ".join(plugins.external()),
    }


def make_rows(base: dict, metrics: list[Metric], status: str, error: str, wall: float, restarts) -> list[dict]:
    common = {**base, "status": status, "error": error, "wall_s": round(wall, 3), "restarts": restarts or 0}
    if status != record.STATUS_OK:
        return [{**common, "metric": "status", "value": ""}]
    rows = [
        {**common, "metric": m.metric, "value": repr(float(m.value)), "module": m.module, "epoch": m.epoch,
         "step": m.step}
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
