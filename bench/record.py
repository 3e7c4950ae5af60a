"""The results schema: one row per (run, metric), written atomically the moment a run ends.

A run directory holds ``config.yaml`` (the resolved config), ``run.log``, ``checkpoints/``, ``rows.csv``
and ``rows.json`` (the rows' count, status and SHA-256, written after them). A failed, diverged or
interrupted run still writes ``rows.csv``: one row with its status and error. Every reader checks what it
reads (``read_rows``): a file that is not UTF-8, lacks the schema's columns, has a row cut short or does not
match its ``rows.json`` is *damaged*, and the error names the file, the line and what to do.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

COLUMNS = (
    "run_id", "experiment", "method", "variant", "task", "seed", "preset", "metric", "module", "epoch", "value",
    "status", "error", "method_version", "task_version", "git_sha", "git_dirty", "device", "torch_version",
    "config_hash", "started_at", "wall_s", "restarts", "world_size", "batch_size", "host", "plugins", "precision", "step",
    "stages",
)  # fmt: skip
STATUS_OK, STATUS_FAILED, STATUS_INTERRUPTED, STATUS_DIVERGED = "ok", "failed", "interrupted", "diverged"
STATUS_DAMAGED = "damaged"
"""Not a recorded status: a run folder whose rows are missing, cut short or unreadable (``run_status``)."""
STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_INTERRUPTED, STATUS_DIVERGED)
REQUIRED = ("run_id", "method", "task", "seed", "metric", "module", "epoch", "value", "status")
"""Columns every rows file must have (older files may lack later columns; they read as empty)."""
ROWS_FILE, MANIFEST_FILE, CONFIG_FILE, LOG_FILE = "rows.csv", "rows.json", "config.yaml", "run.log"
RERUN_HINT = "run the same `bench run` (or re-issue the sweep) to re-run or repair it"


class RowsError(ValueError):
    """A rows or results file that cannot be trusted; the message names the file, the line and the fix."""


def umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600 files; results are for collaborators too
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
    """``rows.csv``, then ``rows.json`` (its row count, status and digest): a run has ended when both agree."""
    path = run_dir / ROWS_FILE
    text = rows_to_csv(rows)
    atomic_write_text(path, text)
    manifest = {
        "rows": len(rows),
        "status": rows[0]["status"] if rows else "",
        "sha256": digest(text.encode()),
    }
    atomic_write_text(run_dir / MANIFEST_FILE, json.dumps(manifest, sort_keys=True) + "\n")
    return path


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_rows(path: Path, fix: str = RERUN_HINT) -> list[dict]:
    """The rows of a rows or results file, checked: UTF-8, the schema's columns, every row complete, a known
    status and a number (or nothing) as value. Raises RowsError naming ``path``, the line and ``fix``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise RowsError(
            f"{path}: not a text CSV file (undecodable byte at offset {err.start}); {fix}"
        ) from None
    except OSError as err:
        raise RowsError(f"{path}: cannot be read ({err.strerror}); {fix}") from None
    lines = list(csv.reader(io.StringIO(text, newline="")))
    if not lines or not any(lines[0]):
        raise RowsError(f"{path}: empty (no header line); {fix}")
    header = lines[0]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise RowsError(f"{path}: line 1 is not a bench rows header (no column {', '.join(missing)}); {fix}")
    if text and not text.endswith("\n"):
        raise RowsError(
            f"{path}: line {len(lines)} is cut short (no line end: the file was truncated); {fix}"
        )
    rows = []
    for number, fields in enumerate(lines[1:], start=2):
        if len(fields) != len(header):
            raise RowsError(f"{path}: line {number} has {len(fields)} fields, the header {len(header)} "
                            f"(cut short or edited); {fix}")  # fmt: skip
        row = dict(zip(header, fields, strict=True))
        check_row(row, path, number, fix)
        rows.append(row)
    return rows


def check_row(row: dict, path: Path, number: int, fix: str) -> None:
    if row["status"] not in STATUSES:
        raise RowsError(
            f"{path}: line {number} has status {row['status']!r}, not one of {', '.join(STATUSES)}; {fix}"
        )
    if row["value"] != "":
        try:
            float(row["value"])
        except ValueError:
            raise RowsError(
                f"{path}: line {number} has value {row['value']!r}, not a number; {fix}"
            ) from None


def check_manifest(run_dir: Path, rows_text: bytes, n_rows: int) -> None:
    """Compare ``rows.csv`` with ``rows.json`` when there is one (files of older versions have none)."""
    path = run_dir / MANIFEST_FILE
    if not path.is_file():
        return
    try:
        manifest = json.loads(path.read_text())
        expected, rows = manifest["sha256"], int(manifest["rows"])
    except (ValueError, KeyError, TypeError, OSError):
        raise RowsError(f"{path}: damaged (not the JSON bench writes); {RERUN_HINT}") from None
    if digest(rows_text) != expected:
        raise RowsError(f"{run_dir / ROWS_FILE}: differs from what the run wrote ({n_rows} rows now, {rows} "
                        f"written; see {path}); {RERUN_HINT}")  # fmt: skip


@dataclass
class RunRows:
    """What a run folder's rows say: its status (``STATUS_DAMAGED`` when they cannot be trusted, None when
    the run has not ended), its rows and, when damaged, why."""

    status: str | None
    rows: list[dict]
    problem: str = ""


def inspect(run_dir: Path) -> RunRows:
    path = run_dir / ROWS_FILE
    if not path.is_file():
        if (run_dir / MANIFEST_FILE).is_file():
            return RunRows(STATUS_DAMAGED, [], f"{path} is missing (the run ended; {MANIFEST_FILE} is there); "
                                                f"{RERUN_HINT}")  # fmt: skip
        return RunRows(None, [])
    try:
        rows = read_rows(path)
        check_manifest(run_dir, path.read_bytes(), len(rows))
    except RowsError as err:
        return RunRows(STATUS_DAMAGED, [], str(err))
    if not rows:
        return RunRows(STATUS_DAMAGED, [], f"{path} has a header and no rows; {RERUN_HINT}")
    return RunRows(rows[0]["status"], rows)


def run_status(run_dir: Path) -> str | None:
    """The status recorded in ``run_dir`` (None when the run has not ended, ``damaged`` when its rows are
    missing or cannot be trusted)."""
    return inspect(run_dir).status


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in (ROWS_FILE, MANIFEST_FILE, CONFIG_FILE))


def write_config(run_dir: Path, resolved: dict) -> None:
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=True))


class CollectError(RuntimeError):
    """``bench collect`` would leave runs out of results.csv; the message lists them."""


def collect(out_dir: Path, leave_out: Iterable[str] = (), expected: Iterable[str] = (),
            allow_missing: bool = False) -> Path:  # fmt: skip
    """Merge every run's rows under ``out_dir`` (but the runs in ``leave_out``) into ``OUT/results.csv`` in a
    deterministic order.

    Never shrinks results.csv silently: damaged runs, ``expected`` runs without rows and runs of the previous
    results.csv that would disappear raise CollectError naming them (nothing written), unless
    ``allow_missing``, when they are left out with a warning.
    """
    rows: list[dict] = []
    skip, problems, collected, damaged = set(leave_out), [], set(), set()
    for run_dir in sorted(p for p in out_dir.iterdir() if is_run_dir(p) and p.name not in skip):
        state = inspect(run_dir)
        if state.status == STATUS_DAMAGED:
            problems.append(f"damaged: {state.problem}")
            damaged.add(run_dir.name)
        elif state.status is not None:
            rows.extend(state.rows)
            collected.add(run_dir.name)
    problems += [f"missing: run {r} has no rows in {out_dir / r} (not run yet, or still running)"
                 for r in sorted(set(expected) - collected - skip - damaged)]  # fmt: skip
    problems += dropped_runs(out_dir / "results.csv", collected | skip | damaged)
    if problems and not allow_missing:
        raise CollectError(f"{len(problems)} run(s) would be left out of {out_dir / 'results.csv'}, which is "
                           "unchanged:\n  " + "\n  ".join(problems) + "\nre-run or repair them (`bench sweep` again "
                           "re-runs only these), or pass --allow-missing to collect the rest")  # fmt: skip
    for problem in problems:
        log.warning("left out of results.csv: %s", problem)
    order = ("experiment", "task", "method", "seed", "run_id", "metric", "module", "epoch", "step")

    def key(row: dict) -> tuple:
        return tuple((row.get(k) or "").zfill(12) if k in ("seed", "module", "epoch", "step") else row.get(k) or ""
                     for k in order)  # fmt: skip

    rows.sort(key=key)
    target = out_dir / "results.csv"
    atomic_write_text(target, rows_to_csv(rows))
    return target


def dropped_runs(previous: Path, kept: set[str]) -> list[str]:
    """Runs in the previous results.csv that a new one would lose."""
    if not previous.is_file():
        return []
    try:
        before = {r["run_id"] for r in read_rows(previous, fix="delete it and collect again")}
    except RowsError as err:
        log.warning("%s", err)
        return []
    return [
        f"dropped: run {r} is in the current {previous} but has no readable rows now"
        for r in sorted(before - kept)
    ]
