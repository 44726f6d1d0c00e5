"""Shared fixtures of the test suite."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_huge_bilevel_png(path: Path, width: int, height: int) -> None:
    """A valid 1-bit grayscale PNG of zeros, compressed row block by row block (a few kB)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter type 0, then the packed bits
    block_rows = 1000
    compressor = zlib.compressobj(9)
    with path.open("wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n")
        file.write(png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)))
        data = bytearray()
        for start in range(0, height, block_rows):
            data += compressor.compress(row * min(block_rows, height - start))
        data += compressor.flush()
        file.write(png_chunk(b"IDAT", bytes(data)))
        file.write(png_chunk(b"IEND", b""))


@pytest.fixture
def huge_png(tmp_path: Path) -> Path:
    """A valid 20000 x 20000 PNG (400 megapixels) of a few kB: a decompression bomb."""
    path = tmp_path / "big.png"
    write_huge_bilevel_png(path, 20_000, 20_000)
    return path
