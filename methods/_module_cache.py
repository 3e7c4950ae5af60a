"""Frozen modules' outputs over the whole pretraining split, written once to disk, read back by sample index.

For iterative GIM (train a module to its budget, freeze it, train the next one on its outputs: the
maintainer's "save outputs of module as a new dataset", loeweX/Greedy_InfoMax#22). Module m's output ``z``
for every sample of the split is one float16 file ``<folder>/module{m}.f16`` of shape (N, k, ...)
(k = the rows of z per sample: the 49 patches of a vision grid, 1 for audio), with its shape in
``module{m}.json``. It is written and read with plain file I/O (pread per sample), not a memory map: the
file's pages stay in the OS page cache instead of the process's resident memory, so the cache does not
count as training memory (a memory map of it did: 2.4 GB of "peak memory" on CIFAR-10 at the small
preset). A file is written under a temporary name and renamed when complete, so a resumed run reuses a
finished cache and rewrites an interrupted one. Every sample is augmented once, with a generator seeded by
(task seed, chunk), so the cache is a fixed dataset; a cache of module m is computed from the cache of
module m - 1 when that exists. Disk: N x the per-sample output (checked against the free space
first; STL-10's full unlabeled split at paper size needs hundreds of GB: use task.max_pretrain, or
``method.iterative_inputs=recompute``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from bench import progress
from bench.interfaces import ModularEncoder, Task

log = logging.getLogger(__name__)
FP16_MAX = 65504.0


class ModuleCache:
    """Module outputs by sample index, one float16 file per module under ``folder``."""

    def __init__(self, folder: Path, encoder: ModularEncoder, task: Task, device: torch.device,
                 chunk: int = 64) -> None:  # fmt: skip
        self.folder, self.encoder, self.task, self.device, self.chunk = folder, encoder, task, device, chunk
        self.split = task.pretrain_split(supervised=False)
        self.stores: dict[int, CacheFile] = {}

    def inputs(self, m: int, index: torch.Tensor) -> torch.Tensor:
        """The cached output z of module m - 1 for samples ``index``: (B*k, ...) float32 on the device."""
        store = self.ensure(m - 1)
        rows = np.asarray(index.cpu(), dtype=np.int64)
        block = torch.from_numpy(store[rows].copy())  # (B, k, ...) float16
        return block.to(self.device).float().flatten(0, 1)  # -> (B*k, ...)

    def ensure(self, m: int) -> CacheFile:
        """Module m's cache, written now if it does not exist yet."""
        if m not in self.stores:
            path, meta = self.paths(m)
            if not meta.is_file():
                self.write(m)
            shape = tuple(json.loads(meta.read_text())["shape"])
            self.stores[m] = CacheFile(path, shape)
        return self.stores[m]

    def paths(self, m: int) -> tuple[Path, Path]:
        return self.folder / f"module{m}.f16", self.folder / f"module{m}.json"

    @torch.no_grad()
    def outputs(self, m: int, start: int, stop: int) -> torch.Tensor:
        """z of module m for samples start..stop-1, from the cache below it or from the (augmented) inputs."""
        below, _ = self.paths(m - 1)
        if m > 0 and below.is_file():
            z_in = self.inputs(m, torch.arange(start, stop))
            return self.encoder.module_output(m, z_in, None, self.encoder.blocks[m](z_in)).z
        gen = torch.Generator(device=self.device).manual_seed(self.task.seed * 100_003 + start)
        batch = self.task.batch(self.split, torch.arange(start, stop), self.device, gen, augment=True)
        return self.encoder.forward_modules(batch.x, detach=True, upto=m)[-1].z

    def write(self, m: int) -> None:
        n = self.task.split_size(self.split)
        path, meta = self.paths(m)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.encoder.eval()
        first = self.outputs(m, 0, min(self.chunk, n))
        per_sample = first.view(min(self.chunk, n), -1, *first.shape[1:]).shape[1:]  # (B*k, ...) -> (k, ...)
        shape = (n, *per_sample)
        self.check_space(m, shape)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as store:
            for start in progress.bar(iterable=range(0, n, self.chunk), desc=f"cache module {m}", leave=False):
                stop = min(start + self.chunk, n)
                z = first if start == 0 else self.outputs(m, start, stop)
                store.write(to_half(z.view(stop - start, *per_sample)).numpy().tobytes())
        tmp.replace(path)
        meta.write_text(json.dumps({"shape": list(shape), "split": self.split}))
        log.info("cached module %d outputs %s (float16, %.2f GB) at %s", m, shape, nbytes(shape) / 1e9, path)
        self.drop(m - 1)  # later phases only read this one

    def drop(self, m: int) -> None:
        store = self.stores.pop(m, None)
        if store is not None:
            store.close()
        for path in self.paths(m):
            path.unlink(missing_ok=True)

    def check_space(self, m: int, shape: tuple[int, ...]) -> None:
        free = shutil.disk_usage(self.folder).free
        need = nbytes(shape)
        if need > 0.95 * free:
            raise RuntimeError(
                f"the iterative cache of module {m} needs {need / 1e9:.1f} GB ({shape[0]} samples x "
                f"{need / shape[0] / 1e6:.2f} MB) but {self.folder} has {free / 1e9:.1f} GB free; pretrain on "
                "fewer samples (task.max_pretrain) or set method.iterative_inputs=recompute"
            )


class CacheFile:
    """A read-only float16 array of ``shape`` in a file, read by first-axis rows with pread."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.shape, self.row_bytes = shape, nbytes(shape[1:])
        if path.stat().st_size != nbytes(shape):
            raise RuntimeError(f"{path} holds {path.stat().st_size} bytes, expected {nbytes(shape)} for {shape}; "
                               "delete it and run again")  # fmt: skip
        self.fd = os.open(path, os.O_RDONLY)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        buf = bytearray(len(rows) * self.row_bytes)
        for i, row in enumerate(rows):
            buf[i * self.row_bytes : (i + 1) * self.row_bytes] = os.pread(self.fd, self.row_bytes,
                                                                          int(row) * self.row_bytes)  # fmt: skip
        return np.frombuffer(buf, dtype=np.float16).reshape(len(rows), *self.shape[1:])

    def close(self) -> None:
        os.close(self.fd)


def nbytes(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) * 2


def to_half(z: torch.Tensor) -> torch.Tensor:
    """float16 on the CPU; values beyond float16's range are clipped (with a warning)."""
    z = z.detach().float().cpu()
    if bool((z.abs() > FP16_MAX).any()):
        log.warning("module outputs exceed the float16 range; clipped to +-%g in the cache", FP16_MAX)
        z = z.clamp(-FP16_MAX, FP16_MAX)
    return z.half()
