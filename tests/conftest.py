"""Shared fixtures: the real data in ../shared/data when present, and small run helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import methods  # noqa: F401  (registers the plugins)
import tasks  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_data(sub: str) -> Path:
    """A folder of ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data {path} is absent (set BENCH_SHARED_DATA to the shared data folder)")
    return path
