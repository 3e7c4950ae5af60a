"""Published numbers, read from a paper file such as ``bench/paper_gim2019.yaml`` (data with its citation)."""

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


@dataclass(frozen=True)
class Paper:
    key: str
    citation: str
    tables: dict[str, PaperTable]

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
                      str(entry.get("note", "")), rows, ratios)  # fmt: skip


def load_paper(path: Path = DEFAULT_PAPER) -> Paper:
    """Read a paper file; raises PaperError when it is missing or malformed."""
    if not path.is_file():
        raise PaperError(f"paper file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "citation" not in data or "tables" not in data:
        raise PaperError(f"{path}: a paper file needs 'citation' and 'tables'")
    tables = {name: parse_table(name, entry, str(path)) for name, entry in data["tables"].items()}
    return Paper(str(data.get("paper", path.stem)), " ".join(str(data["citation"]).split()), tables)
