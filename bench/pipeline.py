"""Module-parallel training (``train.stages=S``): S processes train a local method's modules at once.

GIM's modules are not backward locked: module m needs only module m - 1's detached output and sends nothing
back. Stage s owns a contiguous group of modules; for every batch it receives the output of the stage before
it (with the labels, sample indices and the step's seed that the losses need), trains its modules
(``bench.local.local_step``) and sends its last module's detached output on. Module m therefore receives
batch b computed by module m - 1 with the parameters module m - 1 had after b updates, exactly what one
process gives it; with every module's draws from its own stream, S stages reproduce one process step for
step. At most ``train.pipeline_depth`` batches are in flight between two stages.

Everything else follows from every stage running the trainer's deterministic schedule: they take the same
steps, write their curve points and validation points at the same steps (validation batches travel through
the stages like training batches) and checkpoint at the same steps, each its own file
(``checkpoints/stage<s>/``); a checkpoint of the run is one step that every stage has saved. A stop request
(SIGTERM, SIGINT, a SLURM requeue) reaches stage 0, which marks the next batch it sends as the last: every
stage trains that step, checkpoints it and stops. The launcher (``train``) profiles the modules and places
them, starts the stages, watches them (a stage that dies makes it stop the others within seconds and name
the stage), and finally merges the stages' modules, heads and rows into the run's encoder and metrics.
"""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import os
import signal
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from bench import progress
from bench.config import ConfigError
from bench.interfaces import Batch, Metric, TrainConfig
from bench.local import LocalMethod, ModuleClock, local_step, local_val
from bench.measure import precision
from bench.trainer import (
    CHECKPOINT,
    Diverged,
    Interrupted,
    StepMeter,
    StopFlag,
    Trainer,
    TrainResult,
    TrainState,
    load_checkpoint,
    save_checkpoint,
    seeded_batch,
)

log = logging.getLogger("bench.run")
STAGES = "stages"
"""The run folder's subfolder of the stages' plan, logs and outcomes."""
KEEP = 3
"""Checkpoints kept per stage: stage 0 may be a checkpoint ahead of the last stage when one is taken."""
GRACE_S = 5.0
"""Seconds the launcher gives the other stages to stop by themselves after one has died."""


class StageFailed(RuntimeError):
    """A stage process died or failed; the message names the stage."""


# --- placement --------------------------------------------------------------------------------------------
def run_modules(method: LocalMethod) -> int:
    """How many modules a run of ``method`` runs (modules after the last trained one are not run)."""
    return max(m for phase in method.phases for m in phase) + 1


def check_stages(cfg: TrainConfig, method: LocalMethod) -> None:
    """Refuse settings a module-parallel run cannot take, naming the key (before anything runs)."""
    if cfg.stages == 1 and not cfg.stage_modules:
        return
    if not method.local:
        raise ConfigError(f"train.stages={cfg.stages}: method {type(method).__name__} trains the whole network at "
                          "once; module-parallel stages need a local method (gim, greedy_supervised, ...)")  # fmt: skip
    if method.num_phases() > 1:
        raise ConfigError(f"train.stages={cfg.stages}: this run trains its modules one phase after another "
                          "(e.g. method.schedule=iterative); stages need every module training at once")  # fmt: skip
    n = run_modules(method)
    if cfg.stages > n:
        raise ConfigError(f"train.stages={cfg.stages}, but this run trains {n} module(s): at most {n} stages")
    if cfg.stage_modules:
        groups = [list(g) for g in cfg.stage_modules]
        if len(groups) != cfg.stages or [m for g in groups for m in g] != list(range(n)) or not all(groups):
            raise ConfigError(f"train.stage_modules={groups} must split modules 0..{n - 1} into "
                              f"train.stages={cfg.stages} non-empty contiguous groups in order, "
                              f"e.g. {balanced([1.0] * n, cfg.stages)}")  # fmt: skip


def balanced(costs: list[float], stages: int) -> list[list[int]]:
    """Contiguous groups of modules minimising the largest group's cost (the pipeline's period)."""
    n = len(costs)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]  # best[s][i]: modules 0..i-1 in s stages
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for i in range(s, n + 1):
            for j in range(s - 1, i):
                value = max(best[s - 1][j], prefix[i] - prefix[j])
                if value < best[s][i]:
                    best[s][i], cut[s][i] = value, j
    groups, i = [], n
    for s in range(stages, 0, -1):
        j = cut[s][i]
        groups.append(list(range(j, i)))
        i = j
    return groups[::-1]


def predicted_speedup(costs: list[float], groups: list[list[int]]) -> float:
    """What S stages could reach over one: the sum of the modules' costs over the slowest stage's."""
    slowest = max(sum(costs[m] for m in g) for g in groups)
    return sum(costs) / slowest if slowest > 0 else 1.0


def profile(method: LocalMethod, batch: Batch, steps: int = 2) -> list[float]:
    """Each run module's mean step time (forward, loss, backward, optimiser step) over ``steps`` steps after
    one warm-up step, on a copy of the method (the run's parameters are not touched)."""
    twin = copy.deepcopy(method, memo={id(method.task): method.task})  # not the task's data
    twin.clock = ModuleClock(method.device)
    last = run_modules(method) - 1
    for i in range(steps + 1):
        twin.clock.active = i > 0
        local_step(twin, batch, 0, 0, last, None)
    means = twin.clock.means()
    return [sum(v for (m, _), v in means.items() if m == k) for k in range(last + 1)]


# --- messages between stages -------------------------------------------------------------------------------
@dataclass
class Message:
    """What stage s sends stage s + 1 for one batch: module output ``z`` and what the losses need."""

    z: torch.Tensor
    labels: dict[str, torch.Tensor]
    index: torch.Tensor | None
    seed: int | None
    last: bool = False
    """The sender checkpoints and stops after this batch: so does the receiver."""


class Link:
    """Ordered point-to-point messages between two ranks (gloo on CPU, NCCL on CUDA: one fixed order of
    sends and receives, no tags), with at most ``depth`` unreceived messages from the sender."""

    def __init__(self, peer: int, device: torch.device, depth: int) -> None:
        self.peer, self.device, self.depth = peer, device, depth
        self.pending: deque[list] = deque()
        self.wait_s = 0.0
        """Seconds spent waiting: for a message (receiver) or for room to send (sender)."""

    def _tensor(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(self.device).contiguous()

    def send(self, msg: Message) -> None:
        tensors = {"z": msg.z, **{f"label/{k}": v for k, v in sorted(msg.labels.items())}}
        if msg.index is not None:
            tensors["index"] = msg.index
        tensors = {k: self._tensor(v) for k, v in tensors.items()}
        meta = {"seed": msg.seed, "last": msg.last,
                "tensors": [[k, str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in tensors.items()]}  # fmt: skip
        blob = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8).to(self.device)
        size = torch.tensor([blob.numel()], dtype=torch.int64, device=self.device)
        while len(self.pending) >= self.depth:
            t0 = time.perf_counter()
            for work in self.pending.popleft()[0]:
                work.wait()
            self.wait_s += time.perf_counter() - t0
        parts = [size, blob, *tensors.values()]
        self.pending.append([[dist.isend(p, self.peer) for p in parts], parts])

    def recv(self) -> Message:
        t0 = time.perf_counter()
        size = torch.empty(1, dtype=torch.int64, device=self.device)
        dist.recv(size, self.peer)
        self.wait_s += time.perf_counter() - t0
        blob = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        dist.recv(blob, self.peer)
        meta = json.loads(bytes(blob.cpu().numpy()).decode())
        tensors = {}
        for name, dtype, shape in meta["tensors"]:
            t = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            dist.recv(t, self.peer)
            tensors[name] = t
        labels = {k.removeprefix("label/"): v for k, v in tensors.items() if k.startswith("label/")}
        return Message(tensors["z"], labels, tensors.get("index"), meta["seed"], meta["last"])

    def flush(self) -> None:
        while self.pending:
            for work in self.pending.popleft()[0]:
                work.wait()


# --- one stage -----------------------------------------------------------------------------------------------
@dataclass
class StagePlan:
    """The placement of a run's modules on its stages, written to ``RUN/stages/plan.json``."""

    groups: list[list[int]]
    port: int
    threads: int
    profile_s: list[float] = field(default_factory=list)
    """Each module's profiled step time (empty when ``train.stage_modules`` placed them)."""
    quiet: bool = False
    """No progress bar in stage 0 either (``--quiet``)."""
    resume_step: int | None = None
    """The step every stage resumes from (the latest that all of them saved), chosen by the launcher before
    any stage starts: a stage that started first must not move it by saving a later one."""

    @property
    def stages(self) -> int:
        return len(self.groups)


def stage_dir(run_dir: Path, s: int) -> Path:
    return run_dir / "checkpoints" / f"stage{s}"


class StageTrainer(Trainer):
    """The trainer's schedule for stage ``s``: its batches come from the stage before it (stage 0 makes
    them), its steps train its own modules, its output goes to the stage after it."""

    def __init__(self, *args, stage: int, plan: StagePlan, comm_device: torch.device, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stage, self.plan = stage, plan
        self.first, self.last = plan.groups[stage][0], plan.groups[stage][-1]
        depth = self.cfg.pipeline_depth
        self.inbox = Link(stage - 1, comm_device, depth) if stage > 0 else None
        self.outbox = Link(stage + 1, comm_device, depth) if stage < plan.stages - 1 else None
        self.last_batch = False
        self.began_at: float | None = None

    def checkpoint_path(self) -> Path:
        return stage_dir(self.run_dir, self.stage) / Path(CHECKPOINT).name

    def load(self, path: Path) -> TrainState:
        step = self.plan.resume_step
        if step is None:
            return TrainState()
        state = load_checkpoint(stage_file(self.run_dir, self.stage, step), self.encoder, self.method)
        if state is None:
            raise StageFailed(f"stage {self.stage}: checkpoint of step {step} cannot be read")
        return state

    def save(self, path: Path, state: TrainState) -> None:
        step = state.position.global_step
        target = stage_file(self.run_dir, self.stage, step)
        save_checkpoint(target, self.encoder, self.method, state, time.perf_counter() - self.t0)
        for old in sorted(target.parent.glob("step*.pt"), key=step_of)[:-KEEP]:
            old.unlink(missing_ok=True)
        for stale in target.parent.glob("*.pt"):  # save_checkpoint's own rotation: not used by stages
            if not stale.name.startswith("step"):
                stale.unlink(missing_ok=True)

    def train_batch(self, split: str, idx: torch.Tensor, meter: StepMeter) -> tuple[Batch, float]:
        if self.began_at is None:
            self.began_at = time.perf_counter()
        if self.inbox is None:
            batch, began = super().train_batch(split, idx, meter)
            self.last_batch = bool(self.stop.requested)
            return batch, began
        meter.step_begin()  # a stage's step includes waiting for its input: the pipeline's period
        self.clock_step(meter)
        began = time.perf_counter()
        msg = self.inbox.recv()
        self.last_batch = msg.last
        return Batch(msg.z, msg.labels, msg.index, msg.seed), began

    def train_step(self, batch: Batch, phase: int) -> dict:
        z_in = batch.x if self.inbox is not None else None
        losses, z = local_step(self.method, batch, phase, self.first, self.last, z_in)  # type: ignore[arg-type]
        if self.outbox is not None:
            self.outbox.send(Message(z, batch.labels, batch.index, batch.seed, self.last_batch))
        return losses

    def stopping(self) -> bool:
        return self.last_batch

    def val_batch_losses(self, split: str, b: int, n: int, bs: int, phase: int) -> dict[int, float]:
        if self.inbox is None:
            batch, z_in = self.val_batch(split, b, n, bs), None
        else:
            msg = self.inbox.recv()
            batch, z_in = Batch(msg.z, msg.labels, msg.index, msg.seed), msg.z
        losses, z = local_val(self.method, batch, phase, self.first, self.last, z_in)  # type: ignore[arg-type]
        if self.outbox is not None:
            self.outbox.send(Message(z, batch.labels, batch.index, batch.seed))
        return losses

    def measurements(self, memory, speed) -> list[Metric]:
        if self.outbox is not None:
            self.outbox.flush()
        out = super().measurements(memory, speed)
        total = time.perf_counter() - (self.began_at or self.t0)
        waited = sum(link.wait_s for link in (self.inbox, self.outbox) if link is not None)
        out.append(Metric("idle_fraction", waited / total if total > 0 else 0.0))
        return out


def stage_file(run_dir: Path, s: int, step: int) -> Path:
    return stage_dir(run_dir, s) / f"step{step:09d}.pt"


def step_of(path: Path) -> int:
    return int(path.stem.removeprefix("step"))


def common_step(run_dir: Path, stages: int) -> int | None:
    """The latest step every stage has a checkpoint of (None: start from scratch)."""
    steps = [{step_of(p) for p in stage_dir(run_dir, s).glob("step*.pt")} for s in range(stages)]
    shared = set.intersection(*steps) if steps else set()
    return max(shared) if shared else None


# --- the stage process -------------------------------------------------------------------------------------
@dataclass
class StageOutcome:
    status: str  # ok | interrupted | diverged | failed
    error: str = ""
    module: int | None = None
    step: int | None = None
    what: str = ""


def outcome_path(run_dir: Path, s: int) -> Path:
    return run_dir / STAGES / f"stage{s}.json"


def run_stage(run, run_dir: Path, s: int, plan: StagePlan, stop: StopFlag) -> None:
    """Stage ``s``'s training (in its own process, ``run`` built there as the launcher built it): join the
    group, train, write the stage's outcome. A stage that stopped on request first hands the next stage the
    batch marked last and exits normally (the others are still saving their checkpoints: the launcher must
    not stop them); a stage that failed leaves its process at once with an error (a peer may be blocked on
    it: no waiting in the group's teardown)."""
    outcome = StageOutcome("failed")
    trainer: StageTrainer | None = None
    try:
        comm = run.device if run.device.type == "cuda" else torch.device("cpu")
        if comm.type == "cuda":
            torch.cuda.set_device(comm)  # NCCL's communicator of this rank lives on the stage's device
        dist.init_process_group("nccl" if comm.type == "cuda" else "gloo", rank=s, world_size=plan.stages,
                                init_method=f"tcp://127.0.0.1:{plan.port}", timeout=timedelta(minutes=30))  # fmt: skip
        trainer = StageTrainer(run.task, run.method, run.encoder, run.resolved.train, run.resolved.spec.seed,
                               run.device, run_dir, stop, stage=s, plan=plan, comm_device=comm)  # fmt: skip
        trainer.run()
        outcome = StageOutcome("ok")
    except Interrupted as err:
        outcome = StageOutcome("interrupted", str(err))
    except Diverged as err:
        outcome = StageOutcome("diverged", str(err), err.module, err.step, err.what)
    except BaseException as err:  # noqa: BLE001  (the launcher reports it, naming this stage)
        log.error("stage %d failed:\n%s", s, traceback.format_exc())
        outcome = StageOutcome("failed", f"{type(err).__name__}: {err}")
    finally:
        write_json(outcome_path(run_dir, s), asdict(outcome))
    if outcome.status == "interrupted" and trainer is not None and trainer.outbox is not None:
        trainer.outbox.flush()  # the next stage needs the batch marked last to stop at the same step
    if outcome.status not in ("ok", "interrupted"):
        logging.shutdown()
        os._exit(1)
    dist.destroy_process_group()


def stage_log(run_dir: Path, s: int) -> logging.Handler:
    """Stage ``s``'s log file, ``RUN/stages/stage<s>.log``."""
    handler = logging.FileHandler(run_dir / STAGES / f"stage{s}.log")
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s stage{s} %(name)s: %(message)s"))
    return handler


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# --- the launcher --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stage_threads(cfg: TrainConfig) -> int:
    """Threads per stage on CPU: ``train.threads``, else this machine's (or job's) cores shared out."""
    if cfg.threads:
        return cfg.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // cfg.stages)


def make_plan(run) -> StagePlan:
    """Place the modules on the stages: as ``train.stage_modules`` says, else balanced by profiled step time."""
    cfg, method = run.resolved.train, run.method
    threads = stage_threads(cfg)
    if cfg.stage_modules:
        groups, costs = [list(g) for g in cfg.stage_modules], []
    else:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)  # profile at a stage's share of the machine
        try:
            batch = profile_batch(run)
            bf16 = precision(cfg.amp, run.device) == "bf16"
            with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=bf16):
                costs = profile(method, batch)
        finally:
            torch.set_num_threads(previous)
        groups = balanced(costs, cfg.stages)
        log.info("profiled module step times %s s: stages %s (predicted speed-up %.2fx)",
                 [round(c, 4) for c in costs], groups, predicted_speedup(costs, groups))  # fmt: skip
    return StagePlan(groups, free_port(), threads, costs, progress.is_quiet())


def profile_batch(run) -> Batch:
    """A training batch of the run's shape (the first step's samples) for the profiling pass."""
    task, cfg = run.task, run.resolved.train
    split = task.pretrain_split(run.method.supervised)
    idx = torch.arange(cfg.batch_size) % task.split_size(split)
    return seeded_batch(task, split, idx, run.device, run.resolved.spec.seed, 0, augment=True)


def train(run, run_dir: Path, stop: StopFlag, entry: Callable) -> TrainResult:
    """Train ``run`` on ``train.stages`` processes, each started as ``entry(spec, run_dir, s, plan)``;
    afterwards ``run.encoder`` and ``run.method`` hold every stage's trained modules and heads (for the
    evaluation). Raises Interrupted, Diverged or StageFailed."""
    cfg = run.resolved.train
    (run_dir / STAGES).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = final_states(run_dir, cfg.stages)
    if done is None:
        resume = common_step(run_dir, cfg.stages)
        saved = run_dir / STAGES / "plan.json"
        if resume is not None and saved.is_file():  # the modules stay where their checkpoints are
            plan = StagePlan(**json.loads(saved.read_text()))
            plan.port, plan.quiet = free_port(), progress.is_quiet()
        else:
            plan = make_plan(run)
        plan.resume_step = resume
        if resume is not None:
            log.info("resuming from checkpoint at step %d (every stage; placement %s)", resume, plan.groups)
        for s in range(cfg.stages):  # checkpoints past it are of steps the stages will take again
            for path in stage_dir(run_dir, s).glob("step*.pt"):
                if plan.resume_step is None or step_of(path) > plan.resume_step:
                    path.unlink()
        write_json(run_dir / STAGES / "plan.json", asdict(plan))
        launch(run, run_dir, plan, stop, entry)
        done = final_states(run_dir, cfg.stages)
        if done is None:
            raise StageFailed("the stages ended without a final checkpoint of every stage")
    plan = StagePlan(**json.loads((run_dir / STAGES / "plan.json").read_text()))
    result = merge(run, plan, done)
    result.earlier_wall_s = max(0.0, result.earlier_wall_s - (time.perf_counter() - t0))
    return result


def final_states(run_dir: Path, stages: int) -> list[dict] | None:
    """Every stage's final checkpoint payload, when all of them finished training (else None)."""
    step = common_step(run_dir, stages)
    if step is None:
        return None
    payloads = [torch.load(stage_file(run_dir, s, step), map_location="cpu", weights_only=False) for s in range(stages)]
    return payloads if all(p["position"]["done"] for p in payloads) else None


def launch(run, run_dir: Path, plan: StagePlan, stop: StopFlag, entry: Callable) -> None:
    """Start one process per stage and wait for them; a stop request is passed to stage 0 (which stops every
    stage at one step); a stage that dies or fails stops the others and raises, naming it."""
    for s in range(plan.stages):
        outcome_path(run_dir, s).unlink(missing_ok=True)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=entry, args=(run.resolved.spec, str(run_dir), s, plan), name=f"stage{s}",
                         daemon=False) for s in range(plan.stages)]  # fmt: skip
    for p in procs:
        p.start()
    log.info("started %d stages: %s (pids %s)", plan.stages, plan.groups, [p.pid for p in procs])
    forwarded = False
    ended: dict[int, float] = {}
    """When each stage was first seen to have ended with an error or a signal."""
    try:
        while any(p.is_alive() for p in procs):
            if stop.requested and not forwarded and procs[0].is_alive():
                # the same signal (SIGUSR2 tells a SLURM job to requeue itself): stage 0 marks its next batch last
                os.kill(procs[0].pid, getattr(signal, stop.requested, signal.SIGTERM))
                forwarded = True
            for s, p in enumerate(procs):
                if s not in ended and not p.is_alive() and p.exitcode != 0:
                    ended[s] = time.monotonic()
            if ended and time.monotonic() - min(ended.values()) > GRACE_S:
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join()
    report(run_dir, plan, procs, ended)


def report(run_dir: Path, plan: StagePlan, procs: list, ended: dict[int, float]) -> None:
    """Raise for the run's outcome from the stages' exit codes and outcome files (nothing when all ok)."""
    outcomes = {}
    for s in range(plan.stages):
        path = outcome_path(run_dir, s)
        outcomes[s] = StageOutcome(**json.loads(path.read_text())) if path.is_file() else None
    if all(o is not None and o.status == "ok" for o in outcomes.values()):
        return
    diverged = [o for o in outcomes.values() if o is not None and o.status == "diverged"]
    if diverged:
        first = diverged[0]
        raise Diverged(first.module or 0, first.step or 0, first.what)
    if all(o is not None and o.status in ("ok", "interrupted") for o in outcomes.values()):
        raise Interrupted(next(o.error for o in outcomes.values() if o.status == "interrupted"))
    died = [s for s in range(plan.stages) if outcomes[s] is None or (procs[s].exitcode or 0) < 0]
    if died:  # killed, or gone without a word: the others failed because it did
        s = min(died, key=lambda s: ended.get(s, float("inf")))
        code = procs[s].exitcode
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        raise StageFailed(f"stage {s} (modules {plan.groups[s]}, pid {procs[s].pid}) died: {how}; the other stages "
                          "were stopped; run the same command again to resume from the last checkpoint of every "
                          "stage")  # fmt: skip
    failed = [s for s, o in outcomes.items() if o is not None and o.status == "failed"]
    s = min(failed, key=lambda s: ended.get(s, float("inf")))
    raise StageFailed(f"stage {s} (modules {plan.groups[s]}) failed: {outcomes[s].error} "
                      f"(traceback in {run_dir / STAGES / f'stage{s}.log'})")  # fmt: skip


def merge(run, plan: StagePlan, payloads: list[dict]) -> TrainResult:
    """Put every stage's trained modules and heads into ``run``'s encoder and method; merge their rows."""
    encoder, method = run.encoder, run.method
    own_encoder: dict = {}
    own_heads: dict = {}
    for s, payload in enumerate(payloads):
        for m in plan.groups[s]:
            prefix = f"blocks.{m}."
            own_encoder |= {k: v for k, v in payload["encoder"].items() if k.startswith(prefix)}
            own_heads |= {k: v for k, v in payload["method"]["heads"].items() if k.startswith(f"{m}.")}
    encoder.load_state_dict({**encoder.state_dict(), **own_encoder})
    method.heads.load_state_dict({**method.heads.state_dict(), **own_heads})
    metrics: list[Metric] = []
    measured: dict[str, list[Metric]] = {}
    for s, payload in enumerate(payloads):
        for row in payload["metrics"]:
            m = Metric(**row)
            if m.metric in ("peak_mem_bytes", "samples_per_s", "s_per_step", "idle_fraction"):
                measured.setdefault(m.metric, []).append(m)
                metrics.append(Metric(f"{m.metric}_stage{s}", m.value))
            else:
                metrics.append(m)
    last = len(payloads) - 1
    if "peak_mem_bytes" in measured:
        metrics.append(Metric("peak_mem_bytes", max(m.value for m in measured["peak_mem_bytes"])))
    for name in ("samples_per_s", "s_per_step"):  # the pipeline's rate is the last stage's
        metrics += [Metric(name, m.value) for m in measured.get(name, [])[last:last + 1]]
    if plan.profile_s:
        metrics += [Metric("profile_module_s", c, module=m) for m, c in enumerate(plan.profile_s)]
    metrics += [Metric("stage_of_module", float(s), module=m) for s, g in enumerate(plan.groups) for m in g]
    first = payloads[0]
    wall = max(p.get("wall_s", 0.0) for p in payloads)
    return TrainResult(metrics, first["restarts"], first["position"]["global_step"], wall)
