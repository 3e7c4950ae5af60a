"""The ``bench`` command line: ls, describe, run (sweeps, tables and checks plug in as further commands)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from bench import config as cfg
from bench import plugins
from bench.data import DataError
from bench.record import RowsError
from bench.registry import METHODS, TASKS, UnknownNameError
from bench.spec import DEFAULT_METHOD, DEFAULT_TASK, PRESETS, RunSpec

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


def load_plugins() -> None:
    """The built-in plugins, then the user's (``bench.plugins``); tests of plugin-free commands stub this."""
    plugins.load_plugins()


def cmd_ls(args: argparse.Namespace) -> int:
    registry = METHODS if args.kind == "methods" else TASKS
    width = max(len(n) for n in registry.names())
    for name, cls in registry.items():
        print(f"{name:<{width}}  {cls.description}")
    return 0


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=PRESETS, help="a named bundle of overrides")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set method.lr=1e-3 (repeatable)")  # fmt: skip
    p.add_argument("--config", type=Path, help="a YAML file of overrides (sections task/method/train/eval)")


def overrides_from(args: argparse.Namespace) -> dict:
    base = cfg.load_yaml(args.config) if getattr(args, "config", None) else {}
    return cfg.merge(base, cfg.parse_overrides(args.overrides))


def cmd_describe(args: argparse.Namespace) -> int:
    from bench.describe import describe_task

    spec = RunSpec(method=args.method, task=args.task, preset=args.preset, overrides=overrides_from(args))
    print(describe_task(spec))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.summary import format_summary
    from bench.sweep.runner import BAD_INPUT, BUSY, run_one

    spec = RunSpec(
        method=args.method, task=args.task, seed=args.seed, preset=args.preset,
        overrides=overrides_from(args), experiment=args.experiment,
        data_root=str(args.data_root) if args.data_root else None,
    )  # fmt: skip
    outcome = run_one(spec, args.out, executor=args.executor, quiet=args.quiet)
    if outcome.status in (BAD_INPUT, BUSY):
        print(f"bench: error: {outcome.error}", file=sys.stderr)
        return EXIT_USAGE if outcome.status == BAD_INPUT else EXIT_FAILED
    print(format_summary(outcome))
    if outcome.status == "ok":
        return 0
    return EXIT_INTERRUPTED if outcome.status == "interrupted" else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Benchmark local-learning methods (GIM and baselines).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ls", help="list registered methods or tasks")
    p.add_argument("kind", choices=["methods", "tasks"])
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("describe", help="print a task's encoder module by module")
    p.add_argument("--task", default=DEFAULT_TASK)
    p.add_argument("--method", default=DEFAULT_METHOD, help="methods may change the encoder (ablations)")
    add_config_arguments(p)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("run", help="train and evaluate one method on one task")
    p.add_argument("--method", default=DEFAULT_METHOD)
    p.add_argument("--task", default=DEFAULT_TASK)
    p.add_argument("--seed", type=int, default=0)
    add_config_arguments(p)
    p.add_argument("--data-root", type=Path, help="where the task's data lives (default: ./data or $BENCH_DATA_ROOT)")
    p.add_argument("--out", type=Path, default=Path("results/runs"), help="runs go to OUT/<run_id>/")
    p.add_argument("--executor", choices=["debug", "local", "slurm"], default="debug",
                   help="debug: in this process; local: a submitit subprocess; slurm: a SLURM job")  # fmt: skip
    p.add_argument("--experiment", default="adhoc", help="label recorded in the rows")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines on the terminal")
    p.set_defaults(func=cmd_run)

    for register in extra_commands():
        register(sub)
    return parser


def extra_commands() -> list[Callable]:
    """Further command groups (sweeps, tables, checks) register their own sub-parsers."""
    registers = []
    for module in ("bench.sweep.commands", "bench.report.tables", "bench.report.check", "bench.report.html",
                   "bench.export"):
        try:
            registers.append(__import__(module, fromlist=["register_cli"]).register_cli)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
    return registers


def console_filter(record: logging.LogRecord) -> bool:
    """The terminal shows warnings, and the run-level messages of ``bench.run``; run.log has everything."""
    if str(record.msg).startswith("Logging is written both"):  # submitit's debug-executor notice
        return False
    return record.levelno >= logging.WARNING or record.name == "bench.run"


def setup_logging(quiet: bool) -> None:
    """The terminal handler (replacing one set up by an earlier call in this process)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "bench_console", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.bench_console = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("bench: %(message)s"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    handler.addFilter(console_filter)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    try:
        load_plugins()
    except cfg.ConfigError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "quiet", False))
    try:
        return args.func(args)
    except (cfg.ConfigError, UnknownNameError, DataError, RowsError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
