"""User plugins from outside the repository: BENCH_PLUGINS modules and installed entry points, in every
executor, recorded with the runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import plugins, record
from tests.conftest import REPO

PLUGIN = """\
from bench import METHODS

Base = METHODS.get("gim")  # a built-in method, obtained from the registry


@METHODS.register("{name}")
class Mine(Base):
    description = "GIM under another name, registered by a plugin outside the repository"
"""


def bench(*args, env, cwd):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def plugin_env(folder: Path, **extra) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), str(REPO)]), **extra)
    env.pop("BENCH_PLUGINS", None)
    return {**env, **extra}


@pytest.fixture
def myplug(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "myplug.py").write_text(PLUGIN.format(name="my_gim"))
    return folder


def test_a_bench_plugins_module_is_listed_run_locally_and_swept(tmp_path, myplug):
    env = plugin_env(myplug, BENCH_PLUGINS="myplug")
    cwd = tmp_path  # not the repository: the plugin is found through PYTHONPATH only
    listed = bench("ls", "methods", env=env, cwd=cwd)
    assert listed.returncode == 0 and "my_gim" in listed.stdout, listed.stderr
    out = tmp_path / "runs"
    ran = bench("run", "--method", "my_gim", "--preset", "smoke", "--executor", "local", "--out", str(out),
                env=env, cwd=cwd)  # fmt: skip
    assert ran.returncode == 0 and "status: ok" in ran.stdout, ran.stderr
    (rows,) = out.glob("*/rows.csv")
    assert {r["plugins"] for r in record.read_rows(rows)} == {"myplug"}
    exp = tmp_path / "experiment.yaml"
    exp.write_text(textwrap.dedent("""\
        experiment: plug
        preset: smoke
        methods: [my_gim]
        tasks: {synthetic_textures: {}}
        """))  # fmt: skip
    swept = bench("sweep", str(exp), "--executor", "local", "--out", str(tmp_path / "sweep"), "--poll", "0.5",
                  env=env, cwd=cwd)  # fmt: skip
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert "done" in swept.stdout.split("\n")[1]
    (note,) = (tmp_path / "sweep" / ".snapshot").glob("*/EXTERNAL_PLUGINS.txt")
    assert "myplug" in note.read_text()


def test_an_installed_entry_point_is_loaded(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "epplug.py").write_text(PLUGIN.format(name="ep_gim"))
    dist = site / "epplug-0.1.dist-info"  # what `pip install` leaves for a package declaring the entry point
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: epplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[bench.methods]\nep_gim = epplug\n")
    env = plugin_env(site)
    listed = bench("ls", "methods", env=env, cwd=tmp_path)
    assert listed.returncode == 0 and "ep_gim" in listed.stdout, listed.stderr
    ran = bench("run", "--method", "ep_gim", "--preset", "smoke", "--out", str(tmp_path / "o"), env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (rows,) = (tmp_path / "o").glob("*/rows.csv")
    assert record.read_rows(rows)[0]["plugins"] == "epplug"


def test_a_plugin_that_cannot_be_imported_is_one_clear_message(tmp_path):
    env = plugin_env(tmp_path, BENCH_PLUGINS="no_such_plugin")
    result = bench("ls", "methods", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "BENCH_PLUGINS names 'no_such_plugin'" in result.stderr and "Traceback" not in result.stderr


def test_the_plugin_surface_is_the_package_root():
    import bench

    for name in ("METHODS", "TASKS", "Method", "Task", "Batch", "Metric", "ModularEncoder", "ModuleOutput"):
        assert hasattr(bench, name), name
    plugins.load_plugins()  # idempotent: the built-ins are registered once
    plugins.load_plugins()
