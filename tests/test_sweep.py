"""Sweeps: experiment files, validation, skipping what is done, the recorded state, snapshots (CPU, debug)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import config as cfg
from bench import record
from bench.cli import main
from bench.registry import METHODS
from bench.spec import RunSpec, resolve
from bench.sweep import commands as sweep
from bench.sweep import experiment, plan, slurm, snapshot
from bench.sweep import state as sweep_state
from bench.sweep.runner import RunJob
from bench.sweep.state import PlannedRun, RunState, Submission
from tests.conftest import REPO

TINY = """\
experiment: tiny
preset: smoke
seeds: [0]
overrides: {train: {threads: 1}}
methods: [random_init, gim]
tasks:
  synthetic_textures:
    methods: [random_init, gim]
"""


def write(tmp_path: Path, text: str, name: str = "experiment.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_expansion_merges_overrides_from_general_to_specific(tmp_path):
    path = write(tmp_path, """\
        preset: smoke
        seeds: "0-2"
        overrides: {train: {epochs: 1, batch_size: 4}}
        methods:
          gim: {method: {negatives: 4}, train: {epochs: 2}}
          random_init: {}
        tasks:
          synthetic_textures:
            overrides: {train: {epochs: 3}}
            methods: {gim: {method: {negatives: 8}}, random_init: null}
          synthetic_speech: {methods: [random_init]}
        """)  # fmt: skip
    exp = experiment.load(path)
    specs = exp.expand()
    assert exp.name == tmp_path.name  # default label: the file's folder
    assert [(s.task, s.method, s.seed) for s in specs][:4] == [
        ("synthetic_textures", "gim", 0), ("synthetic_textures", "gim", 1), ("synthetic_textures", "gim", 2),
        ("synthetic_textures", "random_init", 0),
    ]  # fmt: skip
    assert len(specs) == 3 * 2 + 3
    gim = specs[0].overrides
    assert gim == {"train": {"epochs": 3, "batch_size": 4}, "method": {"negatives": 8}}
    assert specs[-1].overrides == {"train": {"epochs": 1, "batch_size": 4}}
    assert Path(specs[0].data_root).is_absolute()  # jobs start elsewhere (the code snapshot)


def test_a_method_key_with_a_label_runs_that_method_as_a_variant(tmp_path):
    path = write(tmp_path, """\
        preset: smoke
        methods:
          gim: {}
          gim@iterative: {method: {schedule: iterative}}
        tasks: {synthetic_textures: {}}
        """)  # fmt: skip
    specs = experiment.load(path).expand()
    assert [(s.method, s.overrides) for s in specs] == [("gim", {}), ("gim", {"method": {"schedule": "iterative"}})]
    resolved = [resolve(spec) for spec in specs]
    assert resolved[0].run_id != resolved[1].run_id
    assert resolved[1].as_dict["method"]["schedule"] == "iterative"
    runs = [item.run for item in plan.check(experiment.load(path), data=False).items]
    assert [r.variant for r in runs] == ["", "schedule=iterative"]
    assert "gim [schedule=iterative]" in sweep.format_states([RunState(r, "local", "queued", 0, "", "") for r in runs])


@pytest.mark.parametrize(
    "text, message",
    [
        ("methods: [gim]\ntasks: {synthetic_textures: {}}\nseed: [0]\n", "unknown key 'seed'"),
        ("methods: [gim]\ntasks: {synthetic_textures: {method: [gim]}}\n", "unknown key 'method'"),
        ("methods: [gim]\ntasks: {synthetic_textures: {methods: [random_init]}}\n", "does not list"),
        ("methods: [gim]\ntasks: {}\n", "`tasks` is missing or empty"),
        ("methods: [gim]\ntasks: {synthetic_textures: {}}\nseeds: [0, 0]\n", "distinct integers"),
        ("methods: [gim]\ntasks: {synthetic_textures: {}}\npreset: smok\n", "Did you mean 'smoke'"),
    ],
)
def test_structural_mistakes_are_clear_errors(tmp_path, text, message):
    with pytest.raises(cfg.ConfigError, match=message):
        experiment.load(write(tmp_path, text))


def test_validation_reports_every_problem_at_once(tmp_path):
    path = write(tmp_path, """\
        preset: smoke
        methods: [gim, random_iint]
        tasks:
          synthetic_textures: {overrides: {train: {epochz: 1}}}
          cifar10: {methods: [gim], overrides: {task: {download: false}}}
        slurm: {gpus: 1}
        """)  # fmt: skip
    with pytest.raises(cfg.ConfigError) as err:
        plan.check(experiment.load(path, data_root=tmp_path / "nothing-here"))
    text = str(err.value)
    assert "Did you mean 'random_init'" in text
    assert "unknown key train.epochz" in text
    assert "no CIFAR-10 data" in text
    assert "unknown key slurm.gpus" in text


def test_entries_that_would_share_a_results_cell_are_an_error(tmp_path):
    """Two entries of one method that differ in a setting that is not a variant key would land in one cell,
    and collect would keep only one of them: refused, naming the setting; variant keys tell cells apart."""
    path = write(tmp_path, """\
        preset: smoke
        seeds: [0, 1]
        methods:
          supervised: {}
          supervised@fast: {method: {lr: 3.0e-3}}
          gim: {}
          gim@iterative: {method: {schedule: iterative}}
        tasks: {synthetic_textures: {}}
        """)  # fmt: skip
    with pytest.raises(cfg.ConfigError) as err:
        plan.check(experiment.load(path))
    text = str(err.value)
    assert "1 problem(s)" in text  # once for both seeds, and nothing about gim's variants
    assert "supervised on synthetic_textures" in text and "method.lr 0.001 vs 0.003" in text
    assert "variant keys (none)" in text


def test_a_method_on_a_modality_it_does_not_support_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(METHODS.get("random_init"), "modalities", ("audio",), raising=False)
    with pytest.raises(cfg.ConfigError, match="applies to audio tasks, and synthetic_textures is a vision task"):
        plan.check(experiment.load(write(tmp_path, TINY)))


def test_effective_batch_that_differs_from_the_protocol_is_reported(tmp_path):
    text = TINY.replace("{train: {threads: 1}}", "{train: {threads: 1, batch_size: 8}}")
    checked = plan.check(experiment.load(write(tmp_path, text)))
    assert any("effective batch 8 differs from the smoke protocol's 16" in w for w in checked.warnings)
    assert "differs from the protocol's 16" in sweep_state.batch_note(checked.items[0].run)


def test_resources_merge_preset_file_and_task(tmp_path):
    res = slurm.resources("paper", {"partition": "gpu", "mem_gb": 32}, {"timeout_min": 90})
    assert (res.gpus_per_node, res.partition, res.mem_gb, res.timeout_min) == (1, "gpu", 32.0, 90)
    params = slurm.executor_parameters(res, "bench-x", "/snap")
    assert params["slurm_partition"] == "gpu" and params["slurm_additional_parameters"] == {"chdir": "/snap"}
    assert "slurm_account" not in params  # unset: the cluster's default
    with pytest.raises(cfg.ConfigError, match="unknown key slurm.gpu"):
        slurm.resources("smoke", {"gpu": 1})


def test_sweep_runs_collects_and_a_second_sweep_submits_nothing(tmp_path, capsys):
    path, out = write(tmp_path, TINY), tmp_path / "runs"
    assert main(["sweep", str(path), "--executor", "debug", "--out", str(out), "--quiet"]) == 0
    rows = record.read_rows(out / "results.csv")
    assert {r["status"] for r in rows} == {"ok"} and {r["method"] for r in rows} == {"gim", "random_init"}
    assert {r["experiment"] for r in rows} == {"tiny"}
    (submission,) = sweep_state.load_all(out)
    assert submission.executor == "debug" and len(submission.runs) == 2
    assert all(run.job_id for run in submission.runs)

    assert main(["sweep", str(path), "--executor", "debug", "--out", str(out), "--quiet"]) == 0
    assert len(sweep_state.load_all(out)) == 1  # nothing new submitted
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert status.count("done ") == 2 and "2 done" in status
    before = (out / "results.csv").read_text()
    assert main(["collect", str(out)]) == 0
    assert (out / "results.csv").read_text() == before  # deterministic


def test_a_changed_experiment_supersedes_the_old_runs_which_collect_leaves_out(tmp_path, capsys):
    path, out = write(tmp_path, TINY), tmp_path / "runs"
    assert main(["sweep", str(path), "--executor", "debug", "--out", str(out), "--quiet"]) == 0
    (old_gim,) = {r["run_id"] for r in record.read_rows(out / "results.csv") if r["method"] == "gim"}
    changed = write(tmp_path, TINY.replace("methods: [random_init, gim]\n", "methods: {random_init: {}, "
                                           "gim: {method: {lr: 0.003}}}\n", 1), "changed.yaml")  # fmt: skip
    assert main(["sweep", str(changed), "--executor", "debug", "--out", str(out), "--quiet"]) == 0
    rows = record.read_rows(out / "results.csv")
    (new_gim,) = {r["run_id"] for r in rows if r["method"] == "gim"}
    assert new_gim != old_gim and (out / old_gim / record.ROWS_FILE).is_file()  # left out, not deleted
    assert len({r["run_id"] for r in rows}) == 2
    capsys.readouterr()
    assert main(["collect", str(out)]) == 0
    assert "left out 1 superseded" in capsys.readouterr().out
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "1 superseded" in status and f"replaced by {new_gim}" in status

    submissions = len(sweep_state.load_all(out))
    assert main(["sweep", str(path), "--executor", "debug", "--out", str(out), "--quiet"]) == 0  # changed back
    assert len(sweep_state.load_all(out)) == submissions  # the old runs are done: nothing submitted
    assert {r["run_id"] for r in record.read_rows(out / "results.csv") if r["method"] == "gim"} == {old_gim}
    assert sweep_state.superseded_runs(out) == {new_gim: old_gim}


def fake_run(run_id: str, job_id: str = "7_0") -> PlannedRun:
    return PlannedRun(run_id, "gim", "synthetic_textures", 0, 16, 16, 1, job_id, "")


def write_rows(run_dir: Path, status: str, restarts: int = 0) -> None:
    row = {"run_id": run_dir.name, "method": "gim", "task": "synthetic_textures", "seed": 0, "metric": "status",
           "status": status, "error": "stopped by SIGTERM at step 3" if status != "ok" else "", "restarts": restarts}  # fmt: skip
    record.write_rows(run_dir, [row])


def test_status_combines_rows_logs_and_the_queue(tmp_path, monkeypatch):
    ids = ["queued", "running", "requeue", "done", "failed", "vanished", "cancelled", "crashed"]
    runs = [fake_run(name, f"7_{i}") for i, name in enumerate(ids)]
    sweep_state.save(
        tmp_path, Submission("slurm", "x", "x.yaml", None, runs, submitted_at="2000-01-01T00:00:00+00:00")
    )
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / "run.log").write_text("2026-01-01 10:00:00,000 INFO bench.run: resuming from "
                                                  "checkpoint at step 5 (restart 2)\n")  # fmt: skip
    (tmp_path / "crashed").mkdir()
    (tmp_path / "crashed" / "run.log").write_text("2026-01-01 10:00:00,000 INFO bench.run: run crashed\n")
    for name, status in [
        ("requeue", "interrupted"),
        ("done", "ok"),
        ("failed", "failed"),
        ("cancelled", "interrupted"),
    ]:
        write_rows(tmp_path / name, status, restarts=1 if name == "done" else 0)
    queue = {"7_0": "PENDING", "7_1": "RUNNING", "7_2": "PENDING"}
    monkeypatch.setattr(slurm, "queue_states", lambda job_ids: queue)
    states = {s.run.run_id: s for s in sweep_state.run_states(tmp_path)}
    got = {name: states[name].state for name in ids}
    assert got == {"queued": "queued", "running": "running", "requeue": "queued", "done": "done",
                   "failed": "failed", "vanished": "not started", "cancelled": "interrupted",
                   "crashed": "failed"}  # fmt: skip
    assert states["running"].restarts == 2 and states["done"].restarts == 1
    assert "resuming from checkpoint" in states["running"].last_line
    assert "requeued" in states["requeue"].note and "without writing rows" in states["crashed"].note
    assert "sweep again" in states["vanished"].note
    monkeypatch.setattr(slurm, "queue_states", lambda job_ids: None)  # the controller is down
    assert sweep_state.run_states(tmp_path)[0].note.endswith("state unknown")


def test_rows_of_an_earlier_attempt_do_not_count_once_resubmitted(tmp_path, monkeypatch):
    write_rows(tmp_path / "again", "failed")
    time.sleep(0.01)
    sweep_state.save(tmp_path, Submission("slurm", "x", "x.yaml", None, [fake_run("again")]))
    monkeypatch.setattr(slurm, "queue_states", lambda job_ids: {"7_0": "PENDING"})
    (state,) = sweep_state.run_states(tmp_path)
    assert state.state == "queued"


def test_snapshot_holds_the_working_tree_and_records_its_commit(tmp_path):
    snap = snapshot.take(tmp_path)
    assert snapshot.take(tmp_path) == snap  # the same code: the same snapshot
    assert snap.parent == tmp_path / ".snapshot"
    for rel in snapshot.source_files(snapshot.source_root()):
        assert (snap / rel).read_bytes() == (REPO / rel).read_bytes()
    assert not list(snap.rglob("__pycache__"))
    if snapshot.git_head(REPO):
        assert record.git_state(snap / "bench")[0] == snapshot.git_head(REPO)


def test_a_requeued_job_of_a_finished_run_does_not_run_again(tmp_path):
    write_rows(tmp_path, "ok", restarts=0)
    outcome = RunJob(RunSpec(method="random_init", preset="smoke"), str(tmp_path))()
    assert outcome.reused and outcome.status == "ok"


def test_validate_as_a_subprocess(tmp_path):
    path = write(tmp_path, TINY)
    result = subprocess.run([sys.executable, "-m", "bench", "validate", str(path)], cwd=REPO, capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ok, 2 runs" in result.stdout


def test_validate_fails_with_the_fix_in_the_message(tmp_path, capsys):
    bad = write(tmp_path, TINY.replace("gim]", "gym]"), "bad.yaml")
    assert main(["validate", str(bad)]) == 2
    assert "Did you mean 'gim'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["smoke", "small", "paper", "memory"])
def test_shipped_experiment_files_open_with_their_command_and_load(name):
    path = REPO / "results" / name / "experiment.yaml"
    assert path.read_text().startswith("# Run:  python -m bench sweep results/")
    exp = experiment.load(path)
    assert exp.preset == name
    checked = plan.check(exp, data=False)  # names, keys and resources; the data may be elsewhere
    assert {item.spec.task for item in checked.items} == set(exp.tasks)


def test_smoke_experiment_lists_every_registered_method_and_validates():
    exp = experiment.load(REPO / "results" / "smoke" / "experiment.yaml")
    assert set(exp.methods) >= set(METHODS.names())
    checked = plan.check(exp)
    assert {item.spec.method for item in checked.items} >= set(METHODS.names())


def test_submission_record_is_plain_json(tmp_path):
    path = sweep_state.save(tmp_path, Submission("local", "x", "x.yaml", "/snap", [fake_run("r1", "123")]))
    raw = json.loads(path.read_text())
    assert raw["runs"][0]["job_id"] == "123" and raw["snapshot"] == "/snap"


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def wait_for(check, timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_local_job_signalled_before_its_time_limit_requeues_and_resumes(tmp_path):
    text = TINY.replace("{train: {threads: 1}}", "{train: {threads: 1, epochs: 6, steps_per_epoch: 10}}")
    path, out = write(tmp_path, text.replace("[random_init, gim]", "[gim]")), tmp_path / "runs"
    assert main(["sweep", str(path), "--executor", "local", "--out", str(out), "--no-wait", "--quiet"]) == 0
    (run,) = sweep_state.load_all(out)[0].runs
    log = out / run.run_id / record.LOG_FILE
    wait_for(lambda: log.is_file() and "epoch 0 module" in log.read_text())
    cmdline = lambda pid: Path(f"/proc/{pid}/cmdline").read_bytes()  # noqa: E731
    (task,) = [p for p in descendants(int(run.job_id)) if b"submitit.core._submit" in cmdline(p)]
    os.kill(task, signal.SIGUSR2)  # what the local controller sends signal_delay_s before the time limit
    (state,) = wait_for(lambda: [s for s in sweep_state.run_states(out) if s.state == "done"])
    assert state.restarts == 1 and "resuming from checkpoint" in log.read_text()


def test_a_local_chain_runs_each_run_in_a_process_of_its_own(tmp_path):
    """So that no run's memory includes torch's one-time allocations or a heap shaped by the runs before it."""
    from bench.sweep.launch import RunChain
    from tests.isolation_probe import PidJob

    outcomes = RunChain([PidJob(str(tmp_path / "a")), PidJob(str(tmp_path / "b")), PidJob(str(tmp_path / "c"), 3)])()
    assert [o.status for o in outcomes] == [record.STATUS_OK, record.STATUS_OK, record.STATUS_FAILED]
    pids = {int(o.error) for o in outcomes[:2]}
    assert len(pids) == 2 and os.getpid() not in pids
    assert "exit code 3" in outcomes[2].error
    assert not list(tmp_path.rglob("*.pkl*"))  # the job and outcome files are cleaned up


def test_a_local_chain_stops_at_a_run_stopped_by_a_signal():
    """Ctrl-C or kill on a local job: the interrupted run keeps its checkpoint and the next runs do not start."""
    from bench.execute import RunOutcome
    from bench.sweep.launch import RunChain

    called = []

    def job(run_id, status):
        return lambda: called.append(run_id) or RunOutcome(run_id, "", status)

    jobs = [job("a", record.STATUS_OK), job("b", record.STATUS_INTERRUPTED), job("c", record.STATUS_OK)]
    chain = RunChain(jobs, isolate=False)
    assert [o.run_id for o in chain()] == ["a", "b"]
    assert called == ["a", "b"]

    # a signal outside training (no run handler installed): the run ends normally, the next does not start
    def signalled():
        os.kill(os.getpid(), signal.SIGTERM)
        return job("d", record.STATUS_OK)()

    before = signal.getsignal(signal.SIGTERM)
    assert [o.run_id for o in RunChain([signalled, job("e", record.STATUS_OK)], isolate=False)()] == ["d"]
    assert called[-1] == "d" and signal.getsignal(signal.SIGTERM) is before
