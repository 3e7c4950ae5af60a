"""The built tables: columns, entries (ours beside the paper's), ratios; what ``render`` writes out."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.report.aggregate import Cell


@dataclass(frozen=True)
class Column:
    """A measured column: the paper's column name and the metric (and scale) it is built from."""

    name: str
    metric: str
    scale: float = 100.0
    unit: str = "%"
    decimals: int = 1


@dataclass(frozen=True)
class Entry:
    """One cell of a built table: ours (None when no run) beside the paper's value."""

    row: str
    method: str | None
    variant: str
    column: Column
    cell: Cell | None
    paper: float | None
    paper_std: float | None

    def ours(self) -> float | None:
        return None if self.cell is None else self.cell.mean * self.column.scale

    def ours_std(self) -> float | None:
        std = None if self.cell is None else self.cell.std
        return None if std is None else std * self.column.scale

    def diff(self) -> float | None:
        ours = self.ours()
        return None if ours is None or self.paper is None else ours - self.paper


@dataclass(frozen=True)
class Ratio:
    """A ratio of two rows' means in the first column (Table 2's GIM all / first module)."""

    label: str
    ours: float | None
    n: int
    paper: float


@dataclass
class Table:
    name: str
    title: str
    task: str
    paper_task: str
    columns: tuple[Column, ...]
    rows: list[str]
    entries: dict[tuple[str, str], Entry]
    notes: list[str] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        return any(e.cell is not None for e in self.entries.values())
