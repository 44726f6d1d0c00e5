"""Shared fixtures of the test suite."""

from __future__ import annotations

import os

# As `import trompe` does, but before torch is loaded here: OpenMP threads that wait passively,
# so that another busy process on the machine does not slow the suite down tenfold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib.util
import struct
import sys
import zlib
from pathlib import Path

import pytest
import torch

from trompe.models import Classifier, load_model
from trompe.models.digits import DigitsData, load_digits, train_digits_classifier

# This machine's torchvision may not match its torch (see shims/sitecustomize.py): prepare its
# operators before anything imports it, here and in the subprocesses that the tests start.
_SHIMS = Path(__file__).parent / "shims"
_spec = importlib.util.spec_from_file_location("_trompe_shims", _SHIMS / "sitecustomize.py")
assert _spec is not None and _spec.loader is not None
_shims = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _shims  # kept alive: its torch.library.Library holds the schemas
_spec.loader.exec_module(_shims)  # installs the finder
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(_SHIMS), *filter(None, [os.environ.get("PYTHONPATH")])]
)

# One intra-op thread: the attack tests run many small batches, for which a second thread buys
# little, and on a shared machine two spinning threads per process made the suite 10x slower.
# TROMPE_TEST_THREADS overrides it (e.g. on a large quiet machine).
torch.set_num_threads(int(os.environ.get("TROMPE_TEST_THREADS", "1")))


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


# -- real models shared by the attack tests ----------------------------------------------------


@pytest.fixture(scope="session")
def digits() -> DigitsData:
    """scikit-learn's digits as (N, 3, 8, 8) RGB images on the 8-bit grid, split 80/20."""
    return load_digits()


@pytest.fixture(scope="session")
def digits_clf(digits: DigitsData) -> Classifier:
    """The small CNN trained on the digits in a few seconds (about 98 % test accuracy)."""
    return train_digits_classifier(digits, seed=0)


@pytest.fixture(scope="session")
def digits_batch(digits: DigitsData, digits_clf: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 64 test digits that the CNN classifies correctly: (images, labels)."""
    with torch.no_grad():
        right = digits_clf(digits.test_images).argmax(dim=1) == digits.test_labels
    index = right.nonzero().squeeze(1)[:64]
    return digits.test_images[index], digits.test_labels[index]


@pytest.fixture(scope="session")
def imagenet_clf() -> Classifier:
    """The pretrained EfficientNet-Lite0, shared by the tests that need an ImageNet model."""
    return load_model("efficientnet_lite0")
