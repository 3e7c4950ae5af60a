"""``bench describe``: a task's encoder module by module (layers, output shapes, exact parameter counts)."""

from __future__ import annotations

import torch

from bench.spec import RunSpec, resolve


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe_task(spec: RunSpec) -> str:
    resolved = resolve(spec)
    task = resolved.task_cls(resolved.task, None, spec.seed)
    torch.manual_seed(spec.seed)
    encoder = task.build_encoder().eval()
    x = task.example_input(1)
    with torch.no_grad():
        outs = encoder.forward_modules(x, detach=True)
    lines = [
        f"task {spec.task} (version {resolved.task_cls.version}, {resolved.task_cls.modality}): "
        f"{resolved.task_cls.description}",
        f"input (batch 1): {tuple(x.shape)}   module input after prepare(): {tuple(encoder.prepare(x).shape)}",
        f"{'module':<7} {'output (representation)':<26} {'output (passed on)':<24} {'params':>12}  layers",
    ]
    for m, out in enumerate(outs):
        lines.append(
            f"{m:<7} {str(tuple(out.rep.shape)):<26} {str(tuple(out.z.shape)):<24} "
            f"{count_params(encoder.blocks[m]):>12}  {encoder.describe_layers(m)}"
        )
    lines.append(f"{'total':<7} {'':<26} {'':<24} {count_params(encoder):>12}")
    return "\n".join(lines)
