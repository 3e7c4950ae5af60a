"""``bench export`` and ``bench.load_encoder``: an exported encoder gives exactly the run's probe features,
anywhere (a fresh process, no run folder, no data), and unfinished or foreign inputs are refused."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

import bench
from bench import record
from bench.cli import main
from bench.config import ConfigError
from bench.execute import execute, features_in, prepare
from bench.export import FORMAT, FORMAT_VERSION, export_run, write_export
from bench.spec import RunSpec, resolve
from bench.trainer import CHECKPOINT, load_checkpoint
from tasks._waveforms import centre_starts

RUNS = {
    "gim-vision": ("gim", "synthetic_textures"),
    "gim-audio": ("gim", "synthetic_speech"),
    "random_init": ("random_init", "synthetic_textures"),  # no checkpoint: weights from the run's seed
    "mfcc": ("mfcc", "synthetic_speech"),  # features defined by the method, not the encoder
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished smoke run per entry of RUNS (run once for the module)."""
    out = tmp_path_factory.mktemp("runs")
    done = {}
    for key, (method, task) in RUNS.items():
        spec = RunSpec(method=method, task=task, preset="smoke")
        outcome = execute(spec, out / resolve(spec).run_id, quiet=True)
        assert outcome.status == "ok", outcome.error
        done[key] = Path(outcome.run_dir)
    return done


def run_features(key: str, run_dir: Path) -> tuple[torch.Tensor, list[torch.Tensor], object]:
    """(probe input, probe features, task) of a test batch, the harness's way: the run prepared again, its
    checkpoint loaded (``bench.trainer.load_checkpoint``) and ``Method.features`` as the evaluation calls it."""
    method, task = RUNS[key]
    resolved = resolve(RunSpec(method=method, task=task, preset="smoke"))
    run = prepare(resolved, {})
    load_checkpoint(run_dir / CHECKPOINT, run.encoder, run.method)
    run.encoder.eval()
    index = torch.arange(min(4, run.task.split_size("test")))
    x = run.task.batch("test", index, run.device, torch.Generator(), augment=False).x
    return x, features_in(run.method, resolved.eval, resolved.train, run.device)(x), run.task


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns(".lock")))


@pytest.mark.parametrize("key", list(RUNS))
def test_exported_features_equal_the_runs(runs, tmp_path, key):
    x, expected, _ = run_features(key, runs[key])
    export_run(runs[key], tmp_path / "enc.safetensors")
    got = bench.load_encoder(tmp_path / "enc.safetensors").features(x)
    assert len(got) == len(expected) > 1
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


FRESH = """
import sys, torch
import bench
assert "bench.export" not in sys.modules and "safetensors" not in sys.modules  # import bench stays light
enc = bench.load_encoder(sys.argv[1])
images = torch.load(sys.argv[2])                       # uint8 (B, H, W, C), as the task stores its images
x = enc.prepare(images)                                 # the evaluation's preparation
torch.save(enc.features(x), sys.argv[3])
"""


def test_loads_in_a_fresh_process_without_the_run_folder(runs, tmp_path):
    x, expected, task = run_features("gim-vision", runs["gim-vision"])
    copy = copy_run(runs["gim-vision"], tmp_path / "runs")
    export_run(copy, tmp_path / "enc.safetensors")
    shutil.rmtree(tmp_path / "runs")
    torch.save(
        task.splits["test"].images[:4].clone(), tmp_path / "images.pt"
    )  # what the batch x was made from
    script = tmp_path / "fresh.py"
    script.write_text(textwrap.dedent(FRESH))
    done = subprocess.run([sys.executable, str(script), "enc.safetensors", "images.pt", "features.pt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = torch.load(tmp_path / "features.pt")
    assert len(got) == len(expected)
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


def test_prepare_makes_raw_inputs_into_the_runs_test_batches(runs, tmp_path):
    """``prepare`` on raw data in the task's storage format (uint8 images, int16 waveforms) gives exactly the
    batches the run's evaluation made; other formats are refused with a message naming the expected one."""
    for key in ("gim-vision", "gim-audio"):
        x, _, task = run_features(key, runs[key])
        export_run(runs[key], tmp_path / f"{key}.safetensors")
        enc = bench.load_encoder(tmp_path / f"{key}.safetensors")
        if task.modality == "vision":
            raw = task.splits["test"].images[: len(x)]
        else:  # the test batch's centre crops of the first utterances, as int16 samples
            rec, clip = task.data.recordings, task.config.clip_samples
            utts = task.data.splits["test"].utterances[: len(x)]
            raw = torch.from_numpy(np.stack([rec.crop(int(u), int(s), clip) for u, s in
                                             zip(utts, centre_starts(rec.lengths()[utts], clip), strict=True)]))  # fmt: skip
        assert torch.equal(enc.prepare(raw), x)
        assert torch.equal(enc.prepare(raw.numpy()), x)
        for bad in (raw.float(), raw[0, 0]):
            with pytest.raises(ValueError, match="uint8|int16") as err:
                enc.prepare(bad)
            assert task.name in str(err.value) and str(tuple(bad.shape)) in str(err.value)
    with pytest.raises(ValueError, match="smaller than the centre crop"):
        bench.load_encoder(tmp_path / "gim-vision.safetensors").prepare(torch.zeros(1, 2, 2, 3, dtype=torch.uint8))


def test_loads_on_cpu_with_the_runs_metadata(runs, tmp_path):
    run_dir = runs["gim-audio"]
    out = tmp_path / "enc.safetensors"
    export_run(run_dir, out)
    rng = torch.get_rng_state()
    enc = bench.load_encoder(str(out), device="cpu")
    assert torch.equal(rng, torch.get_rng_state())  # loading leaves the caller's random state alone
    assert {p.device.type for p in enc.parameters()} == {"cpu"}
    assert not enc.training and not enc.encoder.training
    meta, rows = enc.meta, record.read_rows(run_dir / record.ROWS_FILE)
    assert (meta["task"], meta["method"], meta["seed"], meta["run_id"]) == (
        "synthetic_speech",
        "gim",
        0,
        run_dir.name,
    )
    assert meta["config"] == yaml.safe_load((run_dir / record.CONFIG_FILE).read_text())
    assert meta["git_sha"] == rows[0]["git_sha"] and len(meta["git_sha"]) == 40
    assert (meta["status"], meta["partial"], meta["weights"]["done"]) == ("ok", False, True)
    x = torch.zeros(meta["input"]["example_shape"])
    assert meta["module_shapes"] == [list(f.shape) for f in enc.features(x)]
    assert meta["input"]["example_shape"] == [1, 1, meta["config"]["task"]["clip_samples"]]
    with safe_open(str(out), framework="pt") as fh:
        embedded = json.loads(fh.metadata()["bench"])
    assert json.loads(out.with_suffix(".json").read_text()) == embedded == meta


def end_as(run_dir: Path, status: str) -> None:
    """Rewrite a finished run's rows as those of a run that ended with ``status``."""
    row = {**record.read_rows(run_dir / record.ROWS_FILE)[0], "status": status, "metric": "status", "value": "",
           "module": "", "epoch": "", "error": f"{status} for the test"}  # fmt: skip
    record.write_rows(run_dir, [row])


@pytest.mark.parametrize("status", ["interrupted", "failed", "diverged", None])
def test_an_unfinished_run_is_refused_unless_partial(runs, tmp_path, caplog, status):
    run_dir = copy_run(runs["gim-vision"], tmp_path / "runs")
    if status:
        end_as(run_dir, status)
    else:  # no rows: still running, or killed before it recorded them
        (run_dir / record.ROWS_FILE).unlink()
        (run_dir / record.MANIFEST_FILE).unlink()
    out = tmp_path / "enc.safetensors"
    with pytest.raises(ConfigError, match="--partial") as err:
        export_run(run_dir, out)
    assert str(run_dir) in str(err.value) and (status or "has not ended") in str(err.value)
    assert not out.exists() and not out.with_suffix(".json").exists()
    with caplog.at_level(logging.WARNING, logger="bench.export"):
        meta = export_run(run_dir, out, partial=True)
    assert "marked partial" in caplog.text
    assert (meta["partial"], meta["status"]) == (True, status or "unfinished")
    assert bench.load_encoder(out).meta["partial"] is True


def test_cli_refuses_a_missing_or_foreign_folder(tmp_path, capsys):
    for folder in (tmp_path / "nowhere", tmp_path):
        assert main(["export", str(folder), "--out", str(tmp_path / "enc.safetensors")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bench: error: ") and str(folder) in err
    assert not (tmp_path / "enc.safetensors").exists()


def test_cli_never_overwrites_without_force(runs, tmp_path, capsys):
    out = tmp_path / "enc.safetensors"
    args = ["export", str(runs["gim-vision"]), "--out", str(out)]
    assert main(args) == 0
    assert "bench.load_encoder(" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(args) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    out.unlink()  # the metadata file alone also blocks
    assert main(args) == 2 and str(out.with_suffix(".json")) in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert bench.load_encoder(out).meta["run_id"] == runs["gim-vision"].name


def test_a_file_that_is_not_an_export_is_refused(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("not weights")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain), metadata={"other": "{}"})
    foreign = tmp_path / "foreign.safetensors"
    save_file(
        {"w": torch.zeros(2)}, str(foreign), metadata={"bench": json.dumps({"format": "something else"})}
    )
    for path, why in ((text, "not a safetensors file"), (plain, "without bench metadata"),
                      (foreign, "not a bench-encoder document"), (tmp_path / "absent.safetensors", "no such file")):  # fmt: skip
        with pytest.raises(ValueError, match=why) as err:
            bench.load_encoder(path)
        assert str(path) in str(err.value)


def no_data(*args, **kwargs):
    raise AssertionError("the task read its data")


@pytest.mark.parametrize("method,task,train", [("gim", t, {}) for t in sorted(bench.TASKS.names())]
                         + [("gim_no_ar", "synthetic_speech", {}), ("gim_no_bptt", "synthetic_speech", {}),
                            ("gim", "synthetic_textures", {"channels_last": True})])  # fmt: skip
def test_every_task_rebuilds_without_its_data(tmp_path, monkeypatch, method, task, train):
    """The encoder of every registered task (and of the audio ablations, which change it through the task's
    config) is rebuilt from an export without reading data, exactly as the run built it."""
    resolved = resolve(RunSpec(method=method, task=task, preset="smoke", overrides={"train": train}))
    for attr in ("load_splits", "load", "check_data"):
        if hasattr(resolved.task_cls, attr):
            monkeypatch.setattr(resolved.task_cls, attr, no_data)
    torch.manual_seed(1)
    built = resolved.task_cls(resolved.task, None, 0)
    encoder = built.build_encoder().eval()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "run_id": "r", "method": method, "task": task,
            "seed": 0, "config": json.loads(json.dumps(resolved.as_dict))}  # fmt: skip
    write_export(tmp_path / "enc.safetensors", encoder.state_dict(), meta)
    if (
        resolved.train.channels_last
    ):  # as prepare() does: it changes the convolutions' results in the last bits
        encoder = encoder.to(memory_format=torch.channels_last)
    loaded = bench.load_encoder(tmp_path / "enc.safetensors")
    x = built.example_input(2)
    expected = [out.rep for out in encoder.iter_modules(x, detach=True)]
    got = loaded.features(x)
    assert len(got) == len(expected) == (5 if method == "gim_no_ar" else len(got))
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("task", sorted(bench.TASKS.names()))
def test_every_task_prepares_raw_inputs_to_its_input_shape(task, monkeypatch):
    """Contract: each registered task turns raw data of its storage format into inputs of the training shape,
    without reading its own data."""
    resolved = resolve(RunSpec(method="gim", task=task, preset="smoke"))
    for attr in ("load_splits", "load", "check_data"):
        if hasattr(resolved.task_cls, attr):
            monkeypatch.setattr(resolved.task_cls, attr, no_data)
    built = resolved.task_cls(resolved.task, None, 0)
    shape = tuple(built.example_input(2).shape)
    if built.modality == "vision":
        raw = torch.randint(0, 256, (2, shape[-2] + 3, shape[-1] + 3, 3), dtype=torch.uint8)
    else:
        raw = torch.randint(-3000, 3000, (2, shape[-1]), dtype=torch.int16)
    x = built.prepare(raw)
    assert tuple(x.shape) == shape and x.dtype == torch.float32 and torch.isfinite(x).all()
