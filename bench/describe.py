"""``bench describe``: a task's encoder module by module (layers, output shapes, exact parameter counts,
forward FLOPs per sample) and what module-parallel stages could reach (``train.stages``)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.pipeline import balanced, predicted_speedup
from bench.spec import RunSpec, resolve


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def module_flops(encoder: torch.nn.Module, x: torch.Tensor) -> list[tuple[float, bool]]:
    """Each module's forward FLOPs for the samples of ``x`` as counted by torch's FLOP counter, and whether
    the count is an estimate: a module whose operators the counter does not know (the GRU) is given
    2 x parameters x output positions (a multiply and an add per weight per position)."""
    out: list[tuple[float, bool]] = []
    z = encoder.prepare(x)
    for m in range(len(encoder.blocks)):
        counter = FlopCounterMode(display=False)
        with counter:
            o = next(iter(encoder.iter_from(z, m, detach=True, upto=m)))
        flops, estimated = float(counter.get_total_flops()), False
        if flops == 0 and count_params(encoder.blocks[m]):
            flops, estimated = 2.0 * count_params(encoder.blocks[m]) * o.z.shape[-1] * x.shape[0], True
        out.append((flops / x.shape[0], estimated))
        z = o.z
    return out


def describe_task(spec: RunSpec) -> str:
    resolved = resolve(spec)
    task = resolved.task_cls(resolved.task, None, spec.seed)
    torch.manual_seed(spec.seed)
    encoder = task.build_encoder().eval()
    x = task.example_input(1)
    with torch.no_grad():
        outs = encoder.forward_modules(x, detach=True)
        flops = module_flops(encoder, x)
    lines = [
        f"task {spec.task} (version {resolved.task_cls.version}, {resolved.task_cls.modality}): "
        f"{resolved.task_cls.description}",
        f"input (batch 1): {tuple(x.shape)}   module input after prepare(): {tuple(encoder.prepare(x).shape)}",
        f"{'module':<7} {'output (representation)':<26} {'output (passed on)':<24} {'params':>12} {'MFLOPs/sample':>14}  layers",
    ]
    for m, out in enumerate(outs):
        value, estimated = flops[m]
        shown = f"{'~' if estimated else ''}{value / 1e6:.1f}"
        lines.append(
            f"{m:<7} {str(tuple(out.rep.shape)):<26} {str(tuple(out.z.shape)):<24} "
            f"{count_params(encoder.blocks[m]):>12} {shown:>14}  {encoder.describe_layers(m)}"
        )
    lines.append(f"{'total':<7} {'':<26} {'':<24} {count_params(encoder):>12} {sum(f for f, _ in flops) / 1e6:>14.1f}")
    if any(e for _, e in flops):
        lines.append("~: estimated (2 x parameters x output positions; torch's FLOP counter does not count it)")
    lines += stage_lines([f for f, _ in flops], resolved.train)
    return "\n".join(lines)


def stage_lines(costs: list[float], train) -> list[str]:
    """The speed-up module-parallel stages could reach over one process, modules placed by forward FLOPs
    (training is about three forward passes' work per module, so the ratio carries over; the heads' losses
    are not counted). The run's own setting first when it asks for stages."""
    n = len(costs)
    lines = ["module-parallel (train.stages): speed-up over one stage = total FLOPs / the slowest stage's"]
    wanted = [train.stages] if train.stages > 1 else []
    for stages in dict.fromkeys(wanted + list(range(2, n + 1))):
        if stages > n:
            continue
        own = train.stage_modules if stages == train.stages and train.stage_modules else None
        groups = [list(g) for g in own] if own else balanced(costs, stages)
        how = "train.stage_modules" if own else "balanced by FLOPs"
        lines.append(f"  {stages} stages: {predicted_speedup(costs, groups):.2f}x   modules {groups} ({how})")
    return lines
