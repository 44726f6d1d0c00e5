"""One-call functions for notebooks and scripts."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from trompe.images import load_image
from trompe.models import DEFAULT_MODEL, Classifier, Prediction, load_model
from trompe.models.registry import resolve_device

__all__ = ["ImageLike", "ModelLike", "classify", "resolve_model"]

ImageLike = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor
ModelLike = str | Classifier


def resolve_model(model: ModelLike, device: str | torch.device | None = None) -> Classifier:
    """A Classifier from a registered name, or the given one (moved to ``device`` if named)."""
    if isinstance(model, Classifier):
        return model.to(resolve_device(device)) if device is not None else model
    return load_model(model, device=device)


def classify(
    image: ImageLike,
    model: ModelLike = DEFAULT_MODEL,
    *,
    k: int = 5,
    device: str | torch.device | None = None,
) -> list[Prediction]:
    """The top ``k`` classes of one image, most probable first.

    Args:
        image: a file path, a PIL image, an array or a (3, H, W) tensor in [0, 1].
        model: a registered model name or a :class:`~trompe.Classifier`.
        k: how many classes to return.
        device: where to run the model.

    Example:
        >>> import trompe
        >>> top = trompe.classify(trompe.example_path("chelsea"))
        >>> top[0].label in {"tabby cat", "tiger cat", "Egyptian cat"}
        True
    """
    clf = resolve_model(model, device)
    return clf.predict(load_image(image), k=k)[0]
