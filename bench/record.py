"""The results schema: one row per (run, metric), written atomically the moment a run ends.

A run directory holds ``config.yaml`` (the resolved config), ``run.log``, ``checkpoints/`` and
``rows.csv``. A failed or interrupted run still writes ``rows.csv``: one row with its status and error.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

COLUMNS = (
    "run_id", "experiment", "method", "variant", "task", "seed", "preset", "metric", "module", "epoch", "value",
    "status", "error", "method_version", "task_version", "git_sha", "git_dirty", "device", "torch_version",
    "config_hash", "started_at", "wall_s", "restarts", "world_size", "batch_size", "host",
)  # fmt: skip
STATUS_OK, STATUS_FAILED, STATUS_INTERRUPTED = "ok", "failed", "interrupted"
ROWS_FILE, CONFIG_FILE, LOG_FILE = "rows.csv", "config.yaml", "run.log"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8, line endings as given."""
    atomic_write_bytes(path, text.encode("utf-8"))


def git_state(cwd: Path | None = None) -> tuple[str, bool | None]:
    """(commit sha, whether tracked files differ from it) of the harness's source tree."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        return sha, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def host_name() -> str:
    return platform.node()


def rows_to_csv(rows: Iterable[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
    return buf.getvalue()


def write_rows(run_dir: Path, rows: list[dict]) -> Path:
    path = run_dir / ROWS_FILE
    atomic_write_text(path, rows_to_csv(rows))
    return path


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def run_status(run_dir: Path) -> str | None:
    """The status recorded in ``run_dir/rows.csv`` (None when the run has not ended)."""
    path = run_dir / ROWS_FILE
    if not path.is_file():
        return None
    rows = read_rows(path)
    return rows[0]["status"] if rows else None


def write_config(run_dir: Path, resolved: dict) -> None:
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=True))


def collect(out_dir: Path, leave_out: Iterable[str] = ()) -> Path:
    """Merge every ``OUT/*/rows.csv`` (but the runs in ``leave_out``) into ``OUT/results.csv`` in a
    deterministic order."""
    rows: list[dict] = []
    skip = set(leave_out)
    for path in sorted(out_dir.glob(f"*/{ROWS_FILE}")):
        if path.parent.name not in skip:
            rows.extend(read_rows(path))
    order = ("experiment", "task", "method", "seed", "run_id", "metric", "module", "epoch")

    def key(row: dict) -> tuple:
        return tuple((row.get(k) or "").zfill(12) if k in ("seed", "module", "epoch") else row.get(k) or ""
                     for k in order)  # fmt: skip

    rows.sort(key=key)
    target = out_dir / "results.csv"
    atomic_write_text(target, rows_to_csv(rows))
    return target
