"""Data plumbing shared by tasks: clear data errors, checksums, resumable verified downloads."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)
DEFAULT_DATA_ROOT = Path(os.environ.get("BENCH_DATA_ROOT", "data"))


class DataError(RuntimeError):
    """Missing, truncated or corrupt data; the message says where we looked and what to do."""


def data_root(root: Path | None) -> Path:
    return Path(root) if root is not None else DEFAULT_DATA_ROOT


def sha256_file(path: Path, chunk: int = 1 << 20, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksum_ok(path: Path, sha256: str | None, md5: str | None) -> bool:
    if sha256 is not None and sha256_file(path) != sha256:
        return False
    return md5 is None or sha256_file(path, algorithm="md5") == md5


def download(url: str, dest: Path, sha256: str | None = None, md5: str | None = None, quiet: bool = False) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part``; verify the checksum when given.

    Raises DataError (never leaves a half-written ``dest``) when offline or when the checksum differs.
    """
    if dest.is_file() and checksum_ok(dest, sha256, md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if have and response.status != 206:  # the server ignored the range: start over
                have = 0
            total = int(response.headers.get("Content-Length") or 0) + have
            with part.open("ab" if have else "wb") as fh, tqdm(
                total=total or None, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=quiet
            ) as bar:
                while block := response.read(1 << 20):
                    fh.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as err:
        raise DataError(
            f"could not download {url} ({err}). If this machine is offline, fetch the file elsewhere and "
            f"put it at {dest} (a partial download is kept at {part} and resumed next time)"
        ) from None
    if not checksum_ok(part, sha256, md5):
        part.unlink()
        raise DataError(f"{url} downloaded with a wrong checksum (expected {sha256 or md5}); the file was removed")
    part.replace(dest)
    return dest


def cache_dir(near: Path) -> Path:
    """A writable cache folder: ``near/.bench_cache`` if possible, else ``~/.cache/bench``."""
    for candidate in (near / ".bench_cache", Path.home() / ".cache" / "bench"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            probe = candidate / ".write_test"
            probe.write_text("")
            probe.unlink()
            return candidate
        except OSError:
            continue
    raise DataError(f"no writable cache folder near {near} or in ~/.cache/bench")
