"""The summary table printed at the end of ``bench run``."""

from __future__ import annotations

from bench.execute import RunOutcome


def format_value(metric: str, value: str) -> str:
    if value in ("", None):
        return ""
    v = float(value)
    if metric.endswith("_acc"):
        return f"{100 * v:.2f} %"
    if metric.endswith("_bytes"):
        return f"{v / 2**20:.1f} MiB"
    if metric == "samples_per_s":
        return f"{v:.2f} samples/s"
    if metric.endswith("_s") or metric == "s_per_step":
        return f"{v:.3f} s"
    return f"{v:.4f}"


def format_summary(outcome: RunOutcome) -> str:
    rows = outcome.rows or []
    head = rows[0] if rows else {}
    title = f"run {outcome.run_id}  {head.get('method', '')} on {head.get('task', '')}  seed {head.get('seed', '')}"
    lines = [title, f"status: {outcome.status}" + (" (finished earlier; reported, not recomputed)" if outcome.reused else "")]
    restarts = int(head.get("restarts") or 0)
    if restarts:
        lines.append(f"resumed from a checkpoint {restarts} time(s); see run.log")
    if outcome.error:
        lines.append(f"error: {outcome.error}")
    shown = [r for r in rows if r["metric"] not in ("status", "train_loss", "val_loss")]
    if shown:
        width = max(len(r["metric"]) for r in shown) + 2
        lines.append(f"{'metric':<{width}}{'module':<8}value")
        for r in shown:
            module = r["module"] if r["module"] not in ("", None) else "-"
            lines.append(f"{r['metric']:<{width}}{module:<8}{format_value(r['metric'], r['value'])}")
    losses = [r for r in rows if r["metric"] == "train_loss" and not r.get("step")]
    if losses:
        last_epoch = max(int(r["epoch"]) for r in losses)
        final = ", ".join(f"module {r['module']}: {float(r['value']):.3f}" for r in losses if int(r["epoch"]) == last_epoch)
        lines.append(f"final train loss (epoch {last_epoch}): {final}")
    lines.append(f"run directory: {outcome.run_dir}")
    return "\n".join(lines)
