"""Hugging Face image classifiers: ``hf:org/name`` from the hub, or a ``save_pretrained`` folder.

The network comes from ``transformers.AutoModelForImageClassification`` with safetensors weights
only (pickled ``.bin`` files are refused, and no code of the repository ever runs); hub files
come through transformers' own download calls and cache. The preprocessing is read from the
model's image processor (``preprocessor_config.json``) and mapped onto trompe's
:class:`~trompe.models.sources.Preprocessing`, so that the classifier sees what the processor
would have given the network.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trompe.errors import MissingDependencyError, ModelLoadError
from trompe.models.sources import (
    LoadOptions,
    Preprocessing,
    build_classifier,
    describe_failure,
    load_error,
)

if TYPE_CHECKING:
    from trompe.labels import Labels
    from trompe.models.classifier import Classifier

__all__ = ["load", "preprocessing_from_processor"]

logger = logging.getLogger(__name__)

#: PIL's resampling codes, as transformers stores them, to torch's resize modes. Lanczos has no
#: torch counterpart: bicubic is the closest; box and hamming average like "area" and bilinear.
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "area", 5: "bilinear"}

#: The weights files that ``pickle`` would read: refused.
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt.index")

_FOLDER_HINT = "save the model with save_pretrained(folder) and pass --model hf:./folder"


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", ref))


def load(ref: str, options: LoadOptions) -> Classifier:
    """Load ``hf:<ref>``: a hub id (``google/vit-base-patch16-224``) or a local folder.

    Raises:
        ModelLoadError: the folder is missing or holds pickle weights only, the hub cannot be
            reached and the model is not cached, or the files are not an image classifier.
    """
    model_id = f"hf:{ref}"
    folder = Path(ref).expanduser()
    local = folder.is_dir()
    if not local and _looks_like_path(ref):
        raise ModelLoadError(
            f"cannot load model {model_id!r}: no folder {str(folder)!r}; {_FOLDER_HINT}"
        )
    if local:
        _check_folder(folder, model_id)
    source = str(folder) if local else ref

    from transformers import AutoModelForImageClassification

    try:
        with _quiet():
            model = AutoModelForImageClassification.from_pretrained(
                source, use_safetensors=True, trust_remote_code=False
            )
    except ImportError as error:
        raise MissingDependencyError(
            f"model {model_id!r} needs a library that is not installed: {describe_failure(error)}"
        ) from None
    except (OSError, ValueError, KeyError) as error:
        if local:
            raise load_error(model_id, error, _FOLDER_HINT) from None
        raise load_error(
            model_id,
            error,
            f"the hub could not give its safetensors weights (offline, not cached, private or "
            f"pickle-only); on a machine that can reach it, {_FOLDER_HINT}",
        ) from None
    # float32 whatever the checkpoint holds (transformers 5 keeps its dtype): attacks need
    # exact gradients, and trompe's images are float32.
    model = model.float().eval()
    config = model.config
    num_classes = int(getattr(config, "num_labels", 0)) or None
    preprocessing = _preprocessing(source, config)
    return build_classifier(
        _Logits(model),
        preprocessing,
        options,
        name=model_id,
        labels=labels_from_config(getattr(config, "id2label", None), num_classes),
        num_classes=num_classes,
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars from transformers while loading: the library never prints."""
    from transformers.utils import logging

    hf_logging: Any = logging
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _check_folder(folder: Path, model_id: str) -> None:
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"cannot load model {model_id!r}: the folder {str(folder)!r} has no config.json; "
            f"{_FOLDER_HINT}"
        )
    if any(folder.glob("*.safetensors")):
        return
    pickled = [name for name in _PICKLE_WEIGHTS if (folder / name).exists()]
    pickled += [p.name for p in folder.glob("*.bin") if p.name not in pickled]
    if pickled:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: {str(folder)!r} holds pickle weights only "
            f"({', '.join(sorted(pickled))}), which can run code when read; trompe loads "
            "safetensors only: re-save it with save_pretrained(folder)"
        )
    raise ModelLoadError(
        f"cannot load model {model_id!r}: {str(folder)!r} has no model.safetensors; {_FOLDER_HINT}"
    )


class _Logits(nn.Module):
    """A transformers classifier as a plain module: normalised images in, logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(pixel_values=images).logits
        return logits


def labels_from_config(
    id2label: Mapping[Any, Any] | None, num_classes: int | None
) -> Labels | list[str] | None:
    """The class names of a transformers config, None for the placeholder ``LABEL_i`` names.

    A 1000-class model whose names are ImageNet's (every class's first name is one of
    trompe's names or synonyms for that index) gets trompe's ImageNet labels, with synonyms.
    """
    if not id2label:
        return None
    try:
        indexed = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    if sorted(indexed) != list(range(len(indexed))):
        return None
    if num_classes is not None and len(indexed) != num_classes:
        return None
    names = [indexed[i] for i in range(len(indexed))]
    if all(re.fullmatch(r"LABEL_\d+", name) for name in names):
        return None
    if len(names) == 1000:
        from trompe.labels import imagenet_labels

        imagenet = imagenet_labels()
        if all(_same_class(imagenet, i, name) for i, name in enumerate(names)):
            return imagenet
    return [name if name.strip() else f"class {i}" for i, name in enumerate(names)]


def _same_class(imagenet: Labels, index: int, name: str) -> bool:
    known = {_norm(imagenet[index]), *(_norm(s) for s in imagenet.synonyms(index))}
    return any(_norm(part) in known for part in name.split(","))


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").split())


def _preprocessing(source: str, config: Any) -> Preprocessing:
    """The preprocessing of the model's image processor, or defaults when it has none."""
    attrs = _processor_attributes(source)
    if attrs is None:
        side = getattr(config, "image_size", None)
        size = (int(side), int(side)) if isinstance(side, int) else None
        logger.info(
            "model %s has no image processor config: input in [0, 1] at size %s; pass mean, "
            "std, input_size to override",
            source,
            size,
        )
        return Preprocessing(input_size=size)
    return preprocessing_from_processor(attrs)


def _processor_attributes(source: str) -> dict[str, Any] | None:
    """The processor's settings with its class defaults filled in; None when it has none."""
    try:
        from transformers import AutoImageProcessor

        auto: Any = AutoImageProcessor
        processor = auto.from_pretrained(source, trust_remote_code=False)
    except Exception:
        processor = None
    if processor is not None:
        names = [
            "do_resize",
            "size",
            "resample",
            "do_center_crop",
            "crop_size",
            "crop_pct",
            "do_rescale",
            "rescale_factor",
            "rescale_offset",
            "do_normalize",
            "image_mean",
            "image_std",
        ]
        return {name: getattr(processor, name, None) for name in names}
    try:
        from transformers import image_processing_utils

        mixin: Any = getattr(image_processing_utils, "ImageProcessingMixin")  # noqa: B009
        data, _ = mixin.get_image_processor_dict(source)
    except Exception:
        path = Path(source) / "preprocessor_config.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    return dict(data) if isinstance(data, Mapping) else None


def _get(size: Any, key: str) -> int | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size if key == "shortest_edge" else None
    value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
    return int(value) if value else None


def _triple(values: Any, default: float) -> tuple[float, float, float]:
    if values is None:
        return (default,) * 3
    if isinstance(values, int | float):
        return (float(values),) * 3
    items = [float(v) for v in values]
    if len(items) == 1:
        items *= 3
    return (items[0], items[1], items[2])


def preprocessing_from_processor(attrs: Mapping[str, Any]) -> Preprocessing:
    """Map a transformers image processor's settings to trompe's preprocessing.

    The processor multiplies 0-255 pixels by ``rescale_factor`` (minus 1 with
    ``rescale_offset``), then normalises with ``image_mean``/``image_std``; trompe's classifier
    takes pixels in [0, 1] and normalises once, so both steps fold into one mean and std.
    Sizes: ``height``/``width`` resize straight to that size (then ``crop_size`` if
    ``do_center_crop``); ``shortest_edge`` with ``crop_pct`` is ConvNeXt's crop (warped
    without crop from 384 up); ``shortest_edge`` with ``crop_size`` is the classic
    resize-then-crop.

    Example:
        >>> p = preprocessing_from_processor({"size": {"shortest_edge": 224}, "crop_pct": 0.875})
        >>> p.input_size, p.crop_fraction
        ((224, 224), 0.875)
    """
    mean = _triple(attrs.get("image_mean"), 0.5)
    std = _triple(attrs.get("image_std"), 0.5)
    if attrs.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    rescale = attrs.get("rescale_factor") or 1 / 255
    if attrs.get("do_rescale") is False:
        rescale = 1.0
    offset = 1.0 if attrs.get("rescale_offset") else 0.0
    gain = 255.0 * float(rescale)  # what a [0, 1] pixel is multiplied by before normalising
    mean_01 = tuple((m + offset) / gain for m in mean)
    std_01 = tuple(s / gain for s in std)

    size = attrs.get("size")
    crop = attrs.get("crop_size") if attrs.get("do_center_crop") else None
    height, width = _get(size, "height"), _get(size, "width")
    shortest = _get(size, "shortest_edge")
    if isinstance(crop, int):  # an old config's square crop
        crop = {"height": crop, "width": crop}
    crop_h, crop_w = _get(crop, "height"), _get(crop, "width")
    input_size: tuple[int, int] | None = None
    fraction = 1.0
    if height and width:
        input_size = (height, width)
        if crop_h and crop_w and (crop_h, crop_w) != (height, width):
            input_size = (crop_h, crop_w)
            fraction = min(1.0, min(crop_h / height, crop_w / width))
    elif shortest:
        crop_pct = attrs.get("crop_pct")
        if crop_h and crop_w:
            input_size = (crop_h, crop_w)
            fraction = min(1.0, min(crop_h, crop_w) / shortest)
        elif crop_pct is not None:
            input_size = (shortest, shortest)
            if shortest < 384:
                fraction = min(1.0, float(crop_pct))
        else:
            input_size = (shortest, shortest)
    if attrs.get("do_resize") is False:
        input_size, fraction = None, 1.0
    resample = attrs.get("resample")
    code = getattr(resample, "value", resample)
    interpolation = _RESAMPLE.get(int(code), "bilinear") if isinstance(code, int) else "bilinear"
    return Preprocessing(
        mean=(mean_01[0], mean_01[1], mean_01[2]),
        std=(std_01[0], std_01[1], std_01[2]),
        input_size=input_size,
        crop_fraction=fraction,
        interpolation=interpolation,
    )
