"""`bench report`: the self-contained HTML page, checked as text and, where Chromium is installed, in a browser."""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest
from results_factory import Run, paper_like_runs, write_results

from bench import cli, record
from bench.report import aggregate as agg
from bench.report import browser, check, render, tables
from bench.report import html as report
from bench.report import reference as refmod
from bench.report.paper import load_paper
from tests.conftest import REPO

CHROMIUM = browser.find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason=f"Chromium is not installed (/usr/bin/chromium or `chromium` on PATH); {browser.INSTALL_HINT}",
)
FAILED = Run("cifar10", "cpc", 5, {}, status=record.STATUS_FAILED)
DIVERGED = Run("fsdd", "gim", 7, {}, status=record.STATUS_DIVERGED)


@pytest.fixture(autouse=True)
def no_plugins(monkeypatch):
    monkeypatch.setattr(cli, "load_plugins", lambda: None)  # reports need no plugins


def write_reference(results: Path, path: Path) -> Path:
    """The results' own cells as a reference, but GIM's Table 1 accuracy 20 points higher (a regression) and
    one speaker_acc cell left out (new)."""
    cells = refmod.from_cells(agg.aggregate(agg.load_results(results), by_device=True))
    key = agg.CellKey("cifar10", "gim", "", "class_acc", "", "cpu")
    cells[key] = dataclasses.replace(cells[key], mean=cells[key].mean + 0.2)
    del cells[agg.CellKey("fsdd", "cpc", "", "speaker_acc", "", "cpu")]
    refmod.save_reference(path, refmod.Reference(cells, refmod.Rules(), {"preset": "smoke"}))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A results folder (two seeds of every paper method, a failed and a diverged run), its `bench tables`
    output beside it, and its report against a reference."""
    out = tmp_path_factory.mktemp("study")
    write_results(out, paper_like_runs(seeds=2) + [FAILED, DIVERGED], configs=False)
    tables.write_tables(out)
    ref = write_reference(out, out.parent / "reference.yaml")
    assert cli.main(["report", str(out), "--reference", str(ref)]) == 0
    return out


@pytest.fixture(scope="module")
def page(study) -> str:
    return (study / report.REPORT_PAGE).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def built(study) -> dict[str, tables.Table]:
    rows, paper = agg.load_results(study), load_paper()
    return {name: build(rows, paper) for name, build in tables.TABLES.items()}


class Tags(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))


def section(page: str, sid: str) -> str:
    return re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S).group(1)


def row_of(page: str, text: str) -> str:
    """The first table row that contains ``text``."""
    return next(tr for tr in re.findall(r"<tr>.*?</tr>", page, re.S) if text in tr)


def test_page_is_self_contained(page):
    tags = Tags(page).tags
    linked = [(t, a) for t, a in tags if a.get("src") or a.get("href")]
    assert linked, "the page should link its sections and inline its figures"
    for tag, attrs in linked:  # links within the page, data URIs, nothing else
        assert re.match(r"#|data:", attrs.get("href") or attrs.get("src")), (tag, attrs)
    assert not [
        t for t, a in tags if t in ("link", "script") and (a.get("rel") == "stylesheet" or a.get("src"))
    ]
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page)
    assert "@import" not in page and "url(" not in page


def test_page_has_every_section_in_the_contents(page, built):
    toc = re.findall(r'<li><a href="#([\w-]+)">', page)
    assert toc == ["check", *built, "figures", "modules", "resources", "runs"]
    assert re.findall(r'<section id="([\w-]+)">', page) == toc
    assert '<meta name="viewport"' in page and "@media print" in page and "<h1>synthetic</h1>" in page


def test_tables_have_the_paper_columns_notes_and_provenance(page, built):
    for name, table in built.items():
        part = section(page, name)
        heads = re.findall(
            r'<th scope="col"[^>]*><button type="button">(.*?)</button>', part.split("<details>")[0]
        )
        assert heads == ["method", *(report.escape(h) for h in render.header_cells(table))]
        for note in table.notes:
            assert report.prose(note) in part
    gim = next(e for e in built["table1"].entries.values() if e.method == "gim" and not e.variant)
    cell = row_of(section(page, "table1"), "Greedy InfoMax (GIM)")
    assert all(run_id in cell for run_id in gim.cell.run_ids) and "config: " in cell and "device: cpu" in cell
    assert "Provenance of each cell" in section(page, "table1")


def test_reference_verdicts_colour_the_cells(page):
    gim = row_of(section(page, "table1"), "Greedy InfoMax (GIM)")
    assert 'class="v-regressed"' in gim and ">REGRESSED</span>" in gim
    assert 'class="v-ok"' in row_of(section(page, "table1"), "Supervised")
    summary = section(page, "check")
    assert "FAIL" in summary and "pill v-regressed" in summary and "pill v-new" in summary
    assert "cifar10 / gim / class_acc / cpu" in summary and "pill v-failed" in summary


def test_failed_and_diverged_runs_show_their_state_and_error(page):
    runs = section(page, "runs")
    for run, status in ((FAILED, "failed"), (DIVERGED, "diverged")):
        tr = row_of(runs, run.run_id)
        assert f'class="text s-{status}">{status}</td>' in tr and "RuntimeError: boom" in tr


def test_every_run_has_one_row(page, study):
    runs = section(page, "runs")
    ids = {r["run_id"] for r in agg.load_results(study)}
    assert runs.count("<tr>") - 1 == len(ids) and all(run_id in runs for run_id in ids)


def test_figures_are_the_svgs_of_bench_tables(page, study):
    uris = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)"', section(page, "figures"))
    expected = [p.read_bytes() for p in sorted((study / "figures").glob("*.svg"))]
    assert len(expected) >= 2 and [base64.b64decode(u) for u in uris] == expected


def test_regeneration_is_byte_identical(study, page):
    ref = study.parent / "reference.yaml"
    assert cli.main(["report", str(study), "--reference", str(ref)]) == 0
    assert (study / report.REPORT_PAGE).read_text(encoding="utf-8") == page


def test_line_chart_draws_one_line_per_series_and_skips_gaps():
    svg = report.line_chart(
        [("a", [50.0, 60.0, None]), ("b<", [40.0, None, 70.0])], ["m1", "m2", "main"], "x"
    )
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 4 and "b&lt;:" in svg and " id=" not in svg


def test_missing_or_damaged_results_exit_2(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "results.csv does not exist; run `bench collect" in capsys.readouterr().err
    write_results(tmp_path, [Run("cifar10", "gim", 0, {"class_acc": 0.5})], configs=False)
    text = (tmp_path / "results.csv").read_text()
    (tmp_path / "results.csv").write_text(text[:-10])
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "cut short" in capsys.readouterr().err and not (tmp_path / report.REPORT_PAGE).exists()
    (tmp_path / "results.csv").write_text(text)
    assert cli.main(["report", str(tmp_path), "--reference", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


def test_screenshot_without_chromium_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    write_results(tmp_path, [Run("cifar10", "gim", 0, {"class_acc": 0.5})], configs=False)
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    assert cli.main(["report", str(tmp_path), "--screenshot", str(tmp_path / "page.png")]) == 2
    assert "apt-get install chromium" in capsys.readouterr().err
    with pytest.raises(browser.BrowserMissingError, match="apt-get install chromium"):
        browser.Browser()


# In a browser ------------------------------------------------------------------------------------------------

COUNTS = """Object.fromEntries([...document.querySelectorAll("section")].map(s => [s.id, {
  tables: [...s.querySelectorAll("table")].filter(t => !t.closest("details")).map(t => ({
    body: t.tBodies[0].rows.length, foot: t.tFoot ? t.tFoot.rows.length : 0, cols: t.tHead.rows[0].cells.length})),
  images: [...s.querySelectorAll("img")].filter(i => i.complete && i.naturalWidth > 0).length,
  charts: s.querySelectorAll(".chart svg polyline").length}]))"""


@pytest.fixture(scope="module")
def chromium(study):
    """The report at 1280 px in one headless Chromium, shared by the tests below (they only read and sort)."""
    with browser.Browser(timeout=60) as b:
        b.open((study / report.REPORT_PAGE).resolve().as_uri(), width=1280)
        yield b


def column(b: browser.Browser, table: str, index: int) -> list[str]:
    return b.evaluate(f"[...document.querySelector('{table}').tBodies[0].rows].map(r => "
                      f"r.cells[{index}].dataset.sort ?? r.cells[{index}].textContent)")  # fmt: skip


def click(b: browser.Browser, table: str, index: int) -> None:
    b.evaluate(
        f"document.querySelector('{table}').tHead.rows[0].cells[{index}].querySelector('button').click()"
    )


@needs_chromium
def test_page_loads_without_console_errors_or_fetches(chromium):
    assert chromium.errors == []
    assert chromium.requests and all(u.startswith(("file:", "data:")) for u in chromium.requests)
    assert chromium.evaluate("document.title").startswith("synthetic")


@needs_chromium
def test_every_table_figure_and_chart_is_rendered(chromium, study, built):
    counts = chromium.evaluate(COUNTS)
    for name, table in built.items():
        assert counts[name]["tables"] == [{"body": len(table.rows), "foot": len(table.ratios),
                                            "cols": 1 + 4 * len(table.columns)}]  # fmt: skip
    assert counts["figures"]["images"] == len(list((study / "figures").glob("*.svg")))
    cells = agg.aggregate(agg.load_results(study))
    probed = {(k.task, k.metric) for k in cells if k.module and k.metric.endswith("_acc")}
    series = {(k.task, k.metric, k.method, k.variant) for k in cells if (k.task, k.metric) in probed}
    assert [t["body"] for t in counts["modules"]["tables"]] == [
        sum(1 for s in series if s[:2] == group) for group in sorted(probed)
    ]
    assert counts["modules"]["charts"] == len(series)
    runs = {r["run_id"] for r in agg.load_results(study)}
    assert counts["runs"]["tables"][0]["body"] == len(runs)
    verdicts = check.compare(refmod.load_reference(study.parent / "reference.yaml"), agg.load_results(study))
    attention = [v for v in verdicts if v.verdict in (check.FAILED, check.REGRESSED, check.MISSING)]
    assert counts["check"]["tables"] == [{"body": len(attention), "foot": 0, "cols": 5}]
    assert len(attention) == 3  # GIM's accuracy and the two unfinished runs


@needs_chromium
def test_clicking_a_header_sorts_numerically_and_stably(chromium):
    table1 = "#table1 table"
    before = column(chromium, table1, 1)
    click(chromium, table1, 1)
    up = column(chromium, table1, 1)
    numbers = [float(v) for v in up if v not in ("", "not re-run")]
    assert numbers == sorted(numbers) and len(numbers) == sum(v not in ("", "not re-run") for v in before)
    assert up[len(numbers) :] == [v for v in before if v in ("", "not re-run")]  # cells without a number last
    click(chromium, table1, 1)
    down = [float(v) for v in column(chromium, table1, 1) if v not in ("", "not re-run")]
    assert down == sorted(numbers, reverse=True)
    runs = "#runs table"
    order = column(chromium, runs, 7)
    click(chromium, runs, 1)  # by task: within a task the runs keep their order
    tasks, ids = column(chromium, runs, 1), column(chromium, runs, 7)
    assert tasks == sorted(tasks) and ids == sorted(order, key=lambda i: tasks[ids.index(i)])
    assert chromium.evaluate("document.querySelector('#runs th[aria-sort]').textContent") == "task"


@needs_chromium
def test_verdict_colours_are_visible(chromium):
    colours = chromium.evaluate("['.v-regressed', '.v-ok', '.s-failed', '.s-diverged'].map(s => "
                                "getComputedStyle(document.querySelector('td' + s)).backgroundColor)")  # fmt: skip
    assert len(set(colours[:2])) == 2 and "rgba(0, 0, 0, 0)" not in colours


@needs_chromium
def test_phone_width_scrolls_tables_inside_their_box(study):
    with browser.Browser(timeout=60) as phone:
        phone.open((study / report.REPORT_PAGE).resolve().as_uri(), width=390)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        assert phone.evaluate(
            "[...document.querySelectorAll('.scroll')].some(d => d.scrollWidth > d.clientWidth)"
        )
        assert phone.errors == []


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@needs_chromium
def test_bench_report_writes_a_full_page_screenshot(tmp_path, capsys):
    write_results(tmp_path, [Run("fsdd", "gim", 0, {"speaker_acc": 0.9}), DIVERGED], configs=False)
    png = tmp_path / "shot" / "report.png"
    assert cli.main(["report", str(tmp_path), "--screenshot", str(png)]) == 0
    width, height = png_size(png)
    assert width == 1280 and height > 1500  # the whole page, not the 800 px viewport
    out = capsys.readouterr().out
    assert f"report: {tmp_path / report.REPORT_PAGE}" in out and f"screenshot: {png}" in out


@needs_chromium
def test_browser_catches_console_errors_and_failed_loads_and_never_hangs(tmp_path):
    (tmp_path / "bad.html").write_text('<!doctype html><img src="missing.png"><script>console.error("boom");'
                                       'setTimeout(() => { throw new Error("late") });</script>')  # fmt: skip
    with browser.Browser(timeout=60) as b:
        b.open((tmp_path / "bad.html").as_uri())
        b.evaluate("new Promise(r => setTimeout(r, 100))")  # the timer's exception is thrown meanwhile
        kinds = {e.split(":")[0]: e for e in b.errors}  # in the order the browser reported them
        assert len(b.errors) == 3 and sorted(kinds) == ["console.error", "exception", "log"]
        assert (
            "boom" in kinds["console.error"]
            and "late" in kinds["exception"]
            and "missing.png" in kinds["log"]
        )
        b.timeout = 0.5
        with pytest.raises(browser.BrowserError, match="did not answer within"):
            b.evaluate("new Promise(r => setTimeout(r, 5000))")
    assert b.proc.poll() is not None  # the browser was killed


@needs_chromium
def test_committed_small_study_report_loads_with_every_table_and_figure(tmp_path):
    """`bench report` on the committed results/small (its results.csv copied, so nothing in the repository is
    written): Chromium loads it without console errors and the DOM has every table with its rows, every figure
    and one row per run; a full-page screenshot at 1280 px is taken; regenerating gives the same bytes."""
    shutil.copy(REPO / "results" / "small" / "results.csv", tmp_path / "results.csv")
    assert cli.main(["report", str(tmp_path), "--screenshot", str(tmp_path / "report.png")]) == 0
    assert png_size(tmp_path / "report.png")[0] == 1280
    rows, paper = agg.load_results(tmp_path), load_paper()
    with browser.Browser(timeout=60) as b:
        b.open((tmp_path / report.REPORT_PAGE).resolve().as_uri(), width=1280)
        counts = b.evaluate(COUNTS)
        assert b.errors == []
    for name, build in tables.TABLES.items():
        table = build(rows, paper)
        assert table.rows and any(e.cell for e in table.entries.values())  # real numbers, not a placeholder
        assert counts[name]["tables"] == [{"body": len(table.rows), "foot": len(table.ratios),
                                            "cols": 1 + 4 * len(table.columns)}]  # fmt: skip
    assert counts["figures"]["images"] == 2  # Figures 3 and 4, both with data in this study
    assert counts["runs"]["tables"][0]["body"] == len({r["run_id"] for r in rows})
    first = (tmp_path / report.REPORT_PAGE).read_bytes()
    assert cli.main(["report", str(tmp_path)]) == 0
    assert (tmp_path / report.REPORT_PAGE).read_bytes() == first
