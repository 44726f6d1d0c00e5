"""What the benchmark scripts of this folder share: logging, versions, data, counting, tables.

Not a benchmark itself. The scripts import it as a top-level module (``from _common import
...``), which works because a script run as ``python benchmarks/bench_x.py``, from any
directory, has its own folder first on ``sys.path``. mypy, given a script, searches the
script's folder too; ruff does not need to find the module, it sorts the import with the
third-party ones. The folder has no ``__init__.py`` on purpose: it is not a package, and nothing
outside it imports from it.

``OMP_WAIT_POLICY`` is not set here: each script sets it at its very top, before anything
imports torch (the OpenMP runtime reads it once, when torch loads). Setting it here would hold
only while this module is imported before torch in every script, an order that the import
sorter does not keep; two lines in each script are the safer price.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import trompe
from trompe.images import quantize

#: Photos for the ImageNet rows: the two bundled with trompe, then the colour photos of
#: scikit-image's data folder (its drawings, textures, microscopy and telescope images are left
#: out). All are CC0 or public domain.
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "camera")
#: The photos that ship with trompe (always there).
BUNDLED = ("chelsea", "coffee")


# -- progress and versions ------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress, to stderr (the tables go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def package_version(package: str) -> str:
    """The installed version of a distribution, or ``"not installed"``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions_line() -> str:
    """``python X, torch Y, trompe Z``: the start of a table's versions line."""
    return (
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"trompe {trompe.__version__}"
    )


def device_line(device: torch.device) -> str:
    """The device: the GPU's name, or the CPU count and torch's threads."""
    return f"device: {device}" + (
        f" ({torch.cuda.get_device_name(device)})"
        if device.type == "cuda"
        else f" ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()})"
    )


def load_lines() -> list[str]:
    """The machine's load average, as one line (none where the OS does not report it)."""
    if not hasattr(os, "getloadavg"):
        return []
    return ["load average at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())]


# -- command line ---------------------------------------------------------------------------------


def comma_list(text: str, *, lower: bool = False) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (lower-cased with ``lower``)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    return [item.lower() for item in items] if lower else items


def require_device(parser: argparse.ArgumentParser, device: str) -> None:
    """Stop with a usage error when ``--device cuda`` is asked for and torch sees no GPU."""
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")


def cpu_threads(device: str, threads: int) -> None:
    """``torch.set_num_threads(threads)`` on the CPU when ``threads`` > 0 (0: torch's default)."""
    if device == "cpu" and threads > 0:
        torch.set_num_threads(threads)


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (before reading a clock); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- data -----------------------------------------------------------------------------------------


def digits_batch(
    count: int, device: torch.device, *, correct_only: bool = True
) -> tuple[trompe.Classifier, torch.Tensor, torch.Tensor]:
    """The digits CNN, trained here (seed 0, a few seconds), and test digits with their labels.

    The first ``count`` test digits that the model classifies correctly, or with
    ``correct_only=False`` the first ``count`` test digits whatever the model says of them.
    """
    from trompe.models.digits import load_digits, train_digits_classifier

    data = load_digits()
    clf = train_digits_classifier(data, seed=0).to(device)
    images, labels = data.test_images.to(device), data.test_labels.to(device)
    if not correct_only:
        return clf, images[:count], labels[:count]
    with torch.no_grad():
        right = clf(images).argmax(dim=1) == labels
    index = right.nonzero().squeeze(1)[:count]
    return clf, images[index], labels[index]


def photo_path(name: str) -> Path | None:
    """A photo of :data:`PHOTOS`: bundled with trompe, or in scikit-image's data folder."""
    if name in BUNDLED:
        return Path(trompe.images.example_path(name))
    try:
        import skimage.data
    except ImportError:
        return None
    folder = Path(skimage.data.data_dir)
    for suffix in (".png", ".jpg"):
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None


def load_photos(
    clf: trompe.Classifier, names: Sequence[str], device: torch.device, limit: int | None = None
) -> tuple[torch.Tensor, list[str], list[str]]:
    """The photos of ``names`` that are found (at most ``limit``), at the model's input size.

    Each is brought to the input by the model's own preprocessing and rounded to 8 bits.
    Returns the batch, the names found, and the names missing (before the limit was reached).
    """
    images: list[torch.Tensor] = []
    found: list[str] = []
    missing: list[str] = []
    for name in names:
        if limit is not None and len(found) == limit:
            break
        path = photo_path(name)
        if path is None:
            missing.append(name)
            continue
        image = trompe.load_image(path)[None].to(device)
        with torch.no_grad():
            images.append(quantize(clf.preprocess(image).clamp(0, 1)))
        found.append(name)
    return torch.cat(images), found, missing


def lite0_photos(
    device: torch.device, names: Sequence[str], limit: int | None = None
) -> tuple[trompe.Classifier, torch.Tensor, torch.Tensor, list[str]]:
    """EfficientNet-Lite0 and photos of ``names`` (see :func:`load_photos`) at 224 x 224.

    Their labels are the model's own top-1 predictions (an untargeted attack moves away from
    the model's answer). Returns the classifier, images, labels and the names not found.
    """
    clf = trompe.load_model("efficientnet_lite0", device=device)
    images, _, missing = load_photos(clf, names, device, limit)
    with torch.no_grad():
        labels = clf(images).argmax(dim=1)
    return clf, images, labels, missing


# -- the peers ------------------------------------------------------------------------------------


class Counting(nn.Module):
    """Wraps a network and counts the images it is given (the peers' queries).

    ``no_grad``: run the network without autograd (for peers that read only its outputs).
    ``float32``: cast the batch to float32 first (ART hands float64 batches from its NumPy
    arithmetic; the networks are float32).
    """

    def __init__(self, net: nn.Module, *, no_grad: bool = False, float32: bool = False) -> None:
        super().__init__()
        self.net = net
        self.no_grad = no_grad
        self.float32 = float32
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += int(x.shape[0])
        if self.float32:
            x = x.float()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.no_grad):
            out: torch.Tensor = self.net(x)
        return out


def art_classifier(
    model: nn.Module, input_shape: Sequence[int], classes: int, device: torch.device
) -> Any:
    """ART's ``PyTorchClassifier`` around ``model``: inputs in [0, 1], cross-entropy loss.

    Raises ImportError when ART is not installed.
    """
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


# -- tables ---------------------------------------------------------------------------------------


def render(
    header: Sequence[str], body: Sequence[Sequence[str]], markdown: bool, *, rule: bool = False
) -> str:
    """A table: GitHub markdown, or plain text in aligned columns (``rule``: dashes under the
    header)."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header)]
    if rule:
        lines.append(fmt.format(*("-" * w for w in widths)))
    lines += [fmt.format(*cells) for cells in body]
    return "\n".join(lines)
