"""The model options that ``attack``, ``demo``, ``classify``, ``labels`` and ``models --info``
share: which model (``--model``), and what to change about it (architecture of a state dict,
label file, preprocessing overrides, opt-ins for less safe or slower formats).

The argument types check the values as argparse reads them, so that a malformed number is a
one-line usage error (exit 2) before anything is loaded; :func:`model_from_args` passes them to
:func:`trompe.load_model`. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from trompe.cli._console import printable

if TYPE_CHECKING:
    from trompe.models import Classifier

__all__ = ["INTERPOLATIONS", "add_model_options", "model_from_args", "model_options_given"]

#: The resize modes (those of trompe.models.sources, written here so that parsing needs no
#: import of the model layer; a test checks that they agree).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")

#: The largest side that --input-size takes (a bigger one is a typo, and a huge allocation).
MAX_SIDE = 8192

#: The options of this group, as argparse stores them, with their flags (for messages).
_OVERRIDES = {
    "arch": "--arch",
    "labels": "--labels",
    "mean": "--mean",
    "std": "--std",
    "input_size": "--input-size",
    "crop": "--crop",
    "interpolation": "--interpolation",
    "trust_torchscript": "--trust-torchscript",
    "onnx_gradients": "--onnx-gradients",
}


def _numbers(text: str, what: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what} as R,G,B or one number, got {printable(repr(text))}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected finite numbers, got {text.strip()[:40]}")
        values.append(value)
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(
            f"expected 1 or 3 numbers (R,G,B), got {len(values)}: {text.strip()[:40]}"
        )
    if max(abs(v) for v in values) > 1:
        raise argparse.ArgumentTypeError(
            f"{what} is in the [0, 1] scale, got {text.strip()[:40]} (0-255 values? divide "
            "them by 255)"
        )
    return values * 3 if len(values) == 1 else values


def mean_values(text: str) -> list[float]:
    """``--mean``: three per-channel means in [0, 1], or one for all three."""
    return _numbers(text, "a mean")


def std_values(text: str) -> list[float]:
    """``--std``: three per-channel standard deviations in (0, 1], or one for all three."""
    values = _numbers(text, "a standard deviation")
    if min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"a standard deviation must be above 0, got {text.strip()[:40]}"
        )
    return values


def input_size(text: str) -> list[int]:
    """``--input-size``: one side (square) or HEIGHT,WIDTH in pixels."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a side or HEIGHT,WIDTH in pixels (224 or 224,288), got "
            f"{printable(repr(text))}"
        ) from None
    if len(sides) not in (1, 2) or not all(0 < s <= MAX_SIDE for s in sides):
        raise argparse.ArgumentTypeError(
            f"expected 1 or 2 sides from 1 to {MAX_SIDE} pixels, got {text.strip()[:40]}"
        )
    return sides * 2 if len(sides) == 1 else sides


def crop_fraction(text: str) -> float:
    """``--crop``: the part of the shorter side kept by the centred crop, in (0, 1]."""
    try:
        if "/" in text:  # 224/256, as papers write it
            top, _, bottom = text.partition("/")
            value = float(top) / float(bottom)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a fraction in (0, 1] such as 0.875 or 224/256, got {printable(repr(text))}"
        ) from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a crop fraction in (0, 1] (1 keeps the whole shorter side), got "
            f"{text.strip()[:40]}"
        )
    return value


def add_model_options(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    """Add the model options to a verb's parser (``--model`` too unless ``model`` is False:
    ``models --info ID`` names the model itself)."""
    group = parser.add_argument_group(
        "model", "which model, and what to change about it (details: README, 'Your own model')"
    )
    if model:
        group.add_argument(
            "--model",
            "-m",
            metavar="ID",
            help="a built-in name or SOURCE:REF (timm:resnet50, hf:DIR, onnx:FILE), or a file; "
            "see `trompe models`",
        )
    group.add_argument(
        "--arch",
        metavar="ID",
        help="the network a state dict file fits (timm:resnet18, torchvision:resnet50, "
        "efficientnet_lite0)",
    )
    group.add_argument(
        "--labels",
        metavar="FILE",
        help="class names: .txt (one per line) or .json (a list, or {index: name})",
    )
    group.add_argument(
        "--mean", type=mean_values, metavar="R,G,B", help="normalisation mean in [0, 1]"
    )
    group.add_argument(
        "--std", type=std_values, metavar="R,G,B", help="normalisation std in [0, 1]"
    )
    group.add_argument(
        "--input-size", type=input_size, metavar="N|H,W", help="the network's input size"
    )
    group.add_argument(
        "--crop",
        type=crop_fraction,
        metavar="FRACTION",
        help="centred crop of the shorter side before the resize, in (0, 1] (0.875, 224/256)",
    )
    group.add_argument("--interpolation", choices=INTERPOLATIONS, help="the resize mode")
    group.add_argument(
        "--trust-torchscript",
        action="store_true",
        default=None,
        help="allow a TorchScript file (it runs code of its own: only files you trust)",
    )
    group.add_argument(
        "--onnx-gradients",
        action="store_true",
        default=None,
        help="convert an ONNX model to torch (onnx2torch) so gradient attacks can run",
    )


def model_options_given(args: argparse.Namespace) -> list[str]:
    """The flags of this group, ``--model`` aside, that the command line set."""
    return [flag for key, flag in _OVERRIDES.items() if getattr(args, key, None) is not None]


def model_from_args(
    args: argparse.Namespace, model_id: str | None = None, *, device: str | None = None
) -> Classifier:
    """Load the model that the options name (``model_id`` or ``--model``, else the default),
    with their overrides.

    Raises:
        UnknownModelError, InvalidArgumentError: exit 2 (unknown id or source, bad override,
            label count that differs from the model's classes).
        MissingDependencyError, MissingWeightsError, ModelLoadError, InstallationError: exit 1.
    """
    from trompe.models import DEFAULT_MODEL, load_model

    name = model_id or getattr(args, "model", None) or DEFAULT_MODEL
    return load_model(
        name,
        device=device,
        arch=getattr(args, "arch", None),
        labels=getattr(args, "labels", None),
        mean=getattr(args, "mean", None),
        std=getattr(args, "std", None),
        input_size=getattr(args, "input_size", None),
        crop_fraction=getattr(args, "crop", None),
        interpolation=getattr(args, "interpolation", None),
        trust_torchscript=bool(getattr(args, "trust_torchscript", False)),
        onnx_gradients=bool(getattr(args, "onnx_gradients", False)),
    )
