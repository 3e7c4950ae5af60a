"""`bench check`: seed-aware accuracy checks, per-device-class memory/throughput checks, reference updates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from results_factory import Run, paper_like_runs, write_results

from bench import cli, record
from bench.report.reference import Rules, load_reference

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_plugins(monkeypatch):
    monkeypatch.setattr(cli, "load_plugins", lambda: None)  # check needs no plugins


def bench(*argv: str | Path) -> int:
    return cli.main([str(a) for a in argv])


def scaled(runs: list[Run], acc: float = 1.0, mem: float = 1.0, device: str | None = None) -> list[Run]:
    return [Run(r.task, r.method, r.seed, {k: v * acc for k, v in r.accs.items()}, r.method_config,
                device or r.device, r.mem_bytes * mem, r.samples_per_s, r.modules, r.epochs, r.status)
            for r in runs]  # fmt: skip


@pytest.fixture
def reference(tmp_path) -> Path:
    write_results(tmp_path / "ref_run", paper_like_runs(seeds=3))
    ref = tmp_path / "reference.yaml"
    assert bench("check", tmp_path / "ref_run", "--update", "--reference", ref, "--cycle", "smoke") == 0
    return ref


def test_update_writes_mean_std_n_per_cell(reference):
    ref = load_reference(reference)
    data = yaml.safe_load(reference.read_text())
    assert data["format"] == "bench-reference/1" and data["cycle"] == "smoke" and data["preset"] == "smoke"
    cell = next(c for c in data["cells"] if (c["task"], c["method"], c["metric"], c["module"], c["variant"])
                == ("cifar10", "gim", "class_acc", "", ""))  # fmt: skip
    assert cell["n"] == 3 and cell["device"] == "cpu" and cell["std"] > 0
    assert {k.metric for k in ref.cells} >= {
        "class_acc",
        "digit_acc",
        "speaker_acc",
        "peak_mem_bytes",
        "samples_per_s",
    }
    assert not any(k.metric in ("train_loss", "wall_s", "s_per_step") for k in ref.cells)


def test_identical_results_pass(reference, tmp_path, capsys):
    assert bench("check", tmp_path / "ref_run", "--reference", reference) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "REGRESSED" not in out


def test_accuracies_scaled_by_a_fifth_fail_and_are_named(reference, tmp_path, capsys):
    write_results(tmp_path / "now", scaled(paper_like_runs(seeds=3), acc=0.2))
    assert bench("check", tmp_path / "now", "--reference", reference) == 1
    out = capsys.readouterr().out
    assert (
        "FAIL" in out
        and "cifar10 / gim / class_acc / cpu: " in out
        and "fsdd / cpc / speaker_acc / cpu: " in out
    )
    assert "peak_mem_bytes / cpu: " not in out.split("FAIL")[1]


def test_memory_regression_uses_the_device_class_tolerance(reference, tmp_path, capsys):
    write_results(tmp_path / "ok", scaled(paper_like_runs(seeds=3), mem=1.3))
    assert bench("check", tmp_path / "ok", "--reference", reference) == 0
    write_results(tmp_path / "bad", scaled(paper_like_runs(seeds=3), mem=2.0))
    assert bench("check", tmp_path / "bad", "--reference", reference) == 1
    assert "cifar10 / gim / peak_mem_bytes / cpu: " in capsys.readouterr().out
    assert bench("check", tmp_path / "bad", "--reference", reference, "--mem-tol", "1.5") == 0


def test_gpu_run_is_not_compared_with_a_cpu_reference(reference, tmp_path, capsys):
    write_results(tmp_path / "gpu", scaled(paper_like_runs(seeds=3), mem=10.0, device="cuda:NVIDIA H100"))
    assert bench("check", tmp_path / "gpu", "--reference", reference) == 0
    out = capsys.readouterr().out
    assert "skipped (the reference has no cuda:NVIDIA H100 measurements)" in out
    assert "ok (allowed drop" in out and "reference measured on cpu" in out
    assert bench("check", tmp_path / "gpu", "--update", "--reference", reference) == 0
    assert {k.device for k in load_reference(reference).cells} == {"cpu", "cuda:NVIDIA H100"}
    assert bench("check", tmp_path / "ref_run", "--reference", reference) == 0


def test_missing_cells_warn_unless_strict(reference, tmp_path, capsys):
    write_results(tmp_path / "now", [r for r in paper_like_runs(seeds=3) if r.method != "cpc"])
    assert bench("check", tmp_path / "now", "--reference", reference) == 0
    assert "missing (no current runs)" in capsys.readouterr().out
    assert bench("check", tmp_path / "now", "--reference", reference, "--strict") == 1


def test_failed_run_fails_the_check_and_blocks_update(reference, tmp_path, capsys):
    runs = paper_like_runs(seeds=3) + [Run("cifar10", "gim", 9, {}, status=record.STATUS_FAILED)]
    write_results(tmp_path / "now", runs)
    assert bench("check", tmp_path / "now", "--reference", reference) == 1
    assert "FAILED (RuntimeError: boom)" in capsys.readouterr().out
    assert bench("check", tmp_path / "now", "--update", "--reference", tmp_path / "new.yaml") == 2
    assert "did not finish" in capsys.readouterr().err


def test_bad_reference_is_a_usage_error(tmp_path, capsys):
    write_results(tmp_path, [Run("cifar10", "gim", 0, {"class_acc": 0.5})])
    assert bench("check", tmp_path, "--reference", tmp_path / "absent.yaml") == 2
    assert "--update" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("cells: []\n")
    assert bench("check", tmp_path, "--reference", tmp_path / "bad.yaml") == 2


@pytest.mark.parametrize(("mean", "std", "allowed"), [
    (0.6, 0.0, 0.02), (0.6, 0.05, 0.15), (0.6, 0.2, 0.3), (0.03, 0.0, 0.015),
])  # fmt: skip
def test_allowed_drop_is_max_of_sigmas_and_floor_capped_by_the_mean(mean, std, allowed):
    assert Rules().allowed_drop(mean, std) == pytest.approx(allowed)


def test_seed_noise_within_three_sigma_passes(tmp_path):
    noisy = [Run("cifar10", "gim", s, {"class_acc": a}) for s, a in enumerate((0.50, 0.60, 0.70))]
    write_results(tmp_path / "ref", noisy)
    bench("check", tmp_path / "ref", "--update", "--reference", tmp_path / "r.yaml")
    write_results(tmp_path / "a", [Run("cifar10", "gim", s, {"class_acc": 0.45}) for s in range(3)])
    assert bench("check", tmp_path / "a", "--reference", tmp_path / "r.yaml") == 0
    write_results(tmp_path / "b", [Run("cifar10", "gim", s, {"class_acc": 0.25}) for s in range(3)])
    assert bench("check", tmp_path / "b", "--reference", tmp_path / "r.yaml") == 1


def test_check_as_a_subprocess(reference, tmp_path):
    write_results(tmp_path / "now", scaled(paper_like_runs(seeds=3), acc=0.2))
    code = (
        "import sys; from bench import cli; cli.load_plugins = lambda: None; sys.exit(cli.main(sys.argv[1:]))"
    )
    proc = subprocess.run([sys.executable, "-c", code, "check", str(tmp_path / "now"), "--reference", str(reference)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1 and "REGRESSED" in proc.stdout


def test_memory_noise_over_seeds_and_tiny_changes_are_tolerated(tmp_path):
    noisy = [
        Run("cifar10", "gim", s, {"class_acc": 0.5}, mem_bytes=m) for s, m in enumerate((100e6, 200e6, 300e6))
    ]
    write_results(tmp_path / "ref", noisy + [Run("cifar10", "cpc", 0, {"class_acc": 0.5}, mem_bytes=2**20)])
    bench("check", tmp_path / "ref", "--update", "--reference", tmp_path / "r.yaml")
    now = [Run("cifar10", "gim", s, {"class_acc": 0.5}, mem_bytes=450e6) for s in range(3)]
    write_results(tmp_path / "a", now + [Run("cifar10", "cpc", 0, {"class_acc": 0.5}, mem_bytes=8 * 2**20)])
    assert bench("check", tmp_path / "a", "--reference", tmp_path / "r.yaml") == 0
    write_results(
        tmp_path / "b", [Run("cifar10", "gim", s, {"class_acc": 0.5}, mem_bytes=600e6) for s in range(3)]
    )
    assert bench("check", tmp_path / "b", "--reference", tmp_path / "r.yaml") == 1
