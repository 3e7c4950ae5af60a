"""``bench export RUN --out FILE`` and ``bench.load_encoder(FILE)``: a trained encoder outside its run folder.

An export is a safetensors file of the encoder's weights (its ``state_dict``) whose header metadata holds,
under the key ``bench``, one JSON document with what rebuilds it: format and version, run id, method, task,
seed, the run's resolved config (``config.yaml``), the per-module output shapes of an example input, how to
prepare inputs, the run's provenance (git commit, torch version, ...), and whether it is a partial export of
an unfinished run. ``FILE`` with the suffix ``.json`` holds the same document, pretty-printed, for people;
loading reads only the embedded copy.

``load_encoder`` builds the architecture as ``bench.execute.prepare`` does (the task from the config,
``task.build_encoder()``) without reading the task's data, loads the weights strictly and returns an
``ExportedEncoder``, whose ``features(x)`` gives one representation per module exactly as the run's probes
got them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from bench import plugins, record
from bench.config import ConfigError
from bench.interfaces import EvalConfig, Method, ModularEncoder, Task, TrainConfig
from bench.registry import UnknownNameError
from bench.spec import Resolved, RunSpec, resolve

log = logging.getLogger(__name__)
FORMAT, FORMAT_VERSION, META_KEY = "bench-encoder", 1, "bench"
REQUIRED = ("format_version", "run_id", "method", "task", "seed", "config")
HARNESS = {"train": TrainConfig, "eval": EvalConfig}
"""Harness sections of a config: they do not shape the encoder, so keys this version lacks are ignored."""
PROVENANCE = ("experiment", "variant", "preset", "method_version", "task_version", "device", "precision",
              "torch_version", "started_at", "host", "plugins")  # fmt: skip
VISION_PREP = ("uint8 images (B, H, W, 3) RGB (or (B, H, W, 1) for a grayscale task), at least crop x crop "
               "(at the task's own image size) -> / 255 -> grey by ITU-R 601 luma when grayscale -> centre crop -> "
               "(x - mean) / std -> (B, C, crop, crop) float32, as the run's probes got them; in code: "
               "encoder.prepare(images)")  # fmt: skip
AUDIO_PREP = ("16 kHz mono int16 waveforms (B, N) -> / 32768 -> (x + 6.781e-4) / 0.06300 -> (B, 1, N) float32 "
              "(the run probed crops of clip_samples samples; the last module gives N // 160 frames); in code: "
              "encoder.prepare(waves)")  # fmt: skip


class ExportedEncoder(nn.Module):
    """A run's encoder rebuilt from an export (``load_encoder``).

    ``encoder`` is the task's ``ModularEncoder`` (``blocks``, ``iter_modules``), ``task`` the task built from
    the run's config without its data (``task.transform`` prepares images as the evaluation did), ``meta`` the
    embedded JSON (``meta["input"]`` says how to prepare inputs). Calling it gives the last module's
    representation end to end, with gradients (for fine-tuning); ``features`` is what the probes saw.
    """

    def __init__(
        self, encoder: ModularEncoder, method: Method, task: Task, resolved: Resolved, meta: dict
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.task = task
        self.meta = meta
        # What computes the features: the base Method, or the run's method when it defines its own.
        self._method = method
        self._resolved = resolved

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One representation per module of the prepared batch ``x``, exactly as the run's probes got them
        (``Method.features``, under the training autocast when the run set ``eval.amp=train``): vision
        (B, C, 7, 7) patch grids, audio (B, C, L) sequences; the probes averaged each over its grid or time."""
        from bench.execute import features_in

        device = next(self.encoder.parameters()).device
        return features_in(self._method, self._resolved.eval, self._resolved.train, device)(x.to(device))

    def prepare(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw inputs made into the encoder's input on its device, as the run's evaluation made its test batches
        (``Task.prepare``): vision uint8 images (B, H, W, 3) at the scale of the task's images, audio 16 kHz
        mono int16 waveforms (B, N). ``meta["input"]`` says the same in words."""
        return self.task.prepare(raw).to(next(self.encoder.parameters()).device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A random batch of the input shape (the task's ``example_input``)."""
        return self.task.example_input(batch_size)


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> ExportedEncoder:
    """The encoder exported to ``path`` by ``bench export``, weights loaded strictly, in eval mode on ``device``.

    Needs neither the run folder nor the task's data. Raises ConfigError (a ValueError) naming the file when it
    is not a bench export or no longer fits this version of the code.
    """
    path = Path(path)
    tensors, meta = read_export(path)
    return rebuild(meta, tensors, torch.device(device), str(path))


def read_export(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights and the embedded metadata of an export, checked."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (an encoder written by `bench export RUN_DIR --out FILE`)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{path}: not a bench encoder export (not a safetensors file: {err}); "
                          "export a run with `bench export RUN_DIR --out FILE`") from None  # fmt: skip
    return tensors, parse_meta(header.get(META_KEY), path)


def parse_meta(text: str | None, path: Path) -> dict:
    hint = "export a run with `bench export RUN_DIR --out FILE`"
    if text is None:
        raise ConfigError(f"{path}: a safetensors file without bench metadata (no {META_KEY!r} key in its header), "
                          f"not a bench encoder export; {hint}")  # fmt: skip
    try:
        meta = json.loads(text)
    except ValueError:
        raise ConfigError(f"{path}: its {META_KEY!r} metadata is not JSON (damaged); {hint} again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or any(k not in meta for k in REQUIRED):
        raise ConfigError(f"{path}: its {META_KEY!r} metadata is not a {FORMAT} document; {hint}")
    if not isinstance(meta["format_version"], int) or meta["format_version"] > FORMAT_VERSION:
        raise ConfigError(f"{path}: export format version {meta['format_version']!r}; this bench reads versions "
                          f"up to {FORMAT_VERSION}: upgrade bench")  # fmt: skip
    return meta


def rebuild(
    meta: dict, tensors: dict[str, torch.Tensor], device: torch.device, source: str
) -> ExportedEncoder:
    """The encoder of ``meta`` with ``tensors`` loaded strictly, on ``device`` and in eval mode, built as the
    run built it (channels-last too when it trained so), and what computes its features."""
    resolved = resolve_config(meta["config"], source)
    task, encoder = build(resolved, source)
    try:
        encoder.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"{source}: the weights do not fit the encoder that task {meta['task']} builds now "
                          f"({str(err).splitlines()[0]} ...); load it with the bench commit it was exported from "
                          f"({meta.get('git_sha') or 'unknown'})") from None  # fmt: skip
    encoder = encoder.to(device)
    if resolved.train.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    encoder.eval()
    try:
        method = feature_method(resolved, encoder, task, device)
    except ValueError as err:
        raise ConfigError(
            f"{source}: method {meta['method']} cannot be rebuilt to compute features ({err})"
        ) from None
    return ExportedEncoder(encoder, method, task, resolved, meta).eval()


def resolve_config(config: dict, source: str) -> Resolved:
    """A run's config (as in ``config.yaml``) resolved again by this code: method and task settings strictly,
    as ``bench.spec.resolve`` does (they shape the encoder); harness settings this version lacks are ignored."""
    plugins.load_plugins()
    try:
        overrides = {
            s: {k: v for k, v in config[s].items() if k not in ("name", "version")}
            for s in ("method", "task")
        }
        for section, cls in HARNESS.items():
            known = {f.name for f in dataclasses.fields(cls)}
            overrides[section] = {k: v for k, v in config.get(section, {}).items() if k in known}
        spec = RunSpec(method=config["method"]["name"], task=config["task"]["name"], seed=int(config["seed"]),
                       overrides=overrides)  # fmt: skip
        resolved = resolve(spec)
    except UnknownNameError as err:
        raise ConfigError(
            f"{source}: {err.args[0]}; a plugin's method or task must be loaded (BENCH_PLUGINS)"
        ) from None
    except (ConfigError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ConfigError(f"{source}: its config does not resolve with this version of bench ({err}); use the "
                          "bench commit the run was made with") from None  # fmt: skip
    for section, cls in (("method", resolved.method_cls), ("task", resolved.task_cls)):
        if str(config[section].get("version")) != str(cls.version):
            log.warning("%s: %s %s was version %s, the code now has version %s: its outputs may differ", source,
                        section, config[section]["name"], config[section].get("version"), cls.version)  # fmt: skip
    return resolved


def build(resolved: Resolved, source: str, seeded: bool = False) -> tuple[Task, ModularEncoder]:
    """The run's task (no data read) and encoder, as ``bench.execute.prepare`` builds them; ``seeded``: with the
    initial weights of the run's seed. The global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        try:
            task = resolved.task_cls(resolved.task, None, resolved.spec.seed)
            if seeded:
                torch.manual_seed(resolved.spec.seed)
            return task, task.build_encoder()
        except ValueError as err:
            raise ConfigError(
                f"{source}: task {resolved.spec.task} cannot be built from its config ({err})"
            ) from None


def feature_method(resolved: Resolved, encoder: ModularEncoder, task: Task, device: torch.device) -> Method:
    """What computes the probes' features: the run's method when it defines its own ``features`` (mfcc), else
    the base ``Method`` (every module's representation, gradient-isolated). Other methods are not rebuilt:
    their constructors may need the task's data (a supervised head's class count)."""
    if not defines_features(resolved.method_cls):
        return Method(resolved.method, encoder, task, device)
    return resolved.method_cls(resolved.method, encoder, task, device)


def defines_features(method_cls: type[Method]) -> bool:
    return method_cls.features is not Method.features


def export_run(run_dir: Path, out: Path, partial: bool = False, force: bool = False) -> dict:
    """Write the encoder of ``run_dir`` to ``out`` and its metadata to ``out`` with suffix .json; returns the
    metadata. Refuses (ConfigError) anything but a finished run with status ok unless ``partial``."""
    check_target(out, force)
    status, rows = run_state(run_dir, partial)
    config = read_config(run_dir)
    resolved = resolve_config(config, str(run_dir / record.CONFIG_FILE))
    weights, source = encoder_weights(run_dir, resolved, partial)
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    meta = metadata(run_dir, config, status, rows, source)
    # Loaded once before anything is written: an export that would not load is never written.
    exported = rebuild(meta, tensors, torch.device("cpu"), str(run_dir))
    meta.update(shapes(exported))
    write_export(out, tensors, meta)
    return meta


def check_target(out: Path, force: bool) -> None:
    if out.suffix == ".json":
        raise ConfigError(f"--out {out}: FILE.json is written beside FILE; name the weights file e.g. "
                          f"{out.with_suffix('.safetensors')}")  # fmt: skip
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name, e.g. {out / 'encoder.safetensors'}")
    existing = [p for p in (out, sidecar(out)) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} exists; pass --force to overwrite it, or choose another --out")


def sidecar(out: Path) -> Path:
    return out.with_suffix(".json")


def run_state(run_dir: Path, partial: bool) -> tuple[str, list[dict]]:
    """The run's status and rows; an unfinished, failed or damaged run only with ``partial`` (and a warning)."""
    if not run_dir.is_dir():
        raise ConfigError(
            f"{run_dir}: no such run folder; give a folder of `bench run` (results/runs/<run_id>)"
        )
    if not (run_dir / record.CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir}: not a bench run folder (no {record.CONFIG_FILE}); give a folder of "
                          "`bench run` (results/runs/<run_id>)")  # fmt: skip
    state = record.inspect(run_dir)
    if state.status == record.STATUS_OK:
        return state.status, state.rows
    if state.status is None:
        why = "has not ended (no rows: it is still running, or it was killed before recording them)"
    elif state.status == record.STATUS_DAMAGED:
        why = f"has damaged rows ({state.problem})"
    else:
        error = (state.rows[0].get("error") or "").splitlines()
        why = f"ended with status {state.status}" + (f" ({error[0]})" if error else "")
    if not partial:
        raise ConfigError(f"{run_dir}: the run {why}, so it has no finished encoder; finish it (run the same "
                          "`bench run` again), or pass --partial to export its latest checkpoint anyway")  # fmt: skip
    log.warning("%s: the run %s; exporting its latest checkpoint, marked partial", run_dir, why)
    return state.status or "unfinished", state.rows


def read_config(run_dir: Path) -> dict:
    import yaml

    path = run_dir / record.CONFIG_FILE
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot be read ({err}); {record.RERUN_HINT}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a run config; {record.RERUN_HINT}")
    return config


def encoder_weights(run_dir: Path, resolved: Resolved, partial: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """The encoder's state dict and where it came from: the final checkpoint (the latest readable one with
    ``partial``), or for a method that does not train the initial weights of the run's seed."""
    if not resolved.method_cls.trains:
        _, encoder = build(resolved, str(run_dir), seeded=True)
        return encoder.state_dict(), {"from": "initial weights of the run's seed (the method does not train)"}
    from bench.trainer import CHECKPOINT, PREVIOUS

    problems = []
    for name in (CHECKPOINT, PREVIOUS) if partial else (CHECKPOINT,):
        path = run_dir / name
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
            weights, position = payload["encoder"], payload["position"]
        except Exception as err:  # missing, cut or corrupt: torch raises several kinds of error
            problems.append(f"{path} cannot be read ({type(err).__name__}: {err})")
            continue
        if not partial and not position.get("done"):
            problems.append(f"{path} is not the final checkpoint (training had not ended)")
            continue
        if problems:
            log.warning("%s; exporting %s", "; ".join(problems), path)
        return weights, {
            "from": name,
            "global_step": position.get("global_step"),
            "done": bool(position.get("done")),
        }
    raise ConfigError(f"{run_dir}: no checkpoint to export: {'; '.join(problems)}; {record.RERUN_HINT}")


def metadata(run_dir: Path, config: dict, status: str, rows: list[dict], source: dict) -> dict:
    first = rows[0] if rows else {}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "run_id": first.get("run_id") or run_dir.name,
        "method": config["method"]["name"], "task": config["task"]["name"], "seed": config["seed"],
        "status": status, "partial": status != record.STATUS_OK, "weights": source,
        "git_sha": first.get("git_sha") or None, "git_dirty": {"True": True, "False": False}.get(first.get("git_dirty")),
        "torch_version": torch.__version__, "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {k: first.get(k, "") for k in PROVENANCE}, "config": config,
    }  # fmt: skip


def shapes(exported: ExportedEncoder) -> dict:
    """Per-module feature shapes of an example input of batch 1, and how to prepare inputs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = exported.example_input(1)
    reps = exported.features(x)
    features = "method" if defines_features(exported._resolved.method_cls) else "encoder"
    return {
        "module_shapes": [list(r.shape) for r in reps],
        "features": features,
        "input": input_spec(exported.task, x),
    }


def input_spec(task: Task, example: torch.Tensor) -> dict:
    """How one's own data becomes the encoder's input, as the run's evaluation prepared its data."""
    spec = {
        "modality": task.modality,
        "example_shape": list(example.shape),
        "dtype": str(example.dtype).split(".")[-1],
    }
    keys = {"vision": ("grayscale", "crop", "mean", "std"), "audio": ("clip_samples",)}.get(task.modality, ())
    spec.update({k: getattr(task.config, k) for k in keys if hasattr(task.config, k)})
    if task.modality == "vision":
        spec["prepare"] = VISION_PREP
    elif task.modality == "audio":
        spec.update(sample_rate=16000, prepare=AUDIO_PREP)
    return json.loads(json.dumps(spec))  # tuples as lists, as in the JSON


def write_export(out: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save

    record.atomic_write_bytes(out, save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True)}))
    record.atomic_write_text(sidecar(out), json.dumps(meta, indent=2, sort_keys=True) + "\n")


def cmd_export(args: argparse.Namespace) -> int:
    meta = export_run(args.run_dir, args.out, partial=args.partial, force=args.force)
    dims = ", ".join("x".join(str(d) for d in s[1:]) for s in meta["module_shapes"])
    mark = f" PARTIAL (run status {meta['status']}, {meta['weights']['from']})" if meta["partial"] else ""
    print(f"wrote {args.out} and {sidecar(args.out)}: {meta['method']} on {meta['task']}, run {meta['run_id']}, "
          f"seed {meta['seed']}{mark}; module outputs {dims}")  # fmt: skip
    print(f"load it with: bench.load_encoder({str(args.out)!r})")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a finished run's encoder as a safetensors file (bench.load_encoder)"
    )
    p.add_argument("run_dir", type=Path, help="a run folder, e.g. results/runs/<run_id>")
    p.add_argument("--out", type=Path, required=True, help="the weights file to write (FILE.safetensors); "
                   "its metadata goes to FILE.json beside it")  # fmt: skip
    p.add_argument("--partial", action="store_true",
                   help="export the latest checkpoint of an unfinished, failed or damaged run (marked partial)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="overwrite FILE and FILE.json when they exist")
    p.set_defaults(func=cmd_export)
