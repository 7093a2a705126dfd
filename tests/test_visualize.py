"""Pictures of a run: the progress GIF of the sample grids."""

import numpy as np
import pytest
from PIL import Image, ImageSequence

from jaxgan import visualize


def write_grids(directory, count: int) -> list:
    """`count` sample-grid PNGs as the loop writes them, each a different shade."""
    paths = []
    for i in range(count):
        images = np.full((16, 28, 28, 1), -1.0 + 2.0 * i / count, np.float32)
        paths.append(directory / f"epoch_{i + 1:04d}.png")
        visualize.save_grid(images, paths[-1], nrow=4)
    return paths


def test_progress_gif_has_every_grid_in_order(tmp_path):
    frames = write_grids(tmp_path, 5)
    out = visualize.save_progress_gif(frames, tmp_path / "progress.gif", frame_ms=100, last_frame_ms=1000)
    assert out == tmp_path / "progress.gif"
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5 and gif.info["loop"] == 0
        assert gif.size == Image.open(frames[0]).size == (3 * (4 * 30 + 2),) * 2
        shades = [np.asarray(frame.convert("L"))[10, 10] for frame in ImageSequence.Iterator(gif)]
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert shades == sorted(shades) and len(set(shades)) == 5  # the grids' order
    assert durations == [100, 100, 100, 100, 1000]
    assert [p.name for p in tmp_path.iterdir() if p.suffix not in (".png", ".gif")] == []  # no temporary left


def test_progress_gif_refuses_no_frames_and_mixed_sizes(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        visualize.save_progress_gif([], tmp_path / "progress.gif")
    frames = write_grids(tmp_path, 2)
    visualize.save_grid(np.zeros((4, 28, 28, 1), np.float32), tmp_path / "small.png", nrow=2)
    with pytest.raises(ValueError, match=r"small\.png is"):
        visualize.save_progress_gif([*frames, tmp_path / "small.png"], tmp_path / "progress.gif")
    assert not (tmp_path / "progress.gif").exists()
