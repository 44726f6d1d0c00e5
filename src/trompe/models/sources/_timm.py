"""timm's models: ``timm:convnext_tiny.fb_in1k``, ``timm:resnet18`` (its default weights).

A reference is what ``timm.create_model`` takes: an architecture with or without a pretrained
tag, or ``hf-hub:<org>/<repo>`` for a timm model on the Hugging Face hub. The weights come
through timm's own calls and cache (the Hugging Face hub's, ``$HF_HUB_CACHE``; a few older
weights from a URL into torch's); timm reads them as safetensors or with ``weights_only=True``.
The preprocessing is that of the model's pretrained config (``resolve_model_data_config``), the
class names trompe's ImageNet labels for ImageNet-1k and timm's WordNet lemmas for its other
ImageNet subsets (ImageNet-22k, 12k...).

timm's ``crop_mode="squash"`` (resize without keeping the aspect ratio) and ``"border"`` have
no equivalent in :func:`~trompe.images.center_crop_resize`: trompe uses a centred crop, which
is the same for square photos.

Example:
    >>> clf = trompe.load_model("timm:convnext_tiny.fb_in1k")  # doctest: +SKIP
    >>> clf.input_size, clf.interpolation
    ((224, 224), 'bicubic')
"""

from __future__ import annotations

import difflib
import logging
import math
from typing import TYPE_CHECKING, Any

from trompe.errors import InvalidArgumentError, ModelLoadError, UnknownModelError
from trompe.models.sources import (
    Architecture,
    LoadOptions,
    Preprocessing,
    build_classifier,
    load_error,
)
from trompe.models.sources._torchvision import classifier_key

if TYPE_CHECKING:
    from torch import nn

    from trompe.labels import Labels
    from trompe.models.classifier import Classifier

__all__ = ["architecture", "load"]

logger = logging.getLogger(__name__)

_HUB_PREFIXES = ("hf-hub:", "hf_hub:")

# timm's interpolation names -> torch.nn.functional.interpolate's modes.
_INTERPOLATIONS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}


def _check_name(ref: str) -> str:
    """The reference, stripped, once timm knows its architecture and pretrained tag.

    Raises:
        UnknownModelError: an unknown architecture (close names suggested) or tag.
    """
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    name = ref.strip()
    if not name:
        raise UnknownModelError(
            "no timm model named; write timm:<model>, e.g. timm:convnext_tiny.fb_in1k"
        )
    if name.lower().startswith(_HUB_PREFIXES):
        return name  # timm reads the architecture from the hub repository's config
    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        known = [*timm.list_models(), *timm.list_models(pretrained=True)]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(f'timm:{c}' for c in close)}? " if close else ""
        raise UnknownModelError(
            f"unknown timm model {name!r}; {hint}see `timm.list_models('{arch[:4]}*')`"
        )
    if tag:
        try:
            get_pretrained_cfg(name)
        except RuntimeError:
            tags = timm.list_models(arch, pretrained=True)
            hint = f"choose one of {', '.join(tags)}" if tags else "it has no pretrained weights"
            raise UnknownModelError(
                f"timm's {arch} has no pretrained weights tagged {tag!r}; {hint}"
            ) from None
    return name


def _check_weights(name: str) -> None:
    """Refuse, before any download, a model without pretrained weights or without a
    classifier head (self-supervised weights: features, not classes).

    Raises:
        ModelLoadError: either case; the message says what to pass instead.
    """
    from timm.models import get_pretrained_cfg

    if name.lower().startswith(_HUB_PREFIXES):
        return  # the configuration is on the hub
    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file or cfg.state_dict):
        raise ModelLoadError(
            f"timm's {name} has no pretrained weights; pass a state dict: "
            f"--model ./weights.safetensors --arch timm:{name}"
        )
    if cfg.num_classes == 0:
        raise ModelLoadError(
            f"timm's {name} are features without a classifier head; choose weights "
            f"fine-tuned on classes (see `timm.list_models('{name.split('.')[0]}*', "
            "pretrained=True)`)"
        )


def _preprocessing(net: nn.Module) -> Preprocessing:
    """The evaluation preprocessing of timm's data config: resize the shorter side to
    ``floor(size / crop_pct)``, crop ``size`` in the centre, normalise."""
    from timm.data.config import resolve_model_data_config

    config: dict[str, Any] = resolve_model_data_config(net)  # type: ignore[no-untyped-call]
    height, width = (int(s) for s in config["input_size"][-2:])
    crop_pct = float(config.get("crop_pct") or 1.0)
    scaled = math.floor(height / crop_pct)
    crop_fraction = min(1.0, height / scaled) if scaled > 0 else 1.0
    mode = str(config.get("interpolation", "bicubic"))
    interpolation = _INTERPOLATIONS.get(mode)
    if interpolation is None:
        logger.warning("timm's %r resize has no torch equivalent; trompe uses bicubic", mode)
        interpolation = "bicubic"
    if config.get("crop_mode", "center") != "center":
        logger.info(
            "timm's crop mode %r is approximated by a centred crop", config.get("crop_mode")
        )
    mean = tuple(float(v) for v in config["mean"])
    std = tuple(float(v) for v in config["std"])
    if len(mean) == 1:
        mean = mean * 3
    if len(std) == 1:
        std = std * 3
    return Preprocessing(
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        input_size=(height, width),
        crop_fraction=crop_fraction,
        interpolation=interpolation,
    )


def _num_classes(net: nn.Module) -> int | None:
    width = getattr(net, "num_classes", None)
    return int(width) if isinstance(width, int) and width > 0 else None


def _labels(net: nn.Module, num_classes: int | None) -> Labels | list[str] | None:
    """trompe's ImageNet-1k labels, timm's names for its other ImageNet subsets, else None."""
    from timm.data.imagenet_info import ImageNetInfo, infer_imagenet_subset

    if num_classes is None:
        return None
    cfg = getattr(net, "pretrained_cfg", None) or {}
    names = cfg.get("label_names")
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    subset = infer_imagenet_subset(net)
    if subset is None:
        return None
    if subset == "imagenet-1k" and num_classes == 1000:
        from trompe.labels import imagenet_labels

        return imagenet_labels()
    try:
        info = ImageNetInfo(subset)
    except (AssertionError, OSError, ValueError):  # a subset this timm has no files for
        return None
    if info.num_classes() != num_classes:  # type: ignore[no-untyped-call]
        return None
    from trompe.labels import Labels

    lemmas = [str(d).split(", ") for d in info.label_descriptions()]
    return Labels([group[0] for group in lemmas], [group[1:] for group in lemmas])


def _hint(name: str) -> str:
    from timm.models import get_pretrained_cfg

    cfg = None if name.lower().startswith(_HUB_PREFIXES) else get_pretrained_cfg(name)
    where = "the Hugging Face hub"
    if cfg is not None and cfg.hf_hub_id:
        where = f"huggingface.co/{cfg.hf_hub_id}"
    elif cfg is not None and cfg.url:
        where = str(cfg.url)
    if where.startswith("huggingface.co") or cfg is None:
        from huggingface_hub import constants

        cache = f" into the Hugging Face cache {constants.HF_HUB_CACHE} (HF_HUB_CACHE or HF_HOME)"
    else:
        import torch.hub

        cache = f" into torch's cache {torch.hub.get_dir()}/checkpoints (TORCH_HOME)"
    return (
        f"could not fetch the weights from {where}{cache}; connect once to fill the cache, "
        f"or pass a local file: --model ./model.safetensors --arch timm:{name}"
    )


def load(ref: str, options: LoadOptions) -> Classifier:
    """A timm model with its pretrained weights, fetched into the Hugging Face hub's cache.

    Raises:
        UnknownModelError: no timm model or pretrained tag of that name (close names
            suggested).
        InvalidArgumentError: ``options.arch`` is set (it is for state dict files).
        ModelLoadError: the model has no pretrained weights, or they cannot be fetched or read.
    """
    import timm

    if options.arch is not None:
        raise InvalidArgumentError(
            f"arch is for a state dict file; timm:{ref.strip()} names its own network"
        )
    name = _check_name(ref)
    model_id = f"timm:{name}"
    _check_weights(name)
    try:
        net: nn.Module = timm.create_model(name, pretrained=True)
    except OSError as error:  # offline, not found on the hub, a broken download
        if isinstance(error, FileNotFoundError) and "local cache" in str(error):
            # huggingface_hub's LocalEntryNotFoundError: a paragraph that says only this
            error = OSError("the hub is unreachable and the file is not in the local cache")
        raise load_error(model_id, error, _hint(name)) from None
    except (RuntimeError, ValueError, KeyError) as error:
        raise load_error(
            model_id,
            error,
            "timm could not build the model from these weights; delete them from the cache "
            "to download them again",
        ) from None
    net.eval()
    num_classes = _num_classes(net)
    if num_classes is None:
        raise ModelLoadError(
            f"timm's {name} has no classifier head (it gives features, not classes)"
        )
    return build_classifier(
        net,
        _preprocessing(net),
        options,
        name=model_id,
        labels=_labels(net, num_classes),
        num_classes=num_classes,
    )


def architecture(name: str, num_classes: int | None = None) -> Architecture:
    """A timm model with random weights (nothing is downloaded), the preprocessing of its
    pretrained config, and the state-dict key of its classifier.

    Raises:
        UnknownModelError: no timm model of that name.
    """
    import timm

    ref = _check_name(name)
    if ref.lower().startswith(_HUB_PREFIXES):
        raise UnknownModelError(
            f"--arch timm:{ref} needs the hub's config; name the architecture instead, "
            "e.g. --arch timm:resnet18"
        )
    extra: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    net: nn.Module = timm.create_model(ref, pretrained=False, **extra)
    net.eval()
    width = _num_classes(net)
    return Architecture(
        net=net,
        preprocessing=_preprocessing(net),
        labels=_labels(net, width),
        head=_head(net, width),
    )


def _head(net: nn.Module, num_classes: int | None) -> str | None:
    cfg = getattr(net, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier")
    if isinstance(classifier, list | tuple):
        classifier = classifier[0] if classifier else None
    keys = net.state_dict()
    if isinstance(classifier, str) and f"{classifier}.weight" in keys:
        return f"{classifier}.weight"
    return classifier_key(net, num_classes)
