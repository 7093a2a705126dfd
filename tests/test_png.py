"""The batched PNG decoder: every PNG row filter, Pillow's own PNGs, and the images it leaves to Pillow."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxgan import png


def paeth(left: np.ndarray, up: np.ndarray, upper_left: np.ndarray) -> np.ndarray:
    p = left + up - upper_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upper_left)
    return np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upper_left))


def encode(pixels: np.ndarray, filters: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of pixels (H, W) with row r filtered by filters[r] (0..4), straight from the spec."""
    rows, above = [], np.zeros(pixels.shape[1], int)
    for row, kind in zip(pixels.astype(int), filters, strict=True):
        left = np.concatenate([[0], row[:-1]])
        upper_left = np.concatenate([[0], above[:-1]])
        prediction = [0, left, above, (left + above) // 2, paeth(left, above, upper_left)][kind]
        rows.append(bytes([kind]) + ((row - prediction) % 256).astype(np.uint8).tobytes())
        above = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, 0, 0, 0, 0)
    return png.SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")


def test_every_row_filter_decodes_to_the_pixels_like_pillow():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)  # random bytes: every sum wraps somewhere
    filters = rng.integers(0, 5, (64, 28))
    encoded = [encode(p, f) for p, f in zip(pixels, filters, strict=True)]
    assert all(png.inflate(e, 28, 28) is not None for e in encoded)  # all on the NumPy path
    np.testing.assert_array_equal(png.decode_grayscale(encoded, 28, 28), pixels)
    pillow = np.stack([np.asarray(Image.open(io.BytesIO(e))) for e in encoded])
    np.testing.assert_array_equal(pillow, pixels)  # the test's encoder is a real PNG encoder


def pillow_png(pixels: np.ndarray, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format="PNG")
    return out.getvalue()


def test_pillow_written_pngs_and_other_kinds_of_png_decode_to_their_pixels():
    rng = np.random.default_rng(1)
    digits = np.zeros((3, 28, 28), np.uint8)
    digits[:, 8:20, 10:18] = rng.integers(100, 256, (3, 12, 8), dtype=np.uint8)  # adaptive filters choose per row
    encoded = [pillow_png(d) for d in digits]
    encoded.append(pillow_png(digits[0], "RGB"))  # colour: Pillow's path, as grayscale
    encoded.append(pillow_png(digits[1], "P"))  # palette
    assert [png.inflate(e, 28, 28) is not None for e in encoded] == [True, True, True, False, False]
    np.testing.assert_array_equal(png.decode_grayscale(encoded, 28, 28), digits[[0, 1, 2, 0, 1]])


def test_images_of_another_size_or_not_images_are_refused():
    with pytest.raises(ValueError, match="an image is 32x32, expected 28x28"):
        png.decode_grayscale([pillow_png(np.zeros((32, 32), np.uint8))], 28, 28)
    with pytest.raises(ValueError, match="not a readable image"):
        png.decode_grayscale([b"not a png"], 28, 28)
    corrupt = bytearray(encode(np.zeros((28, 28), np.uint8), np.zeros(28, int)))
    corrupt[-20:-12] = b"\xff" * 8  # inside the zlib stream
    with pytest.raises(ValueError, match="not a readable image"):
        png.decode_grayscale([bytes(corrupt)], 28, 28)
