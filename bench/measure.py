"""Training memory and throughput, measured the same way for every method.

Memory: on CUDA the peak of ``torch.cuda.max_memory_allocated`` above what was allocated when measuring
began; on CPU the growth of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs
where the kernel allows it, otherwise the growth of ``ru_maxrss``), taken while glibc maps and unmaps each
block of 128 KiB or more on its own (``release_promptly``; ``HeapReuse`` disabled), so that it is the memory
training needs rather than what a caching or fragmented heap holds.
Throughput: samples per second over the timed steps, with the device synchronised before the clock is read.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import resource
import time
from pathlib import Path

import torch

from bench.config import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available here; use train.device=cpu or auto")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA with bf16; a CPU whose flags list avx512_bf16 or amx_bf16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return _cpu_has_bf16()


@functools.cache
def _cpu_has_bf16() -> bool:
    """Read /proc/cpuinfo once per process (the trainer, the run's provenance and evaluation all ask)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision(amp: str, device: torch.device) -> str:
    """The autocast precision ``train.amp`` means on ``device``: "bf16" or "fp32"."""
    if amp == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return "bf16" if amp == "bf16" else "fp32"


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
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc mallopt parameters (malloc.h)
PROMPT_RELEASE = {M_MMAP_THRESHOLD: 128 * 1024, M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}
"""glibc's initial settings, held fixed: by default glibc raises its mmap threshold (up to 32 MiB) each time
a mapped block is freed, after which blocks of up to that size are kept in the heap, reused and fragmented,
and resident memory no longer follows what is allocated."""
NEVER_TRIM = 2**31 - 1  # mallopt takes a C int: the largest threshold it can express (2 GiB of free top)


class HeapReuse:
    """On CPU with glibc, keep freed memory in the process heap for reuse while enabled.

    glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mapping and unmaps
    it on free, so a training step that frees and re-allocates its activations page-faults them all in
    again, zeroed by the kernel: ~295,000 page faults and 0.7 s of system time per GIM step at the stl10
    memory preset. Enabled, large blocks come from the heap and the heap is never trimmed, so the next step
    reuses the same pages. Resident memory then includes the heap's fragmentation, which is why the trainer
    measures memory only while this is disabled. Disabling restores glibc's defaults and hands the free heap
    back. Usable as a context manager (enabled inside).
    """

    def __init__(self, allowed: bool) -> None:
        self.libc = _libc() if allowed else None
        self.active = False

    def enable(self) -> None:
        if self.libc is not None and not self.active:
            libc = self.libc
            self.active = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))

    def disable(self) -> None:
        if self.active:
            release_promptly(self.libc)
            self.active = False

    def __enter__(self) -> HeapReuse:
        self.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disable()


def release_promptly(libc: ctypes.CDLL | None = None) -> bool:
    """Fix glibc to map every block of 128 KiB or more on its own and unmap it when freed, then hand the free
    heap back: resident memory then follows the memory allocated. Where glibc is not there, only collects
    garbage and returns False."""
    libc = libc or _libc()
    if libc is not None:
        for param, value in PROMPT_RELEASE.items():
            libc.mallopt(param, value)
    _release_free_heap()
    return libc is not None


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018  (glibc has it; musl's libc.so.6 alias may not)
        return libc
    except (OSError, AttributeError):
        return None


_folded_hwm_kib = 0
"""The largest VmHWM seen before a reset of it: the process's peak stays known across ``_reset_peak_rss``."""


def _reset_peak_rss() -> bool:
    global _folded_hwm_kib
    _folded_hwm_kib = max(_folded_hwm_kib, _status_kib("VmHWM") or 0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


_folded_cuda: dict[str, int] = {}


def _reset_cuda_peak(device: torch.device) -> None:
    synchronize(device)
    key = str(device)
    _folded_cuda[key] = max(_folded_cuda.get(key, 0), torch.cuda.max_memory_allocated(device))
    torch.cuda.reset_peak_memory_stats(device)


class RunPeak:
    """The process's peak memory over a whole run, whatever the trainer resets in between: on CPU the peak
    resident set (absolute, what ``/usr/bin/time -v`` reports as maximum resident set size, counted from
    ``start``); on CUDA the peak allocated memory."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        global _folded_hwm_kib
        if self.device.type == "cuda":
            _reset_cuda_peak(self.device)
            _folded_cuda[str(self.device)] = torch.cuda.memory_allocated(self.device)
            return
        _reset_peak_rss()
        _folded_hwm_kib = _status_kib("VmRSS") or 0

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            synchronize(self.device)
            return int(max(_folded_cuda.get(str(self.device), 0), torch.cuda.max_memory_allocated(self.device)))
        hwm = _status_kib("VmHWM")
        if hwm is None:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return max(_folded_hwm_kib, hwm) * 1024


class PeakMemory:
    """Peak training memory in bytes above the level when ``start`` was called.

    ``pause``/``resume`` limit the CPU measurement to some steps (the trainer measures the first steps of each
    phase, with heap reuse off); the peak is the largest over the measured spans. On CUDA and where the
    resident peak cannot be reset, every step from ``start`` counts and ``pausable`` is False.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0
        self.use_hwm = False
        self.peak = 0
        self.tracking = False

    @property
    def pausable(self) -> bool:
        return self.device.type != "cuda" and self.use_hwm

    def start(self) -> None:
        self.peak, self.tracking = 0, True
        if self.device.type == "cuda":
            _reset_cuda_peak(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        release_promptly()
        self.use_hwm = _reset_peak_rss() and _status_kib("VmHWM") is not None
        if self.use_hwm:
            self.base = (_status_kib("VmRSS") or 0) * 1024
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def pause(self) -> None:
        if self.pausable and self.tracking:
            self.peak = max(self.peak, self._current_peak())
            self.tracking = False

    def resume(self) -> None:
        if self.pausable and not self.tracking:
            _reset_peak_rss()
            self.tracking = True

    def peak_bytes(self) -> int:
        return max(self.peak, self._current_peak()) if self.tracking else self.peak

    def _current_peak(self) -> int:
        if self.device.type == "cuda":
            synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device) - self.base)
        if self.use_hwm:
            return max(0, (_status_kib("VmHWM") or 0) * 1024 - self.base)
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base)


class Throughput:
    """Samples per second over the timed steps (the trainer leaves out each phase's warm-up), synchronised."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.timed_steps = 0
        self.samples = 0
        self.seconds = 0.0
        self._t0: float | None = None

    def step_begin(self, timed: bool = True) -> None:
        if timed:
            synchronize(self.device)
            self._t0 = time.perf_counter()

    def step_end(self, samples: int) -> None:
        if self._t0 is not None:
            synchronize(self.device)
            self.seconds += time.perf_counter() - self._t0
            self.samples += samples
            self.timed_steps += 1
            self._t0 = None

    @property
    def samples_per_s(self) -> float | None:
        return self.samples / self.seconds if self.seconds > 0 else None

    @property
    def s_per_step(self) -> float | None:
        return self.seconds / self.timed_steps if self.timed_steps and self.seconds > 0 else None
