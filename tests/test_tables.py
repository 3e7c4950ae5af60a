"""`bench tables`: paper tables and figures from a synthetic results.csv in the real schema."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
from results_factory import Run, paper_like_runs, write_results

from bench import cli, record
from bench.report import aggregate as agg
from bench.report import plots
from bench.report.paper import load_paper
from bench.report.tables import write_tables
from bench.spec import RunSpec, resolve, variant_of
from tests.conftest import REPO


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    write_results(out, paper_like_runs(seeds=3))
    write_tables(out)
    return out


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def md_row(path: Path, label: str) -> list[str]:
    line = next(line for line in path.read_text().splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_every_table_and_figure_is_written(built):
    names = {p.name for p in (built / "tables").iterdir()} | {p.name for p in (built / "figures").iterdir()}
    expected = {f"table{i}.{s}" for i in range(1, 5) for s in ("csv", "md", "tex")}
    assert expected | {"fig3.png", "fig3.svg", "fig4.png", "fig4.svg"} <= names


def test_table1_cell_is_mean_std_n_over_seeds_beside_the_paper(built):
    gim = [
        r
        for r in paper_like_runs(seeds=3)
        if r.method == "gim" and r.task == "cifar10" and not r.method_config
    ]
    values = [100 * r.accs["class_acc"] for r in gim]
    mean, std = statistics.fmean(values), statistics.stdev(values)
    assert md_row(built / "tables" / "table1.md", "Greedy InfoMax (GIM)") == [
        "Greedy InfoMax (GIM)",
        f"{mean:.1f} ± {std:.1f}",
        "3",
        "81.9 ± 0.3",
        f"{mean - 81.9:+.1f}",
    ]
    row = next(r for r in read_csv(built / "tables" / "table1.csv") if r["row"] == "Greedy InfoMax (GIM)")
    assert float(row["mean"]) == pytest.approx(mean, rel=1e-5) and float(row["std"]) == pytest.approx(
        std, rel=1e-4
    )
    assert row["n"] == "3" and row["paper"] == "81.9" and row["seeds"] == "0;1;2"
    assert row["run_ids"].split(";") == [r.run_id for r in gim]
    assert (
        row["git_shas"] == "abc123" and row["devices"] == "cpu" and len(row["config_hashes"].split(";")) == 3
    )


def test_stand_in_tasks_are_named_and_the_paper_column_kept(built):
    t1, t3 = (built / "tables" / "table1.md").read_text(), (built / "tables" / "table3.md").read_text()
    assert "stand-in for the paper's stl10" in t1 and "accuracy (paper, stl10)" in t1
    assert "stand-in for the paper's librispeech" in t3 and "The phone column is digit_acc" in t3
    assert "| Deep InfoMax (Hjelm et al. 2019) | not re-run |" in t1


def test_table3_has_both_columns_with_paper_values(built):
    assert "gim_no_bptt" not in (built / "tables" / "table3.md").read_text()  # Table 4 shows the ablations
    cells = md_row(built / "tables" / "table3.md", "Greedy InfoMax (GIM)")
    assert cells[3] == "62.5" and cells[7] == "99.4" and cells[2] == cells[6] == "3"
    assert md_row(built / "tables" / "table3.md", "MFCC features")[3] == "39.7"


def test_table4_ablations(built):
    rows = read_csv(built / "tables" / "table4.csv")
    assert [r["method"] for r in rows if r["column"] == "speaker"] == ["gim", "gim_no_bptt", "gim_no_ar"]
    assert [r["paper"] for r in rows if r["column"] == "speaker"] == ["99.4", "99.2", "99.1"]


def test_table2_first_module_comes_from_the_run_config(built):
    rows = {r["row"]: r for r in read_csv(built / "tables" / "table2.csv")}
    first, full = rows["GIM - 1st module"], rows["GIM - all modules"]
    assert first["variant"] == "train_modules=0" and first["n"] == "3"
    assert float(first["mean"]) == pytest.approx(30e6 / 2**30, rel=1e-5)
    ratio = rows["GIM all / 1st module (ratio)"]
    assert float(ratio["mean"]) == pytest.approx(float(full["mean"]) / float(first["mean"]), rel=1e-4)
    assert ratio["paper"] == "2.8"


def test_tex_is_escaped(built):
    tex = (built / "tables" / "table4.tex").read_text()
    assert r"\begin{tabular}" in tex and r"GIM without g\_ar" in tex and r"$\pm$" in tex


def test_regeneration_is_byte_identical(built):
    before = {p: p.read_bytes() for d in ("tables", "figures") for p in (built / d).iterdir()}
    write_tables(built)
    changed = [p.name for p, data in before.items() if p.read_bytes() != data]
    assert changed == []


@pytest.mark.parametrize(("method_config", "variant"), [
    ({}, ""), ({"schedule": "simultaneous", "train_modules": []}, ""), ({"schedule": "iterative"}, "schedule=iterative"),
    ({"train_modules": [0]}, "train_modules=0"), ({"train_modules": [], "backward": "summed"}, "backward=summed"),
    ({"train_modules": [0, 1], "schedule": "iterative"}, "schedule=iterative,train_modules=0+1"),
])  # fmt: skip
def test_variant_of_names_the_declared_keys_that_differ_from_their_default(method_config, variant):
    assert variant_of(resolve(RunSpec(method="gim", overrides={"method": method_config}))) == variant


def test_rows_without_a_variant_count_as_the_default(tmp_path):
    write_results(tmp_path, [Run("cifar10", "gim", s, {"class_acc": 0.5}) for s in range(2)])
    rows = record.read_rows(tmp_path / "results.csv")
    (tmp_path / "results.csv").write_text(record.rows_to_csv({**r, "variant": ""} for r in rows))
    assert {r["variant"] for r in agg.load_results(tmp_path)} == {""}


def test_failed_runs_are_left_out_and_noted(tmp_path):
    runs = [
        Run("cifar10", "gim", 0, {"class_acc": 0.5}),
        Run("cifar10", "gim", 1, {}, status=record.STATUS_FAILED),
    ]
    write_results(tmp_path, runs)
    write_tables(tmp_path, figures=False)
    assert md_row(tmp_path / "tables" / "table1.md", "Greedy InfoMax (GIM)")[1:3] == ["50.0", "1"]
    assert "gim seed 1 (failed)" in (tmp_path / "tables" / "table1.md").read_text()


def test_no_data_gives_placeholders_not_a_crash(tmp_path):
    (tmp_path / "results.csv").write_text(",".join(record.COLUMNS) + "\n")
    lines = write_tables(tmp_path)
    assert sum("placeholder" in line for line in lines) == 6
    assert "No finished runs" in (tmp_path / "tables" / "table2.md").read_text()
    assert (tmp_path / "figures" / "fig3.svg").is_file() and (tmp_path / "figures" / "fig4.png").is_file()


def test_fig3_counts_epochs_from_each_module_phase(tmp_path):
    runs = [Run("cifar10", "gim", 0, {}, {"schedule": "iterative"}, epochs=2), Run("cifar10", "gim", 0, {})]
    write_results(tmp_path, runs)
    df = plots.loss_frame(agg.load_results(tmp_path), "gim", "schedule=iterative")
    iterative = df[df.schedule == "iterative"]
    assert sorted(iterative[iterative.module == 2].x.unique()) == [0, 1]
    assert set(df.schedule) == {"iterative", "simultaneous"} and set(df.split) == {"train", "val"}
    assert set(df.unit) == {"epoch"}


def test_fig3_draws_step_curves_from_each_module_phase(tmp_path):
    runs = [Run("cifar10", "gim", s, {}, {"schedule": "iterative"}, steps=24) for s in (0, 1)]
    write_results(tmp_path, runs + [Run("cifar10", "gim", s, {}, steps=24) for s in (0, 1)])
    rows = agg.load_results(tmp_path)
    df = plots.loss_frame(rows, "gim", "schedule=iterative")
    assert set(df.unit) == {"step"}
    for (schedule, module, split), points in df.groupby(["schedule", "module", "split"]):
        # every module's curve runs over its own phase's steps, validation from step 0, training from step 1
        assert sorted(points.x.unique()) == list(range(0 if split == "val" else 1, 25)), (schedule, module, split)
    assert len(df) == 4 * 3 * (24 + 25)
    assert plots.fig3(rows, tmp_path, load_paper()).startswith("figures/fig3")


def test_fig4_plots_error_per_module(tmp_path):
    write_results(tmp_path, [Run("fsdd", "gim", 0, {"speaker_acc": 0.9}, modules=3)])
    df = plots.error_frame(agg.load_results(tmp_path))
    assert sorted(df.module) == [1, 2, 3]
    assert df[df.module == 3].error.item() == pytest.approx(0.1)


def test_cli_tables_and_missing_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_plugins", lambda: None)  # tables need no plugins
    assert cli.main(["tables", str(tmp_path)]) == 2
    assert "bench collect" in capsys.readouterr().err
    write_results(tmp_path, [Run("stl10", "gim", 0, {"class_acc": 0.8})])
    assert cli.main(["tables", str(tmp_path), "--no-figures"]) == 0
    assert "tables/table1.{csv,md,tex}  task stl10" in capsys.readouterr().out
    assert "stand-in" not in (tmp_path / "tables" / "table1.md").read_text()


def test_committed_small_study_draws_figure_3_as_curves_of_at_least_20_points():
    rows = agg.load_results(REPO / "results" / "small")
    df = plots.loss_frame(rows, "gim", "schedule=iterative")
    df = df[df.task == "cifar10"]
    assert set(df.unit) == {"step"}
    curves = df.groupby(["schedule", "module", "split"]).x.nunique()
    assert len(curves) == 2 * 3 * 2  # both schedules, three modules, training and validation
    assert curves.min() >= 20, curves.to_dict()
