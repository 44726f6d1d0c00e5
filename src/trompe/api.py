"""One-call functions for notebooks and scripts."""

from __future__ import annotations

import os
from typing import Any, Literal, cast

import numpy as np
import torch
from PIL import Image

from trompe.attacks import (
    DEFAULT_TARGET_CONFIDENCE,
    Attack,
    AttackResult,
    FixedBudgetAttack,
    Goal,
    MinimalEps,
    Norm,
    Targeted,
    Untargeted,
    get_attack,
)
from trompe.attacks.base import ProgressCallback
from trompe.errors import InvalidArgumentError
from trompe.images import load_image, quantize
from trompe.models import DEFAULT_MODEL, Classifier, Prediction, load_model
from trompe.models.registry import resolve_device

__all__ = ["ImageLike", "ModelLike", "attack", "classify", "resolve_model"]

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


def _resolve_goal(
    clf: Classifier,
    images: torch.Tensor,
    target: str | int | None,
    confidence: float | object | None,
) -> Goal:
    """A targeted goal for ``target`` (name, synonym or index), else an untargeted one."""
    if target is None:
        labels = clf.probs(images).argmax(dim=1).cpu()
        conf = None if confidence is _DEFAULT else confidence
        return Untargeted(labels, conf)  # type: ignore[arg-type]
    index = clf.labels.index(target)
    conf = DEFAULT_TARGET_CONFIDENCE if confidence is _DEFAULT else confidence
    return Targeted(torch.full((images.shape[0],), index), conf)  # type: ignore[arg-type]


_DEFAULT = object()
#: The L-inf budget of the demos, in [0, 1] units: 10 pixel levels.
DEFAULT_EPS_LINF = 10 / 255
#: An L2 budget of similar visibility on a model-size image, in [0, 1] units.
DEFAULT_EPS_L2 = 3.0


def attack(
    image: ImageLike,
    target: str | int | None = None,
    *,
    model: ModelLike = DEFAULT_MODEL,
    attack: str = "pgd",
    eps: float | None = None,
    norm: Norm | None = None,
    confidence: float | object | None = _DEFAULT,
    min_eps: bool = False,
    resolution: Literal["full", "model"] = "full",
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> AttackResult:
    """Make one adversarial image: the photo, changed so that the model sees ``target``.

    Args:
        image: a file path, a PIL image, an array or a (3, H, W) tensor in [0, 1].
        target: the class to reach (name, synonym or index, e.g. ``"lemon"`` or ``951``);
            ``None`` for an untargeted attack away from the model's current top-1.
        model: a registered model name or a :class:`~trompe.Classifier`.
        attack: a registered attack name (see :func:`trompe.attacks.list_attacks`).
        eps: the budget in [0, 1] units (default ``10 / 255`` for L-inf, ``3.0`` for L2);
            not used by minimum-norm attacks (``cw``); the largest budget tried with
            ``min_eps``.
        norm: ``"linf"`` or ``"l2"``; default the attack's first (``linf``, or ``l2`` for
            ``cw``).
        confidence: the probability the goal class must reach; default 0.99 with a target,
            none (a changed top-1 is enough) without.
        min_eps: search the smallest budget that works, by bisection up to ``eps``.
        resolution: ``"full"`` attacks the photo at its own size through the model's
            differentiable crop and resize, so the adversarial image has the photo's size;
            ``"model"`` attacks the model-size crop.
        device: where to run.
        progress: called after each step with a :class:`~trompe.attacks.Progress`.
        **options: attack hyper-parameters (``steps``, ``step_size``, ``seed``...).

    Returns:
        The :class:`~trompe.attacks.AttackResult`; ``result.save("out")`` writes the files, and
        in Jupyter the result shows itself as its report picture.

    Example:
        >>> result = trompe.attack(trompe.example_path("chelsea"), "lemon")  # doctest: +SKIP
        >>> result.success, result.class_prob(951)                            # doctest: +SKIP
        (tensor([True]), 0.997...)
    """
    info = get_attack(attack)
    norm = norm or info.norms[0]
    clf = resolve_model(model, device)
    images = load_image(image).unsqueeze(0).to(clf.device)
    if resolution == "model":
        images = quantize(clf.preprocess(images).clamp(0, 1))
    elif resolution != "full":
        raise InvalidArgumentError(f"resolution must be 'full' or 'model', got {resolution!r}")
    goal = _resolve_goal(clf, images, target, confidence)
    if info.minimum_norm:
        if eps is not None or min_eps:
            raise InvalidArgumentError(
                f"attack {info.name!r} finds the smallest change by itself; it takes no eps"
            )
        if norm not in info.norms:
            raise InvalidArgumentError(
                f"attack {info.name!r} supports the {' or '.join(info.norms)} threat model, "
                f"not {norm!r}"
            )
        runner: Attack = info.cls(**options)
    else:
        budget = (
            eps if eps is not None else (DEFAULT_EPS_LINF if norm == "linf" else DEFAULT_EPS_L2)
        )
        fixed = cast(type[FixedBudgetAttack], info.cls)
        if min_eps:
            runner = MinimalEps(fixed, max_eps=budget, norm=norm, **options)
        else:
            runner = fixed(eps=budget, norm=norm, **options)
    return runner(clf, images, goal, progress=progress)
