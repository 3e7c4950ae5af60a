"""A copy of the code at submission time, so that queued and requeued jobs run what was submitted.

``take(out)`` copies the harness and its plugins (``bench/``, ``methods/``, ``tasks/``, ``pyproject.toml``)
from the working tree into ``OUT/.snapshot/<hash>``, where the hash covers the commit and every file copied:
submitting the same code twice reuses one snapshot. In a git checkout the snapshot is a shallow clone of
HEAD with the working tree's files laid over it, so runs record the submitting commit and whether the code
differed from it (``git_sha``, ``git_dirty``), as they would have from the checkout. Jobs start in the
snapshot, and Python imports the first ``bench`` on its path: the snapshot's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench import plugins, record

log = logging.getLogger(__name__)
PACKAGES = ("bench", "methods", "tasks")
FILES = ("pyproject.toml",)
SNAPSHOT_DIR = ".snapshot"


def source_root() -> Path:
    """The folder that holds the ``bench`` package being run."""
    return Path(__file__).resolve().parents[2]


def source_files(root: Path) -> list[Path]:
    """The files a snapshot holds, relative to ``root``, sorted; caches and byte code left out."""
    files = [Path(f) for f in FILES if (root / f).is_file()]
    for package in PACKAGES:
        for path in (root / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append(path.relative_to(root))
    return sorted(files)


def git_head(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def content_hash(root: Path, files: list[Path], head: str | None) -> str:
    digest = hashlib.sha256((head or "no-git").encode())
    for rel in files:
        digest.update(str(rel).encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def take(out: Path, root: Path | None = None) -> Path:
    """Snapshot the code under ``out/.snapshot/<hash>`` (reused when it exists) and return its path."""
    root = root or source_root()
    files = source_files(root)
    head = git_head(root)
    dest = out / SNAPSHOT_DIR / content_hash(root, files, head)
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    try:
        if head is not None:
            clone_head(root, tmp)
        for package in PACKAGES:  # the working tree's packages replace HEAD's: new, changed and removed files
            shutil.rmtree(tmp / package, ignore_errors=True)
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, tmp / rel)
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():  # not merely a concurrent submission that made the same snapshot first
            raise
    log.info("code snapshot for queued jobs: %s", dest)
    outside = plugins.files_outside(str(root))
    if outside:
        note = "Not copied into this snapshot: external plugins, imported by the jobs from where they are:\n"
        record.atomic_write_text(dest / "EXTERNAL_PLUGINS.txt", note + "".join(f"  {p}\n" for p in outside))
        log.warning("the code snapshot does not copy the external plugins %s: jobs import them from there, so "
                    "edits to them reach queued jobs", ", ".join(outside))  # fmt: skip
    return dest


def clone_head(root: Path, dest: Path) -> None:
    """A shallow clone of ``root``'s HEAD into the empty folder ``dest`` (a plain copy if git fails)."""
    out = subprocess.run(
        ["git", "clone", "--quiet", "--depth", "1", "--no-hardlinks", f"file://{root}", str(dest)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if out.returncode != 0:
        log.warning("git clone of %s failed (%s); the snapshot is a plain copy without git provenance",
                    root, out.stderr.strip())  # fmt: skip
