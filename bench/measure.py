"""Training memory and throughput, measured the same way for every method.

Memory: on CUDA the peak of ``torch.cuda.max_memory_allocated`` above what was allocated when measuring
began; on CPU the growth of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs
where the kernel allows it, otherwise the growth of ``ru_maxrss``).
Throughput: samples per second over the steps after the warm-up, with the device synchronised before the
clock is read.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import time
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} but CUDA is not available here; use train.device=cpu or auto")
    return device


def device_label(device: torch.device) -> str:
    """'cpu' or 'cuda:<GPU model>', the device class used to compare measurements."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it), so RSS growth reflects this training alone."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak training memory in bytes above the level when ``start`` was called."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0
        self.use_hwm = False

    def start(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        _release_free_heap()
        self.use_hwm = _reset_peak_rss() and _status_kib("VmHWM") is not None
        if self.use_hwm:
            self.base = (_status_kib("VmRSS") or 0) * 1024
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device) - self.base)
        if self.use_hwm:
            return max(0, (_status_kib("VmHWM") or 0) * 1024 - self.base)
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base)


class Throughput:
    """Samples per second over the timed steps (those after ``warmup`` steps), device-synchronised."""

    def __init__(self, device: torch.device, warmup: int) -> None:
        self.device = device
        self.warmup = warmup
        self.seen_steps = 0
        self.samples = 0
        self.seconds = 0.0
        self._t0: float | None = None

    def step_begin(self) -> None:
        if self.seen_steps >= self.warmup:
            synchronize(self.device)
            self._t0 = time.perf_counter()

    def step_end(self, samples: int) -> None:
        if self._t0 is not None:
            synchronize(self.device)
            self.seconds += time.perf_counter() - self._t0
            self.samples += samples
            self._t0 = None
        self.seen_steps += 1

    @property
    def samples_per_s(self) -> float | None:
        return self.samples / self.seconds if self.seconds > 0 else None

    @property
    def s_per_step(self) -> float | None:
        timed = self.seen_steps - self.warmup
        return self.seconds / timed if timed > 0 and self.seconds > 0 else None
