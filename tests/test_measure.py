"""Memory and throughput measurement: heap reuse, resumable peak tracking, which steps measure what, and the
patch encoder's pooling (a measured hot spot) giving avg_pool2d's exact gradients."""

from __future__ import annotations

import resource

import pytest
import torch
import torch.nn.functional as F

from bench.measure import HeapReuse, PeakMemory, Throughput, _libc, release_promptly
from bench.trainer import StepMeter
from tasks._resnet import SpatialMean

MiB = 1024 * 1024


def touch_and_free(mib: int) -> int:
    """Allocate and write ``mib`` MiB, free it; the minor page faults it took."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(mib * MiB, dtype=torch.uint8)
    block.fill_(1)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(_libc() is None, reason="heap reuse needs glibc's mallopt")
def test_heap_reuse_stops_page_faults_on_reallocation():
    release_promptly()
    touch_and_free(256)
    faults_released = [touch_and_free(64) for _ in range(3)]  # unmapped on free: faulted in again each time
    with HeapReuse(allowed=True) as heap:
        assert heap.active
        touch_and_free(256)  # the heap grows once; its pages stay resident
        faults_reused = [touch_and_free(64) for _ in range(3)]
    assert not heap.active
    assert min(faults_released) > 64 * MiB // 4096 // 2, faults_released
    assert max(faults_reused) < min(faults_released) / 10, (faults_reused, faults_released)


def test_heap_reuse_not_allowed_does_nothing():
    heap = HeapReuse(allowed=False)
    heap.enable()
    assert not heap.active


def test_peak_memory_counts_only_tracked_spans():
    memory = PeakMemory(torch.device("cpu"))
    memory.start()
    if not memory.pausable:
        pytest.skip("the kernel does not let this process reset its resident peak (/proc/self/clear_refs)")
    a = torch.ones(96 * MiB, dtype=torch.uint8)
    del a
    memory.pause()
    first = memory.peak_bytes()
    b = torch.ones(320 * MiB, dtype=torch.uint8)  # not tracked
    del b
    assert memory.peak_bytes() == first
    memory.resume()
    c = torch.ones(160 * MiB, dtype=torch.uint8)
    del c
    memory.pause()
    assert 90 * MiB <= first <= 140 * MiB, first / MiB
    assert 150 * MiB <= memory.peak_bytes() <= 300 * MiB, memory.peak_bytes() / MiB  # c counted, b not


class Recorder:
    """Stands in for PeakMemory, HeapReuse and Throughput; records what the meter asked of each."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self.calls.append(name + (f"({kwargs['timed']})" if "timed" in kwargs else ""))


@pytest.mark.parametrize(
    ("warmup", "expected"),
    [
        (2, ["mem", "mem", "timed", "timed", "new phase", "mem", "mem", "timed"]),
        (0, ["mem+timed", "timed", "timed", "timed", "new phase", "mem+timed", "timed", "timed"]),
    ],
)
def test_step_meter_measures_memory_first_then_time(warmup, expected):
    memory, heap, speed = Recorder(), Recorder(), Recorder()
    meter = StepMeter(memory, heap, speed, warmup)
    seen = []
    for phase, steps in enumerate((4, 3)):
        if phase:
            meter.new_phase()
            seen.append("new phase")
        for _ in range(steps):
            memory.calls.clear(), heap.calls.clear(), speed.calls.clear()
            meter.step_begin()
            meter.step_end(8)
            measuring = memory.calls == ["resume"] and heap.calls == ["disable"]
            assert measuring or (memory.calls == ["pause"] and heap.calls == ["enable"])
            timed = "step_begin(True)" in speed.calls
            seen.append("mem+timed" if measuring and timed else "mem" if measuring else "timed")
    assert seen == expected


def test_throughput_counts_only_timed_steps():
    speed = Throughput(torch.device("cpu"))
    for timed in (False, False, True, True):
        speed.step_begin(timed=timed)
        speed.step_end(8)
    assert speed.timed_steps == 2 and speed.samples == 16
    assert speed.s_per_step == pytest.approx(speed.seconds / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_mean_matches_average_pooling(dtype, channels_last):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    z = torch.randn(6, 5, 4, 4, dtype=dtype).contiguous(memory_format=fmt)
    grad = torch.randn(6, 5, 1, 1, dtype=dtype)
    ours, theirs = z.clone().requires_grad_(), z.clone().requires_grad_()
    out = SpatialMean.apply(ours)
    out.backward(grad)
    F.avg_pool2d(theirs, (4, 4)).backward(grad)
    assert torch.equal(out, F.avg_pool2d(z, (4, 4)))
    assert torch.equal(ours.grad, theirs.grad)
    assert ours.grad.is_contiguous(memory_format=fmt)
