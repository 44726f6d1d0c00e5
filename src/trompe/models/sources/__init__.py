"""Models from anywhere: a model id names where a classifier comes from, and one loader each.

A model id is a built-in name (``efficientnet_lite0``), a source prefix and a reference
(``torchvision:resnet50``, ``timm:convnext_tiny.fb_in1k``, ``hf:google/vit-base-patch16-224``,
``hf:./my-vit/``, ``keras:InceptionV3``, ``keras:./model.keras``, ``onnx:./model.onnx``), or a
file path whose suffix tells the source (``./model.onnx``, ``./model.keras``, or a state dict
``./weights.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` with ``arch=`` naming the network it
fits). Every loader returns a :class:`~trompe.models.Classifier` that owns its preprocessing,
read from the model's own metadata; :class:`LoadOptions` overrides it where the metadata is
missing or wrong, and adds a label file.

Each source needs an optional library, imported only when a model of that source is loaded; a
missing one is an :class:`~trompe.errors.MissingDependencyError` whose line is the exact ``pip``
command. Importing this module imports neither torch nor any source library.

Untrusted files are data, never code: state dicts load with ``torch.load(weights_only=True)`` or
safetensors, with no fallback; TorchScript only with ``trust_torchscript=True``; Keras files with
Keras' safe mode; ONNX files run in onnxruntime after their external-data paths are checked.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trompe.errors import InvalidArgumentError, MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from torch import nn

    from trompe.labels import Labels
    from trompe.models.classifier import Access, Classifier

__all__ = [
    "SOURCES",
    "Architecture",
    "LoadOptions",
    "Preprocessing",
    "Source",
    "build_classifier",
    "find_source",
    "load_from_source",
    "read_labels_file",
    "require",
]

#: Suffixes of the files that hold a state dict (weights only; the network comes from ``arch``).
STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")

#: The resize modes a preprocessing may name (``torch.nn.functional.interpolate``'s).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")


@dataclass(frozen=True)
class Preprocessing:
    """How a classifier brings a photo in [0, 1] to its network's input.

    The evaluation transform of almost every ImageNet model: a centred crop of
    ``crop_fraction`` of the shorter side, a resize to ``input_size`` with ``interpolation``,
    then ``(x - mean) / std`` per channel.

    Attributes:
        mean: per-channel mean in the [0, 1] scale.
        std: per-channel standard deviation in the [0, 1] scale.
        input_size: (height, width) of the network's input; None takes any size.
        crop_fraction: the part of the shorter side kept by the centred crop, in (0, 1].
        interpolation: the resize mode (one of :data:`INTERPOLATIONS`).
    """

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    input_size: tuple[int, int] | None = None
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"

    def describe(self) -> dict[str, Any]:
        """JSON-ready: what ``trompe models --info`` shows and result.json records."""
        return {
            "mean": [round(v, 6) for v in self.mean],
            "std": [round(v, 6) for v in self.std],
            "input_size": None if self.input_size is None else list(self.input_size),
            "crop_fraction": round(self.crop_fraction, 6),
            "interpolation": self.interpolation,
        }


@dataclass(frozen=True)
class LoadOptions:
    """What a user adds to a model id: the architecture of a bare state dict, a label file,
    preprocessing overrides, and the opt-ins for less safe or slower formats.

    Attributes:
        arch: for a state dict file, the network it fits: ``timm:resnet18``,
            ``torchvision:resnet50`` or a built-in name (``efficientnet_lite0``).
        labels: a label file (``.txt``, one name per line; ``.json``, a list or an
            ``{index: name}`` object) or the names themselves.
        mean, std, input_size, crop_fraction, interpolation: replace the model's own
            preprocessing (None keeps it).
        trust_torchscript: load a TorchScript archive, which runs code of its own (never from
            a web page).
        onnx_gradients: convert an ONNX model to a torch module (onnx2torch) so that gradient
            attacks can run; without it an ONNX model gives scores only.
    """

    arch: str | None = None
    labels: str | Path | Sequence[str] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    input_size: tuple[int, int] | None = None
    crop_fraction: float | None = None
    interpolation: str | None = None
    trust_torchscript: bool = False
    onnx_gradients: bool = False

    def apply(self, preprocessing: Preprocessing) -> Preprocessing:
        """``preprocessing`` with this object's overrides in place."""
        changes = {
            f.name: getattr(self, f.name)
            for f in fields(Preprocessing)
            if getattr(self, f.name, None) is not None
        }
        return replace(preprocessing, **changes)

    @property
    def overrides(self) -> dict[str, Any]:
        """The preprocessing fields that this object sets (for result.json)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(Preprocessing)
            if getattr(self, f.name, None) is not None
        }


@dataclass
class Architecture:
    """A network built with random weights, ready for a state dict, with what its source knows.

    The sources that can build a bare network (torchvision, timm, the built-ins) expose
    ``architecture(name: str, num_classes: int | None = None) -> Architecture`` in their
    module; the state-dict loader (``--model weights.safetensors --arch timm:resnet18``) calls
    it once to find the classifier's key, then again with the class count of the weights.

    Attributes:
        net: the network in eval mode; it takes normalised images and returns logits.
        preprocessing: the evaluation preprocessing of the architecture's pretrained weights.
        labels: class names for the default class count (ImageNet's), None otherwise.
        head: the state-dict key of the final classifier's weight (``fc.weight``), whose first
            dimension is the class count; None when unknown.
    """

    net: nn.Module
    preprocessing: Preprocessing
    labels: Labels | Sequence[str] | None = None
    head: str | None = None


class Loader(Protocol):
    def __call__(self, ref: str, options: LoadOptions) -> Classifier: ...


@dataclass(frozen=True)
class Source:
    """One place models come from.

    Attributes:
        prefix: what comes before the colon of a model id (``timm``).
        modules: the importable modules it needs (checked before loading).
        extra: the trompe extra that installs them (``pip install 'trompe[timm]'``).
        loader: ``module:function`` of the loader, imported on first use.
        description: one line for ``trompe models``.
        example: a model id of this source.
    """

    prefix: str
    modules: tuple[str, ...]
    extra: str
    loader: str
    description: str
    example: str

    @property
    def install_hint(self) -> str:
        return f"pip install 'trompe[{self.extra}]'"

    @property
    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.prefix,
            "example": self.example,
            "description": self.description,
            "extra": self.extra,
            "installed": self.installed,
            "install": self.install_hint,
        }


_LOADERS = "trompe.models.sources"

#: Every model source, by prefix.
SOURCES: dict[str, Source] = {
    source.prefix: source
    for source in (
        Source(
            "torchvision",
            ("torchvision",),
            "torchvision",
            f"{_LOADERS}._torchvision:load",
            "torchvision's models and weights (its own weights API and cache)",
            "torchvision:resnet50",
        ),
        Source(
            "timm",
            ("timm",),
            "timm",
            f"{_LOADERS}._timm:load",
            "timm's models; preprocessing from their pretrained config",
            "timm:convnext_tiny.fb_in1k",
        ),
        Source(
            "hf",
            ("transformers",),
            "hf",
            f"{_LOADERS}._hf:load",
            "Hugging Face image classifiers, from the hub or a save_pretrained folder",
            "hf:google/vit-base-patch16-224",
        ),
        Source(
            "keras",
            ("keras",),
            "keras",
            f"{_LOADERS}._keras:load",
            "Keras 3 applications or .keras files, run on Keras' torch backend",
            "keras:InceptionV3",
        ),
        Source(
            "onnx",
            ("onnx", "onnxruntime"),
            "onnx",
            f"{_LOADERS}._onnx:load",
            "ONNX files in onnxruntime (scores only; onnx_gradients converts to torch)",
            "onnx:./model.onnx",
        ),
        Source(
            "file",
            (),
            "safetensors",
            f"{_LOADERS}._checkpoint:load",
            "a state dict (.safetensors, .pt, .pth, .bin) into the network named by arch",
            "file:./weights.safetensors",
        ),
    )
}


def require(source: Source, module: str | None = None) -> None:
    """Check that a source's libraries are installed, before anything is imported.

    Raises:
        MissingDependencyError: one is missing; the message is the ``pip`` command to run.
    """
    for name in (module,) if module else source.modules:
        if importlib.util.find_spec(name) is None:
            raise MissingDependencyError(
                f"model source '{source.prefix}:' needs {name}, which is not installed; "
                f"run `{source.install_hint}`"
            )


def find_source(model_id: str) -> tuple[Source, str] | None:
    """The source and reference of a model id; None for a name without a source.

    ``prefix:ref`` picks the source by prefix; a path ending in ``.onnx`` or ``.keras``, a
    state-dict suffix, or a folder with a ``config.json`` (Hugging Face) picks it by what it
    is. One-letter prefixes are drive letters, not sources.

    Raises:
        UnknownModelError is left to the caller: None means "not a source id".
    """
    text = model_id.strip()
    prefix, sep, ref = text.partition(":")
    if sep and len(prefix) > 1:
        source = SOURCES.get(prefix.lower())
        if source is not None:
            return source, ref
        return None
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return SOURCES["onnx"], text
    if suffix == ".keras":
        return SOURCES["keras"], text
    if suffix in STATE_DICT_SUFFIXES:
        return SOURCES["file"], text
    if path.is_dir() and (path / "config.json").is_file():
        return SOURCES["hf"], text
    return None


def load_from_source(source: Source, ref: str, options: LoadOptions) -> Classifier:
    """Load a model of ``source`` (on the CPU) through its loader.

    Raises:
        MissingDependencyError: the source's library is not installed.
        ModelLoadError: the model or its weights cannot be read, fetched or understood.
    """
    require(source)
    module_name, _, function = source.loader.partition(":")
    loader: Loader = getattr(importlib.import_module(module_name), function)
    return loader(ref, options)


def read_labels_file(path: str | Path) -> list[str]:
    """Class names from a file: ``.txt`` one per line, ``.json`` a list or ``{index: name}``.

    Raises:
        InvalidArgumentError: unreadable, empty, or not one of those shapes.
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidArgumentError(f"cannot read the label file {str(file)!r}: {error}") from None
    names: list[str]
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidArgumentError(
                f"the label file {str(file)!r} is not valid JSON ({error.msg}, line {error.lineno})"
            ) from None
        if isinstance(data, dict):
            try:
                indexed = {int(k): str(v) for k, v in data.items()}
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"the label file {str(file)!r} must map class indices to names"
                ) from None
            if sorted(indexed) != list(range(len(indexed))):
                raise InvalidArgumentError(
                    f"the label file {str(file)!r} must name every class from 0 to "
                    f"{len(indexed) - 1} once"
                )
            names = [indexed[i] for i in range(len(indexed))]
        elif isinstance(data, list) and all(isinstance(v, str) for v in data):
            names = list(data)
        else:
            raise InvalidArgumentError(
                f"the label file {str(file)!r} must hold a list of names or an "
                "{index: name} object"
            )
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InvalidArgumentError(f"the label file {str(file)!r} names no class")
    return names


def _labels_for(
    options: LoadOptions, default: Labels | Sequence[str] | None, num_classes: int | None
) -> Labels | Sequence[str] | None:
    labels: Labels | Sequence[str] | None = default
    if options.labels is not None:
        if isinstance(options.labels, str | Path):
            labels = read_labels_file(options.labels)
        else:
            labels = list(options.labels)
    if labels is not None and num_classes is not None and len(labels) != num_classes:
        raise InvalidArgumentError(
            f"the model has {num_classes} classes but {len(labels)} class names were given; "
            "pass a label file with one name per class (--labels)"
        )
    return labels


def build_classifier(
    net: nn.Module,
    preprocessing: Preprocessing,
    options: LoadOptions,
    *,
    name: str,
    labels: Labels | Sequence[str] | None = None,
    num_classes: int | None = None,
    access: Access = "gradients",
) -> Classifier:
    """The Classifier of a loaded network: the options' overrides and label file applied.

    Args:
        net: maps normalised (B, 3, h, w) images to (B, num_classes) logits.
        preprocessing: the model's own preprocessing, from its metadata.
        options: the user's overrides and label file.
        name: the model id, shown in reports.
        labels: the model's own class names (None: the options' file, else "class i").
        num_classes: the width of the logits when known, checked against the labels.
        access: what attacks may use (an ONNX session gives scores only).

    Raises:
        InvalidArgumentError: the label count differs from ``num_classes``, or an override is
            out of range.
    """
    from trompe.models.classifier import Classifier

    effective = options.apply(preprocessing)
    if effective.interpolation not in INTERPOLATIONS:
        raise InvalidArgumentError(
            f"unknown interpolation {effective.interpolation!r}; "
            f"choose one of {', '.join(INTERPOLATIONS)}"
        )
    clf = Classifier(
        net,
        mean=effective.mean,
        std=effective.std,
        labels=_labels_for(options, labels, num_classes),
        input_size=effective.input_size,
        crop_fraction=effective.crop_fraction,
        interpolation=effective.interpolation,
        name=name,
        access=access,
    )
    return clf


def describe_failure(error: BaseException) -> str:
    """One short reason for a failed load or download (first line, no traceback)."""
    text = str(error).strip().splitlines()
    reason = text[0] if text else type(error).__name__
    return reason if len(reason) <= 200 else reason[:197] + "..."


def load_error(model_id: str, error: BaseException, hint: str) -> ModelLoadError:
    """A :class:`ModelLoadError`: what could not be loaded, why, and what to do."""
    return ModelLoadError(f"cannot load model {model_id!r}: {describe_failure(error)}; {hint}")
