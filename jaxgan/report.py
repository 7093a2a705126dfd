"""The lines the training loop prints: per epoch, per evaluation, for one run or a group of runs."""

from __future__ import annotations

import numpy as np

from jaxgan.steps import METRIC_NAMES


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def format_epoch_line(row: dict, epochs: int) -> str:
    """The per-epoch log line of one run, in the seeds' words."""
    return (
        f"Epoch [{row['epoch']}/{epochs}] step {row['step']}  D loss: {row['d_loss']:.4f}  G loss: {row['g_loss']:.4f}  "
        f"D(x): {row['d_real']:.3f}  D(G(z)): {row['d_fake']:.3f}  {row['seconds']:.2f}s  {row['images_per_s']:,.0f} img/s"
    )


def format_quality_line(row: dict) -> str:
    """The log line of one run's sample-quality metrics at an epoch."""
    conditional = f"  conditional accuracy {row['cond_acc']:.3f}" if "cond_acc" in row else ""
    return (
        f"  quality: FD@{row['fd_n']} {row['fd']:.2f}  score {row['score']:.2f}  "
        f"coverage KL {row['coverage_kl']:.3f}  max-prob {row['max_prob']:.3f}{conditional}"
    )


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for one value)."""
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def show(values: list[float], spec: str) -> str:
    mean, std = mean_std(values)
    return format(mean, spec) + ("" if std is None else f" ± {std:{spec}}")


def format_group_line(epoch: int, epochs: int, step: int, rows: list[dict], seconds: float, images_per_s: float) -> str:
    """The per-epoch log line of a group: means ± std over its active runs."""
    col = {name: [r[name] for r in rows] for name in METRIC_NAMES}
    return (
        f"Epoch [{epoch}/{epochs}] step {step}  {plural(len(rows), 'run')}  D loss: {show(col['d_loss'], '.4f')}  "
        f"G loss: {show(col['g_loss'], '.4f')}  D(x): {show(col['d_real'], '.3f')}  "
        f"D(G(z)): {show(col['d_fake'], '.3f')}  {seconds:.2f}s  {images_per_s:,.0f} img/s per run"
    )


def format_group_quality_line(rows: list[dict]) -> str:
    col = {
        name: [r[name] for r in rows if name in r] for name in ("fd", "score", "coverage_kl", "max_prob", "cond_acc")
    }
    conditional = f"  conditional accuracy {show(col['cond_acc'], '.3f')}" if col["cond_acc"] else ""
    return (
        f"  quality ({plural(len(rows), 'run')}): FD@{rows[0]['fd_n']} {show(col['fd'], '.2f')}  "
        f"score {show(col['score'], '.2f')}  coverage KL {show(col['coverage_kl'], '.3f')}  "
        f"max-prob {show(col['max_prob'], '.3f')}{conditional}"
    )
