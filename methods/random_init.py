"""The untrained encoder: PyTorch's default initialisation, probed as it is (the paper's lower baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.interfaces import Method
from bench.registry import METHODS


@dataclass(frozen=True)
class Config:
    """random_init has no settings: the encoder is initialised from the run's seed."""


@METHODS.register("random_init")
class RandomInit(Method):
    description = "randomly initialised encoder, no training (lower baseline)"
    Config = Config
    trains = False
