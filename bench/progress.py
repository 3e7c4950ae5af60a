"""Progress bars with ETA for long work, silenced for a whole run by ``--quiet``."""

from __future__ import annotations

from tqdm import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def bar(**kwargs) -> tqdm:
    """A tqdm bar, disabled when the run is quiet."""
    return tqdm(disable=_quiet or kwargs.pop("disable", False), dynamic_ncols=True, **kwargs)
