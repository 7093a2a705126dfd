"""Pictures of a run: sample grids, their animation, and loss curves (matplotlib without pyplot:
no display, no global state)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.image
import numpy as np
from matplotlib.figure import Figure


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] -> uint8 in [0, 255] (the inverse of the data scaling, rounded)."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """(N, H, W, 1) images in [-1, 1] -> one uint8 (rows, cols) grid, `nrow` images per row."""
    n, h, w = images.shape[:3]
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = np.zeros((ncol * (h + padding) + padding, nrow * (w + padding) + padding), np.uint8)
    pixels = to_uint8(images)[..., 0]
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def save_grid(images: np.ndarray, path: str | Path, nrow: int | None = None, scale: int = 3) -> None:
    """Write images (N, 28, 28, 1) in [-1, 1] as a grayscale PNG grid, each pixel scale x scale."""
    grid = image_grid(images, nrow)
    grid = np.kron(grid, np.ones((scale, scale), np.uint8))
    matplotlib.image.imsave(path, grid, cmap="gray", vmin=0, vmax=255)


def save_progress_gif(
    frames: Sequence[str | Path], out_path: str | Path, *, frame_ms: int = 250, last_frame_ms: int = 2000
) -> Path:
    """An animated GIF of image files `frames` in order (a run's sample grids: G's progress), looping forever.

    Frames are shown as grayscale, `frame_ms` each and the last one `last_frame_ms`. Written to a
    temporary file and renamed, so `out_path` is never a partial GIF. ValueError for no frames or
    frames of different sizes.
    """
    from PIL import Image  # Pillow comes with matplotlib

    if not frames:
        raise ValueError("no frames for the GIF")
    images = []
    for frame in frames:
        with Image.open(frame) as image:
            images.append(image.convert("L"))
        if images[-1].size != images[0].size:
            raise ValueError(f"{frame} is {images[-1].size}, the first frame {images[0].size}")
    out_path = Path(out_path)
    partial = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    durations = [frame_ms] * (len(images) - 1) + [last_frame_ms]
    try:
        images[0].save(partial, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
        partial.replace(out_path)  # atomic: readers see the old file or the whole new one
    finally:
        partial.unlink(missing_ok=True)
    return out_path


def plot_history(history: Sequence[dict], path: str | Path) -> None:
    """D/G losses and D(x)/D(G(z)) against epoch, from metrics.jsonl rows."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 3.8))  # no pyplot: no global figure state, no backend to choose
    ax_loss, ax_prob = fig.subplots(1, 2)
    ax_loss.plot(epochs, [row["d_loss"] for row in history], label="D loss")
    ax_loss.plot(epochs, [row["g_loss"] for row in history], label="G loss")
    ax_loss.set(xlabel="epoch", ylabel="BCE (epoch mean)", title="losses")
    ax_prob.plot(epochs, [row["d_real"] for row in history], label="D(x)")
    ax_prob.plot(epochs, [row["d_fake"] for row in history], label="D(G(z))")
    ax_prob.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax_prob.set(xlabel="epoch", ylabel="mean probability", ylim=(0, 1), title="discriminator outputs")
    for ax in (ax_loss, ax_prob):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_quality(history: Sequence[dict], path: str | Path) -> None:
    """The Frechet distance (and classifier score) against epoch, from metrics.jsonl rows with "fd"."""
    rows = [row for row in history if "fd" in row]
    epochs = [row["epoch"] for row in rows]
    fig = Figure(figsize=(10, 3.8))
    ax_fd, ax_score = fig.subplots(1, 2)
    ax_fd.plot(epochs, [row["fd"] for row in rows], marker="o")
    ax_fd.set(xlabel="epoch", ylabel=f"FD@{rows[-1]['fd_n']} (lower is better)", title="Frechet distance")
    ax_score.plot(epochs, [row["score"] for row in rows], marker="o")
    ax_score.set(xlabel="epoch", ylabel="classifier score (max 10)", title="classifier score")
    for ax in (ax_fd, ax_score):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_runs(histories: dict[str, Sequence[dict]], path: str | Path) -> None:
    """D and G losses of several runs against epoch, one colour per run (a group's losses.png)."""
    fig = Figure(figsize=(10, 3.8))
    ax_d, ax_g = fig.subplots(1, 2, sharey=True)
    for i, (name, history) in enumerate(histories.items()):
        epochs = [row["epoch"] for row in history]
        ax_d.plot(epochs, [row["d_loss"] for row in history], color=f"C{i % 10}", label=name)
        ax_g.plot(epochs, [row["g_loss"] for row in history], color=f"C{i % 10}", label=name)
    ax_d.set(xlabel="epoch", ylabel="BCE (epoch mean)", title="D loss")
    ax_g.set(xlabel="epoch", title="G loss")
    for ax in (ax_d, ax_g):
        ax.grid(alpha=0.3)
    ax_g.legend(fontsize=7, ncol=max(1, len(histories) // 8))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
