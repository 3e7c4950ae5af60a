"""The CLI through its entry function and as a subprocess."""

import subprocess
import sys

import pytest

from bench import record
from bench.cli import main
from tests.conftest import REPO


def bench(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ls_lists_names_and_descriptions(capsys):
    assert main(["ls", "methods"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in out]
    assert "gim" in names and "random_init" in names and names == sorted(names)
    assert all(len(line.split(maxsplit=1)) == 2 for line in out)


def test_unknown_method_says_did_you_mean(capsys, tmp_path):
    assert main(["run", "--method", "gmi", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'gmi'" in err and "Did you mean 'gim'" in err
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_unknown_key_is_an_error(capsys, tmp_path):
    assert main(["run", "--preset", "smoke", "--set", "method.lrr=1", "--out", str(tmp_path)]) == 2
    assert "unknown key method.lrr" in capsys.readouterr().err


def test_an_audio_only_method_on_a_vision_task_is_an_error(capsys, tmp_path):
    assert main(["run", "--method", "gim_no_ar", "--task", "synthetic_textures", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "gim_no_ar applies to audio tasks" in err and "methods for it: " in err and "gim, " in err
    assert not any(tmp_path.iterdir())


def test_malformed_yaml_is_one_clear_message(capsys, tmp_path):
    bad = tmp_path / "exp.yaml"
    bad.write_text("method: {lr: 1\n")
    assert main(["run", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "Traceback" not in err


def test_describe_prints_modules_with_exact_counts(capsys):
    assert main(["describe", "--task", "synthetic_textures"]) == 0
    out = capsys.readouterr().out
    assert "(1, 64, 7, 7)" in out and "total" in out


def test_run_as_subprocess_then_reported_not_recomputed(tmp_path):
    first = bench("run", "--preset", "smoke", "--out", str(tmp_path), "--quiet")
    assert first.returncode == 0, first.stderr
    assert "class_acc" in first.stdout and "peak_mem_bytes" in first.stdout and "samples_per_s" in first.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows = record.read_rows(run_dir / "rows.csv")
    metrics = {r["metric"] for r in rows}
    assert {"class_acc", "samples_per_s", "peak_mem_bytes", "wall_s"} <= metrics
    assert all(r["status"] == "ok" and r["run_id"] == run_dir.name for r in rows)
    assert set(record.COLUMNS) == set(rows[0])
    assert (run_dir / "config.yaml").is_file() and (run_dir / "run.log").is_file()
    mtime = (run_dir / "rows.csv").stat().st_mtime_ns
    again = bench("run", "--preset", "smoke", "--out", str(tmp_path), "--quiet")
    assert again.returncode == 0 and "not recomputed" in again.stdout
    assert (run_dir / "rows.csv").stat().st_mtime_ns == mtime


def test_failed_run_writes_a_row_with_the_error(tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("out of disk in the middle of training")

    monkeypatch.setattr("bench.trainer.Trainer.run", broken)
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "o"), "--quiet"]) == 1
    (run_dir,) = (tmp_path / "o").iterdir()
    (row,) = record.read_rows(run_dir / "rows.csv")
    assert row["status"] == "failed" and "out of disk" in row["error"]


@pytest.mark.parametrize("executor", ["local"])
def test_local_executor_runs_in_a_subprocess(tmp_path, executor):
    result = bench("run", "--method", "random_init", "--preset", "smoke", "--executor", executor, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "status: ok" in result.stdout
