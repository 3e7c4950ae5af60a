"""Results under faults and bad input: nothing silently wrong, nothing lost, nothing stuck (one test or more
per kind of fault: subsets, divergence, damaged rows, damaged checkpoints, concurrent runs, bad values,
late failures, bookkeeping)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import record
from bench.cli import main
from bench.execute import RunLock
from bench.spec import RunSpec, resolve
from bench.sweep import state as sweep_state
from bench.trainer import CHECKPOINT, PREVIOUS, TrainState, load_checkpoint, save_checkpoint
from tests.conftest import REPO, shared_data
from tests.fixtures_data import cifar_class_folders
from tests.fixtures_stl10 import write_stl10

SMOKE = ["run", "--preset", "smoke", "--quiet"]


def bench(*args, cwd=REPO, **kwargs):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, **kwargs)  # fmt: skip


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


# 0. Subsets: every cap and carve is a seeded random draw, whatever the order on disk.


@pytest.mark.parametrize("with_test", [True, False])
def test_cifar_class_folders_caps_cover_every_class(tmp_path, with_test):
    cifar_class_folders(tmp_path, {"train": 30, **({"test": 3} if with_test else {})})
    spec = RunSpec(task="cifar10", data_root=str(tmp_path), overrides={
        "task": {"max_pretrain": 60, "max_probe_train": 60, "val_size": 40, "download": False}})  # fmt: skip
    r = resolve(spec)
    task = r.task_cls(r.task, tmp_path, 0)
    for split in ("train", "probe_train", "test"):
        labels = task.splits[split].labels
        assert set(labels.tolist()) == set(range(10)), f"{split} misses classes: {sorted(set(labels.tolist()))}"
    assert len(task.splits["probe_train"].labels) == 60
    if not with_test:  # the carve and the training images do not overlap, and use every image
        assert len(task.splits["test"].labels) == 40 and task.split_size("train") == 60


def test_stl10_caps_of_class_sorted_files_cover_every_class(tmp_path):
    root = write_stl10(tmp_path, train=40, test=30, exact=False)
    folder = root / "stl10_binary"
    for name in ("train_y.bin", "test_y.bin"):  # labels sorted by class, as a class-ordered export would be
        labels = np.fromfile(folder / name, dtype=np.uint8)
        np.sort(labels).tofile(folder / name)
    spec = RunSpec(task="stl10", preset="memory", data_root=str(root), overrides={
        "task": {"verify_sizes": False, "max_probe_train": 20, "max_test": 20, "download": False}})  # fmt: skip
    r = resolve(spec)
    task = r.task_cls(r.task, root, 0)
    for split in ("probe_train", "test"):
        got = set(task.splits[split].labels.tolist())
        everything = set((np.fromfile(folder / f"{split.split('_')[-1]}_y.bin", dtype=np.uint8) - 1).tolist())
        assert len(got) >= min(len(everything), 4), f"{split}: {sorted(got)} of {sorted(everything)}"


# 1. Divergence and untrained runs.


@pytest.mark.parametrize("method,task", [("gim", "synthetic_textures"), ("cpc", "synthetic_speech")])
def test_a_diverged_run_is_recorded_as_diverged_and_kept_out_of_tables_and_checks(tmp_path, capsys, method, task):
    out = tmp_path / "out"
    code = main([*SMOKE, "--method", method, "--task", task, "--set", "method.lr=1e9", "--out", str(out)])
    assert code == 1
    (run_dir,) = run_dirs(out)
    rows = record.read_rows(run_dir / record.ROWS_FILE)
    assert rows[0]["status"] == "diverged" and "module" in rows[0]["error"] and "step" in rows[0]["error"]
    assert (run_dir / CHECKPOINT).is_file()
    record.collect(out)
    assert main(["tables", str(out), "--no-figures"]) == 0
    table = (out / "tables" / ("table1.md" if task == "synthetic_textures" else "table3.md")).read_text()
    assert f"{method} seed 0 (diverged)" in table
    ref = tmp_path / "ref.yaml"
    ok_out = tmp_path / "ok"
    assert main([*SMOKE, "--method", "random_init", "--task", task, "--out", str(ok_out)]) == 0
    record.collect(ok_out)
    assert main(["check", str(ok_out), "--update", "--reference", str(ref)]) == 0
    capsys.readouterr()
    assert main(["check", str(out), "--reference", str(ref)]) == 1
    assert "diverged" in capsys.readouterr().out


def test_a_trained_method_with_zero_epochs_is_refused_before_it_starts(tmp_path, capsys):
    assert main([*SMOKE, "--set", "train.epochs=0", "--out", str(tmp_path)]) == 2
    assert "needs at least one epoch" in capsys.readouterr().err
    assert not list(tmp_path.glob("*/rows.csv"))
    assert main([*SMOKE, "--method", "random_init", "--set", "train.epochs=0", "--out", str(tmp_path)]) == 0


# 2. Damaged result files.


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A finished sweep folder of two runs (random_init, seeds 0 and 1), made once and copied per test."""
    base = tmp_path_factory.mktemp("sweep")
    exp = base / "experiment.yaml"
    exp.write_text(textwrap.dedent("""\
        experiment: trust
        preset: smoke
        seeds: [0, 1]
        overrides: {train: {threads: 1}}
        methods: [random_init]
        tasks: {synthetic_textures: {}}
        """))  # fmt: skip
    out = base / "out"
    assert main(["sweep", str(exp), "--executor", "debug", "--out", str(out), "--quiet"]) == 0
    return exp, out


def damaged_copy(tmp_path, two_runs, damage) -> tuple[Path, Path, Path]:
    exp, out = two_runs
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    victim = run_dirs(copy)[0]
    damage(victim / record.ROWS_FILE)
    return exp, copy, victim


DAMAGES = {
    "deleted": lambda p: p.unlink(),
    "cut mid-row": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) - 40]),
    "cut at a row end": lambda p: p.write_text("".join(p.read_text().splitlines(keepends=True)[:-2])),
    "binary": lambda p: p.write_bytes(bytes(range(256)) * 4),
    "wrong header": lambda p: p.write_text("a,b,c\n1,2,3\n"),
    "empty": lambda p: p.write_text(""),
}


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_damaged_rows_show_as_damaged_block_collect_and_are_rerun_alone(tmp_path, two_runs, capsys, kind):
    exp, out, victim = damaged_copy(tmp_path, two_runs, DAMAGES[kind])
    before = (out / "results.csv").read_bytes()
    assert main(["status", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    (line,) = [x for x in lines if victim.name in x]
    assert line.startswith("damaged"), line
    assert main(["collect", str(out)]) == 1
    err = capsys.readouterr().err
    assert victim.name in err and "--allow-missing" in err and "Traceback" not in err
    assert (out / "results.csv").read_bytes() == before  # not shrunk
    logs = {p.parent: p.read_text() for p in out.glob("*/run.log")}
    assert main(["sweep", str(exp), "--executor", "debug", "--out", str(out), "--quiet"]) == 0
    assert record.run_status(victim) == "ok"
    ran = [d for d, text in logs.items() if (d / "run.log").read_text() != text]
    assert ran == [victim]  # only the damaged run ran again


def test_collect_allow_missing_names_what_it_leaves_out(tmp_path, two_runs, caplog):
    _, out, victim = damaged_copy(tmp_path, two_runs, DAMAGES["deleted"])
    assert main(["collect", str(out), "--allow-missing"]) == 0
    rows = record.read_rows(out / "results.csv")
    assert {r["run_id"] for r in rows} == {p.name for p in run_dirs(out)} - {victim.name}
    assert victim.name in caplog.text


def test_rows_readers_name_the_file_and_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text(record.rows_to_csv([{"run_id": "a", "status": "ok", "metric": "m", "value": "1"}] * 3))
    path.write_text(path.read_text()[:-30])
    with pytest.raises(record.RowsError, match=r"rows\.csv: line 4"):
        record.read_rows(path)
    path.write_text(record.rows_to_csv([{"run_id": "a", "status": "weird", "value": "1"}]))
    with pytest.raises(record.RowsError, match="line 2 has status 'weird'"):
        record.read_rows(path)


# 3. Checkpoints that survive.


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    r = resolve(RunSpec(preset="smoke"))
    task = r.task_cls(r.task, None, 0)
    encoder = task.build_encoder()
    method = r.method_cls(r.method, encoder, task, torch.device("cpu"))
    path = tmp_path / CHECKPOINT
    for step in (3, 6):
        state = TrainState()
        state.position.global_step = step
        save_checkpoint(path, encoder, method, state)
    assert (tmp_path / PREVIOUS).is_file()
    path.write_bytes(path.read_bytes()[:100])
    state = load_checkpoint(path, encoder, method)
    assert state is not None and state.position.global_step == 3
    assert "cannot be read" in caplog.text
    (tmp_path / PREVIOUS).write_bytes(b"junk")
    assert load_checkpoint(path, encoder, method) is None
    assert "starting over" in caplog.text


def test_truncated_checkpoint_of_an_interrupted_run_resumes_to_the_uninterrupted_rows(tmp_path):
    args = [*SMOKE, "--set", "train.steps_per_epoch=30", "--set", "train.checkpoint_every=2"]
    straight = tmp_path / "straight"
    assert bench(*args, "--out", str(straight)).returncode == 0
    broken = tmp_path / "broken"
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args, "--out", str(broken)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while not list(broken.glob("*/checkpoints/prev.pt")) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # interrupted: no rows, two checkpoints
    proc.wait()
    (run_dir,) = run_dirs(broken)
    assert not (run_dir / record.ROWS_FILE).exists()
    last = run_dir / CHECKPOINT
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    result = bench(*args, "--out", str(broken))  # the same command
    assert result.returncode == 0, result.stderr
    log = (run_dir / "run.log").read_text()
    assert "cannot be read" in log and "resumed from the previous checkpoint" in log

    def numbers(out):
        (rows,) = out.glob("*/rows.csv")
        return {(r["metric"], r["module"], r["epoch"]): r["value"] for r in record.read_rows(rows)
                if r["metric"] in ("class_acc", "train_loss", "val_loss")}  # fmt: skip

    assert numbers(broken) == numbers(straight)


# 4. One process per run folder.


def test_a_second_run_of_the_same_folder_exits_naming_the_holder(tmp_path, capsys):
    run_dir = tmp_path / resolve(RunSpec(preset="smoke")).run_id
    run_dir.mkdir()
    with RunLock(run_dir):
        assert main([*SMOKE, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"process {os.getpid()}" in err
    assert not (run_dir / record.ROWS_FILE).exists()
    assert main([*SMOKE, "--out", str(tmp_path)]) == 0  # the lock is released with its holder


# 5. Reporting on bad values.


def results_with(tmp_path: Path, value: str) -> Path:
    """Results of two random_init runs, a reference of them (``tmp_path/ref.yaml``), then one value replaced."""
    out = tmp_path / "res"
    assert main([*SMOKE, "--method", "random_init", "--out", str(out)]) == 0
    assert main([*SMOKE, "--method", "random_init", "--seed", "1", "--out", str(out)]) == 0
    record.collect(out)
    assert main(["check", str(out), "--update", "--reference", str(tmp_path / "ref.yaml")]) == 0
    path = out / "results.csv"
    rows = record.read_rows(path)
    hit = next(r for r in rows if r["metric"] == "class_acc" and r["seed"] == "1")
    hit["value"] = value
    path.write_text(record.rows_to_csv(rows))
    return out


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_values_are_errors_in_tables_and_checks_not_crashes(tmp_path, capsys, value):
    ref = tmp_path / "ref.yaml"
    out = results_with(tmp_path, value)
    assert main(["tables", str(out), "--no-figures"]) == 0
    assert "seed 1 (non-finite value)" in (out / "tables" / "table1.md").read_text()
    capsys.readouterr()
    assert main(["check", str(out), "--reference", str(ref)]) == 1
    assert "non-finite value" in capsys.readouterr().out


def test_a_cut_reference_is_bad_input(tmp_path, capsys):
    out = results_with(tmp_path, "0.5")
    ref = tmp_path / "ref.yaml"
    text = ref.read_text()
    ref.write_text(text[: text.index("cells:") + 30])
    capsys.readouterr()
    assert main(["check", str(out), "--reference", str(ref)]) == 2
    err = capsys.readouterr().err
    assert str(ref) in err and "Traceback" not in err


def test_a_damaged_results_file_is_bad_input_naming_it(tmp_path, capsys):
    out = results_with(tmp_path, "0.5")
    (out / "results.csv").write_bytes(b"\xff\xfe garbage")
    assert main(["tables", str(out)]) == 2
    assert "results.csv" in capsys.readouterr().err


# 6. Late failures: everything checkable fails before the first step, exit 2, nothing written but run.log.


@pytest.mark.parametrize("setting,message", [
    ("method.train_modules=[9]", "train_modules"),
    ("train.device=cuda:0", "CUDA is not available"),
    ("train.batch_size=-1", "train.batch_size must be at least 1"),
    ("eval.lrs=[-0.1]", "eval.lrs must be"),
])  # fmt: skip
def test_bad_settings_fail_before_training(tmp_path, capsys, setting, message):
    if "cuda" in setting and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main([*SMOKE, "--set", setting, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*/rows.csv")) and not list(tmp_path.glob("*/checkpoints"))


def test_librispeech_without_its_labelled_test_utterances_fails_before_training(tmp_path):
    source = shared_data("librispeech")
    root = tmp_path / "librispeech"
    shutil.copytree(source, root)
    files = __import__("tasks._librispeech_files", fromlist=["x"])
    base = files.find_root(root)
    labelled = {line.split()[0] for line in (base / files.LABELS / "converted_aligned_phones.txt").read_text().splitlines()}
    test_ids = files.read_list(base / files.LABELS / "test_split.txt")
    gone = [u for u in test_ids if u in labelled]
    assert gone, "the excerpt has labelled test utterances"
    for u in gone:
        files.flac_path(base, u).unlink()
    result = bench(*SMOKE, "--task", "librispeech", "--data-root", str(root), "--set", "task.download=false",
                   "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "phone probe would have no test samples" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "out").glob("*/rows.csv"))
    assert "Traceback" in next((tmp_path / "out").glob("*/run.log")).read_text()  # the details are in the log


def test_missing_data_is_one_message_and_exit_2_even_when_quiet(tmp_path):
    result = bench(*SMOKE, "--task", "cifar10", "--data-root", str(tmp_path / "none"), "--set", "task.download=false",
                   "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().startswith("bench: error:") and "CIFAR-10" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# 7. Bookkeeping.


def test_wall_time_sums_every_segment_of_a_resumed_run(tmp_path):
    args = [*SMOKE, "--set", "train.steps_per_epoch=30", "--set", "train.checkpoint_every=1", "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    started = time.time()
    deadline = started + 120
    while time.time() < deadline:
        ckpts = list(tmp_path.glob("*/checkpoints/last.pt"))
        if ckpts and torch.load(ckpts[0], weights_only=False)["position"]["global_step"] >= 15:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    (ckpt,) = tmp_path.glob("*/checkpoints/last.pt")
    first_segment = torch.load(ckpt, weights_only=False)["wall_s"]
    assert first_segment > 0
    result = bench(*args)
    assert result.returncode == 0, result.stderr
    (rows_path,) = tmp_path.glob("*/rows.csv")
    rows = record.read_rows(rows_path)
    wall = float(rows[0]["wall_s"])
    log_times = [float(x.split(" in ")[1].split(" s;")[0]) for x in (rows_path.parent / "run.log").read_text()
                 .splitlines() if " ok in " in x]  # fmt: skip
    assert wall == pytest.approx(log_times[-1], abs=0.06)
    # the final checkpoint holds the first segment plus the second one's training; the row adds the second
    # segment's preparation and evaluation (counting only the last segment fell short of it)
    assert wall >= torch.load(ckpt, weights_only=False)["wall_s"] > first_segment


def test_result_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert main([*SMOKE, "--method", "random_init", "--out", str(tmp_path)]) == 0
    finally:
        os.umask(old)
    (run_dir,) = run_dirs(tmp_path)
    for name in (record.ROWS_FILE, record.MANIFEST_FILE, record.CONFIG_FILE):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name


def test_ctrl_c_at_the_terminal_stops_the_sweep_not_its_local_jobs(tmp_path):
    exp = tmp_path / "experiment.yaml"
    exp.write_text(textwrap.dedent("""\
        experiment: ctrlc
        preset: smoke
        seeds: [0]
        overrides: {train: {threads: 1, steps_per_epoch: 300, checkpoint_every: 5}}
        methods: [gim]
        tasks: {synthetic_textures: {}}
        """))  # fmt: skip
    out = tmp_path / "out"
    # its own process group, as a foreground job at a terminal is, with Ctrl-C's default action (a test run
    # in the background inherits SIGINT ignored, and Python would keep ignoring it)
    sweep = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(exp), "--executor", "local", "--out",
                              str(out), "--poll", "0.5"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 120
    while not list(out.glob("*/checkpoints/last.pt")) and time.time() < deadline:
        time.sleep(0.1)
    assert not list(out.glob("*/rows.csv")), "the run ended before the Ctrl-C: lengthen it"
    os.killpg(sweep.pid, signal.SIGINT)  # what a Ctrl-C at the terminal sends to the foreground group
    _, err = sweep.communicate(timeout=60)
    assert "submitted jobs go on" in err
    deadline = time.time() + 600
    while time.time() < deadline and not list(out.glob("*/rows.csv")):
        time.sleep(0.5)
    states = sweep_state.run_states(out)
    assert [s.state for s in states] == ["done"], [(s.state, s.note) for s in states]
