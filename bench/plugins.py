"""Plugin loading: the harness's own methods and tasks first, then the user's.

User plugins come from Python entry points in the groups ``bench.methods`` and ``bench.tasks`` (an installed
package declares them in its pyproject) and from the modules named in ``BENCH_PLUGINS`` (comma-separated,
importable from the current ``PYTHONPATH``). Every process that runs a job calls ``load_plugins`` (the CLI,
debug, local and SLURM jobs; the environment carries ``BENCH_PLUGINS`` to them), and each run records the
external plugins it saw in the ``plugins`` column of its rows.
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points

from bench.config import ConfigError

log = logging.getLogger(__name__)
ENV = "BENCH_PLUGINS"
GROUPS = ("bench.methods", "bench.tasks")
_loaded: dict[str, str] = {}
"""Loaded external plugins: module name -> where it came from (entry point or BENCH_PLUGINS)."""


def load_plugins() -> None:
    """Import the built-in plugins, then every entry point of GROUPS, then the modules in BENCH_PLUGINS.

    Idempotent. Raises ConfigError naming the plugin that cannot be imported, and what to do.
    """
    import methods  # noqa: F401  (registers every built-in method)
    import tasks  # noqa: F401  (registers every built-in task)

    for group in GROUPS:
        for ep in entry_points(group=group):
            if ep.value not in _loaded:
                try:
                    ep.load()
                except Exception as err:
                    raise ConfigError(f"the {group} entry point {ep.name!r} ({ep.value}) cannot be loaded "
                                      f"({type(err).__name__}: {err}); fix or uninstall that package") from err  # fmt: skip
                _loaded[ep.value] = f"entry point {group}:{ep.name}"
    for name in [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except Exception as err:
            raise ConfigError(f"{ENV} names {name!r}, which cannot be imported ({type(err).__name__}: {err}); "
                              "put its folder on PYTHONPATH or fix BENCH_PLUGINS") from err  # fmt: skip
        _loaded[name] = ENV


def external() -> list[str]:
    """The external plugin modules loaded in this process, sorted (recorded with each run)."""
    return sorted(_loaded)


def files_outside(root: str) -> list[str]:
    """Source files of the loaded external plugins that lie outside ``root`` (a code snapshot does not copy
    them: jobs import them from where they are)."""
    import sys

    out = []
    for name in external():
        module = sys.modules.get(name.split(":")[0])
        path = getattr(module, "__file__", None)
        if path and not os.path.abspath(path).startswith(os.path.abspath(root) + os.sep):
            out.append(f"{name} ({path})")
    return out
