"""torchvision's image classifiers: ``torchvision:resnet50`` and the other models it lists.

A reference is a model name (its ``DEFAULT`` weights), a weights enum name
(``ResNet50_Weights.IMAGENET1K_V1``), or a model name and a weights member
(``resnet50.IMAGENET1K_V1``). The weights come through torchvision's own weights API and cache
(``$TORCH_HOME/hub/checkpoints``); the preprocessing is that of ``weights.transforms()`` and the
class names those of ``weights.meta["categories"]`` (trompe's ImageNet labels, with synonyms,
for ImageNet-1k).

The state dict is read with ``weights_only=True`` (torchvision's own builders read it as a full
pickle), then loaded into the network that torchvision's builder would make for those weights.

Example:
    >>> clf = trompe.load_model("torchvision:resnet50")  # doctest: +SKIP
    >>> clf.crop_fraction, clf.interpolation  # DEFAULT is IMAGENET1K_V2
    (0.9655172413793104, 'bilinear')
"""

from __future__ import annotations

import difflib
import logging
import os
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from trompe.errors import InvalidArgumentError, ModelLoadError, UnknownModelError
from trompe.models.sources import (
    Architecture,
    LoadOptions,
    Preprocessing,
    build_classifier,
    load_error,
)

if TYPE_CHECKING:
    from torch import nn
    from torchvision.models import WeightsEnum

    from trompe.labels import Labels
    from trompe.models.classifier import Classifier

__all__ = ["architecture", "classifier_key", "load"]

logger = logging.getLogger(__name__)

# torchvision's InterpolationMode values -> torch.nn.functional.interpolate's modes.
_INTERPOLATIONS = {
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "nearest": "nearest",
    "nearest-exact": "nearest",
}


def _classification_models() -> list[str]:
    import torchvision.models

    names: list[str] = torchvision.models.list_models(module=torchvision.models)
    return names


def _unknown(ref: str, models: Sequence[str]) -> UnknownModelError:
    import torchvision.models

    name = ref.strip()
    if name.lower() in torchvision.models.list_models():
        return UnknownModelError(
            f"torchvision's {name!r} is not an image classifier (detection, segmentation, "
            "video or quantized); choose one of `torchvision.models.list_models("
            "module=torchvision.models)`"
        )
    close = difflib.get_close_matches(name.lower(), models, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(f'torchvision:{c}' for c in close)}? " if close else ""
    return UnknownModelError(
        f"unknown torchvision classifier {name!r}; {hint}"
        "see `torchvision.models.list_models(module=torchvision.models)`"
    )


def _resolve(ref: str) -> tuple[str, WeightsEnum | None, bool]:
    """The model name of a reference, its weights (None: none exist), and whether the
    reference named the weights explicitly.

    Raises:
        UnknownModelError: no torchvision classifier or weights of that name.
    """
    from torchvision.models import get_model_weights, get_weight

    models = _classification_models()
    text = ref.strip()
    if not text:
        raise UnknownModelError(
            "no torchvision model named; write torchvision:<model>, e.g. torchvision:resnet50"
        )
    if text.lower() in models:
        name = text.lower()
        try:
            enum = get_model_weights(name)
        except (ValueError, KeyError, AttributeError):
            return name, None, False
        members = list(enum)
        default = getattr(enum, "DEFAULT", members[0] if members else None)
        return name, default, False
    head, dot, member = text.rpartition(".")
    if not dot:
        raise _unknown(text, models)
    if head.lower() in models:  # resnet50.IMAGENET1K_V1
        name = head.lower()
        enum = get_model_weights(name)
        try:
            return name, enum[member.upper()], True
        except KeyError:
            known = ", ".join(w.name for w in enum)
            raise UnknownModelError(
                f"torchvision's {name} has no weights {member!r}; choose one of {known}"
            ) from None
    try:  # ResNet50_Weights.IMAGENET1K_V1
        weights = get_weight(text)
    except (ValueError, KeyError):
        if head.lower().endswith("_weights"):
            raise UnknownModelError(
                f"unknown torchvision weights {text!r}; write <Model>_Weights.<NAME>, e.g. "
                "ResNet50_Weights.IMAGENET1K_V1, or a model name for its default weights"
            ) from None
        raise _unknown(head, models) from None
    for name in models:
        try:
            if get_model_weights(name) is type(weights):
                return name, weights, True
        except (ValueError, KeyError, AttributeError):
            continue
    raise UnknownModelError(
        f"torchvision's weights {text!r} are not those of an image classifier; "
        "see `torchvision.models.list_models(module=torchvision.models)`"
    )


def _builder_options(name: str, weights: WeightsEnum | None) -> dict[str, Any]:
    """What torchvision's builders set, besides the class count, when given these weights.

    A network built with them has the same modules and parameters as ``get_model(name,
    weights=weights)``, without reading the weights there (see the module docstring).
    """
    if weights is None:
        return {}
    options: dict[str, Any] = {}
    if name in ("googlenet", "inception_v3"):
        # Their weights were trained on inputs normalised another way, which transform_input
        # converts to; the auxiliary heads are in the state dict (and unused in eval mode).
        options.update(transform_input=True, aux_logits=True, init_weights=False)
    elif name.startswith("vit_"):
        options["image_size"] = weights.meta["min_size"][0]
    elif name.startswith("maxvit_"):
        options["input_size"] = weights.meta["min_size"]
    return options


def _build(name: str, weights: WeightsEnum | None, num_classes: int | None) -> nn.Module:
    from torchvision.models import get_model

    options = _builder_options(name, weights)
    if num_classes is not None:
        options["num_classes"] = num_classes
    net: nn.Module = get_model(name, weights=None, **options)
    return net.eval()


def _preprocessing(weights: WeightsEnum) -> Preprocessing:
    """The evaluation preprocessing of ``weights.transforms()``: resize the shorter side to
    ``resize_size``, crop ``crop_size`` in the centre, normalise."""
    transform = weights.transforms()
    crop = int(transform.crop_size[0])
    resize = int(transform.resize_size[0]) if transform.resize_size else crop
    mode = getattr(transform.interpolation, "value", str(transform.interpolation))
    interpolation = _INTERPOLATIONS.get(mode)
    if interpolation is None:
        logger.warning(
            "torchvision's %s resize has no torch equivalent; trompe uses bilinear", mode
        )
        interpolation = "bilinear"
    mean = tuple(float(v) for v in transform.mean)
    std = tuple(float(v) for v in transform.std)
    return Preprocessing(
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        input_size=(crop, crop),
        crop_fraction=min(1.0, crop / resize),
        interpolation=interpolation,
    )


def _labels(weights: WeightsEnum | None, num_classes: int) -> Labels | list[str] | None:
    categories = None if weights is None else weights.meta.get("categories")
    if not categories or len(categories) != num_classes:
        return None
    if num_classes == 1000 and categories[0] == "tench":
        from trompe.labels import imagenet_labels

        return imagenet_labels()  # the same order, with readable names and synonyms
    return list(categories)


def classifier_key(net: nn.Module, num_classes: int | None = None) -> str | None:
    """The state-dict key of a network's final classifier weight: that of its last linear
    layer (or 1x1 convolution, as in SqueezeNet) with ``num_classes`` outputs; None if none."""
    from torch import nn

    found = None
    for module_name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            width = module.out_features
        elif isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
            width = module.out_channels
        else:
            continue
        if num_classes is None or width == num_classes:
            found = f"{module_name}.weight" if module_name else "weight"
    if found is None and num_classes is not None:
        return None
    return found


def _cache_dir() -> str:
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _download(url: str) -> None:
    """Fetch a weights file into torchvision's cache unless it is there, as
    ``torch.hub.load_state_dict_from_url`` does (same file name, same hash check), but without
    its "Downloading" line on stdout, which would spoil ``--json`` output."""
    import torch.hub

    file = os.path.join(_cache_dir(), os.path.basename(urlparse(url).path))
    if os.path.exists(file):
        return
    os.makedirs(os.path.dirname(file), exist_ok=True)
    match = torch.hub.HASH_REGEX.search(os.path.basename(file))
    logger.info("downloading %s to %s", url, file)
    torch.hub.download_url_to_file(url, file, match.group(1) if match else None, progress=False)


def _local_hint(name: str, url: str) -> str:
    file = os.path.basename(url)
    return (
        f"could not fetch {url} into torchvision's cache {_cache_dir()} (TORCH_HOME); "
        f"download it there, or pass a local file: --model ./{file} --arch torchvision:{name}"
    )


def load(ref: str, options: LoadOptions) -> Classifier:
    """A torchvision classifier with its pretrained weights, fetched into torchvision's cache.

    Raises:
        UnknownModelError: no torchvision classifier of that name (close names suggested).
        InvalidArgumentError: ``options.arch`` is set (it is for state dict files).
        ModelLoadError: the model has no weights, or they cannot be fetched or read.
    """
    if options.arch is not None:
        raise InvalidArgumentError(
            f"arch is for a state dict file; torchvision:{ref.strip()} names its own network"
        )
    name, weights, explicit = _resolve(ref)
    model_id = f"torchvision:{name}"
    if explicit and weights is not None:
        model_id = f"torchvision:{type(weights).__name__}.{weights.name}"
    if weights is None:
        raise ModelLoadError(
            f"torchvision's {name} has no pretrained weights; pass a state dict: "
            f"--model ./weights.pth --arch torchvision:{name}"
        )
    categories = weights.meta.get("categories")
    if not categories:
        raise ModelLoadError(
            f"torchvision's {weights} are features without a classifier head; choose weights "
            f"with categories, e.g. torchvision:{name}"
        )
    try:
        _download(weights.url)
    except OSError as error:  # URLError, a refused or broken download
        raise load_error(model_id, error, _local_hint(name, weights.url)) from None
    except RuntimeError as error:  # torch.hub's check of the file's hash
        raise load_error(model_id, error, "the download was damaged; try again") from None
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except OSError as error:  # an unreadable file
        raise load_error(model_id, error, _local_hint(name, weights.url)) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        cached = os.path.join(_cache_dir(), os.path.basename(weights.url))
        raise load_error(
            model_id,
            error,
            f"the cached file {cached} is damaged or not a weights-only state dict; "
            "delete it to download it again",
        ) from None
    net = _build(name, weights, len(categories))
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise load_error(
            model_id,
            error,
            f"the weights in {_cache_dir()} do not fit torchvision's {name}; delete the file "
            "to download it again",
        ) from None
    return build_classifier(
        net,
        _preprocessing(weights),
        options,
        name=model_id,
        labels=_labels(weights, len(categories)),
        num_classes=len(categories),
    )


def architecture(name: str, num_classes: int | None = None) -> Architecture:
    """A torchvision classifier with random weights (nothing is downloaded), its default
    weights' preprocessing, and the state-dict key of its classifier.

    ``name`` is anything :func:`load` takes; with a weights name, those weights' preprocessing.

    Raises:
        UnknownModelError: no torchvision classifier of that name.
    """
    model, weights, _ = _resolve(name)
    categories = None if weights is None else weights.meta.get("categories")
    if num_classes is None and categories:
        num_classes = len(categories)
    net = _build(model, weights, num_classes)
    if weights is not None:
        preprocessing = _preprocessing(weights)
    else:  # no pretrained weights: torchvision's usual ImageNet evaluation transform
        preprocessing = Preprocessing(
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            input_size=(224, 224),
            crop_fraction=224 / 256,
            interpolation="bilinear",
        )
    width = num_classes if num_classes is not None else _width(net)
    return Architecture(
        net=net,
        preprocessing=preprocessing,
        labels=None if width is None else _labels(weights, width),
        head=classifier_key(net, width),
    )


def _width(net: nn.Module) -> int | None:
    key = classifier_key(net)
    if key is None:
        return None
    weight = net.state_dict()[key]
    return int(weight.shape[0])
