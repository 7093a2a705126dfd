"""Decode many small grayscale PNG images at once with NumPy.

TFDS stores every image of MNIST-like datasets as a PNG of a few hundred bytes. Decoding
them one at a time through Pillow costs more than training on them, so this module
inflates each image (zlib, in C) and then undoes the PNG row filters of all images
together, one scanline at a time. PNGs other than 8-bit grayscale, non-interlaced ones
of the expected size (colour, palette, 16-bit, Adam7) are decoded by Pillow instead.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
NONE, SUB, UP, AVERAGE, PAETH = range(5)  # the PNG filter types (PNG spec, section 9.2)


def decode_grayscale(pngs: Sequence[bytes], height: int, width: int) -> np.ndarray:
    """N PNG images of height x width grayscale pixels -> uint8 (N, height, width).

    ValueError when an image is not a PNG of that size.
    """
    pixels = np.empty((len(pngs), height, width), np.uint8)
    scanlines = [inflate(png, height, width) for png in pngs]
    fast = np.array([s is not None for s in scanlines], bool)
    if fast.any():
        filtered = np.frombuffer(b"".join(s for s in scanlines if s is not None), np.uint8)
        filtered = filtered.reshape(-1, height, width + 1)  # (M, H, 1 + W): filter type, then the row
        valid = (filtered[:, :, 0] <= PAETH).all(axis=1)  # anything else is corrupt: Pillow says so
        (fast_indices,) = np.nonzero(fast)
        fast[fast_indices[~valid]] = False
        pixels[fast] = unfilter(filtered[valid])
    for i in np.flatnonzero(~fast):
        pixels[i] = decode_with_pillow(pngs[i], height, width)
    return pixels


def inflate(png: bytes, height: int, width: int) -> bytes | None:
    """The filtered scanlines (height * (1 + width) bytes) of an 8-bit grayscale, non-interlaced
    height x width PNG; None for any other image (or a corrupt one)."""
    if not png.startswith(SIGNATURE):
        return None
    header, data, position = None, [], len(SIGNATURE)
    while position + 8 <= len(png):
        length, kind = struct.unpack_from(">I4s", png, position)
        body = png[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body) if length == 13 else None
        elif kind == b"IDAT":
            data.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length  # length, kind, body, CRC
    # IHDR: width, height, bit depth 8, colour type 0 (grayscale), compression 0, filter method 0, no interlace.
    if header != (width, height, 8, 0, 0, 0, 0):
        return None
    try:
        scanlines = zlib.decompress(b"".join(data))
    except zlib.error:
        return None
    return scanlines if len(scanlines) == height * (1 + width) else None


def unfilter(filtered: np.ndarray) -> np.ndarray:
    """Filtered scanlines uint8 (N, H, 1 + W), one byte per pixel -> pixels uint8 (N, H, W).

    Row by row for all images at once; Sub is a running sum, Average and Paeth (which
    predict from the pixel just decoded) go pixel by pixel across the row.
    """
    kinds, rows = filtered[:, :, 0], filtered[:, :, 1:]
    n, height, width = rows.shape
    pixels = np.empty((n, height, width), np.uint8)
    above = np.zeros((n, width), np.uint8)  # the row above the first is zeros
    for r in range(height):
        row, kind = rows[:, r], kinds[:, r]
        out = row.copy()  # NONE
        sub, up = kind == SUB, kind == UP
        out[sub] = np.cumsum(row[sub], axis=1, dtype=np.uint8)  # uint8 arithmetic wraps mod 256, as PNG's
        out[up] = row[up] + above[up]
        for k, predict in ((AVERAGE, _average), (PAETH, _paeth)):
            chosen = kind == k
            if chosen.any():
                out[chosen] = _left_to_right(row[chosen], above[chosen], predict)
        pixels[:, r] = out
        above = out
    return pixels


def _left_to_right(row: np.ndarray, above: np.ndarray, predict) -> np.ndarray:
    """Undo a filter whose prediction uses the decoded pixel on the left: (M, W) uint8 -> (M, W)."""
    out = np.empty_like(row)
    left = np.zeros(len(row), np.int16)
    upper_left = np.zeros(len(row), np.int16)
    for x in range(row.shape[1]):
        up = above[:, x].astype(np.int16)
        out[:, x] = row[:, x] + predict(left, up, upper_left).astype(np.uint8)
        left, upper_left = out[:, x].astype(np.int16), up
    return out


def _average(left: np.ndarray, up: np.ndarray, upper_left: np.ndarray) -> np.ndarray:
    return (left + up) >> 1


def _paeth(left: np.ndarray, up: np.ndarray, upper_left: np.ndarray) -> np.ndarray:
    """The Paeth predictor: whichever of left, up, upper-left is closest to left + up - upper_left."""
    to_left, to_up, to_upper_left = (
        np.abs(up - upper_left),
        np.abs(left - upper_left),
        np.abs(left + up - 2 * upper_left),
    )
    return np.where(
        (to_left <= to_up) & (to_left <= to_upper_left), left, np.where(to_up <= to_upper_left, up, upper_left)
    )


def decode_with_pillow(png: bytes, height: int, width: int) -> np.ndarray:
    """One image of any format Pillow reads, as grayscale uint8 (height, width); ValueError otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(png)) as image:
            pixels = np.asarray(image.convert("L"))
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ValueError(f"not a readable image ({err})") from None
    if pixels.shape != (height, width):
        raise ValueError(f"an image is {pixels.shape[1]}x{pixels.shape[0]}, expected {width}x{height}")
    return pixels
