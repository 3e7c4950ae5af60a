"""Every registered method runs the smoke preset on the embedded audio task; MFCC shapes and alignment."""

from __future__ import annotations

import csv

import pytest
import torch

from bench.cli import main
from bench.registry import METHODS
from methods.mfcc import Config as MFCCConfig
from methods.mfcc import mfcc


@pytest.mark.parametrize("method", [m for m in METHODS.names() if "audio" in METHODS.get(m).modalities])
def test_smoke_on_synthetic_speech(method, tmp_path):
    code = main(["run", "--method", method, "--task", "synthetic_speech", "--preset", "smoke", "--out", str(tmp_path),
                 "--quiet"])  # fmt: skip
    assert code == 0
    (rows_file,) = tmp_path.glob("*/rows.csv")
    rows = list(csv.DictReader(rows_file.open()))
    metrics = {r["metric"]: r for r in rows if r["module"] == ""}
    for name in ("speaker_acc", "phone_acc"):
        assert 0.0 <= float(metrics[name]["value"]) <= 1.0
    if METHODS.get(method).trains:
        assert any(r["metric"] == "train_loss" for r in rows)


def test_mfcc_frames_match_the_last_module_and_the_labels():
    x = torch.zeros(2, 1, 20480)
    x[0, 0, 160 * 50 : 160 * 51] = torch.randn(160)  # a burst inside Kaldi frames 48, 49 and 50 only
    feat = mfcc(x, MFCCConfig())
    assert feat.shape == (2, 39, 128)
    touched = (feat[0, 0] != feat[1, 0]).nonzero().flatten().tolist()
    assert touched == [50, 51, 52]  # latent frame t <-> Kaldi frame t - 2, the tasks' label alignment
    plain = mfcc(x, MFCCConfig(deltas=False, offset=0))
    assert plain.shape == (2, 13, 128) and (plain[0, 0] != plain[1, 0]).nonzero().flatten().tolist() == [
        48,
        49,
        50,
    ]


def test_ablations_change_the_encoder(tmp_path):
    assert main(["run", "--method", "gim_no_ar", "--task", "synthetic_speech", "--preset", "smoke",
                 "--out", str(tmp_path), "--quiet", "--set", "eval.all_modules=true"]) == 0  # fmt: skip
    (rows_file,) = tmp_path.glob("*/rows.csv")
    rows = list(csv.DictReader(rows_file.open()))
    speaker_modules = {r["module"] for r in rows if r["metric"] == "speaker_acc"}
    assert speaker_modules == {"0", "1", "2", "3", ""}  # 5 modules; the last one's row has no module
    phone_modules = {r["module"] for r in rows if r["metric"] == "phone_acc"}
    assert phone_modules == {""}  # only conv5 runs at the labels' frame rate
