"""Published numbers, read from a paper file such as ``bench/report/paper_gim2019.yaml`` (data with its citation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_PAPER = Path(__file__).with_name("paper_gim2019.yaml")


class PaperError(ValueError):
    """A malformed paper file; the message names the file and the entry."""


@dataclass(frozen=True)
class PaperRow:
    """One row of a published table: ``method`` None for a literature row the paper did not re-run."""

    label: str
    method: str | None
    variant: str = ""
    values: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PaperRatio:
    """A published ratio of two rows' values (e.g. GIM all modules / GIM first module)."""

    label: str
    numerator: str
    denominator: str
    paper: float


@dataclass(frozen=True)
class PaperTable:
    name: str
    title: str
    task: str
    note: str
    rows: tuple[PaperRow, ...]
    ratios: tuple[PaperRatio, ...] = ()
    modality: str = "vision"


@dataclass(frozen=True)
class Paper:
    key: str
    citation: str
    tables: dict[str, PaperTable]
    tasks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Modality -> the paper's task, then stand-ins by fidelity."""
    figures: dict[str, dict] = field(default_factory=dict)
    """Figure name -> its settings (modality, the method(s) and variant it shows)."""

    def candidates(self, modality: str) -> tuple[str, ...]:
        if not self.tasks.get(modality):
            raise PaperError(f"the paper file lists no {modality} tasks (its 'tasks' mapping)")
        return self.tasks[modality]

    def figure(self, name: str) -> dict:
        if name not in self.figures:
            raise PaperError(f"the paper file has no figure {name!r} (its 'figures' mapping)")
        return self.figures[name]

    def table(self, name: str) -> PaperTable:
        if name not in self.tables:
            raise PaperError(f"the paper file has no {name!r}; it has {', '.join(sorted(self.tables))}")
        return self.tables[name]


def parse_row(entry: dict, where: str) -> PaperRow:
    try:
        return PaperRow(
            label=str(entry["label"]), method=entry.get("method"), variant=str(entry.get("variant") or ""),
            values={k: float(v) for k, v in entry.get("values", {}).items()},
            std={k: float(v) for k, v in (entry.get("std") or {}).items()},
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise PaperError(f"{where}: bad row {entry!r} ({err}); rows need label, method and values") from err


def parse_table(name: str, entry: dict, where: str) -> PaperTable:
    rows = tuple(parse_row(r, f"{where}: {name}") for r in entry.get("rows", []))
    ratios = tuple(PaperRatio(**r) for r in entry.get("ratios", []))
    return PaperTable(name, str(entry.get("title", name)), str(entry.get("task", "")),
                      str(entry.get("note", "")), rows, ratios, str(entry.get("modality", "vision")))  # fmt: skip


def load_paper(path: Path = DEFAULT_PAPER) -> Paper:
    """Read a paper file; raises PaperError when it is missing or malformed."""
    if not path.is_file():
        raise PaperError(f"paper file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise PaperError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict) or "citation" not in data or "tables" not in data:
        raise PaperError(f"{path}: a paper file needs 'citation' and 'tables'")
    tables = {name: parse_table(name, entry, str(path)) for name, entry in data["tables"].items()}
    tasks = {str(m): tuple(str(t) for t in ts) for m, ts in (data.get("tasks") or {}).items()}
    return Paper(str(data.get("paper", path.stem)), " ".join(str(data["citation"]).split()), tables, tasks,
                 dict(data.get("figures") or {}))  # fmt: skip
