"""One-call functions for notebooks and scripts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal, cast, overload

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
    SweepResult,
    Targeted,
    Untargeted,
    get_attack,
)
from trompe.attacks import sweep as run_sweep
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
#: An L1 budget (Croce & Hein's L1-APGD uses 12 on CIFAR-10; a 224 px image is ~50x larger).
DEFAULT_EPS_L1 = 100.0
#: An L0 budget in pixels: a patch-sized change, small next to 224 x 224 = 50,176 pixels.
DEFAULT_EPS_L0 = 100


def default_eps(norm: str) -> float:
    """The budget used when none is given, in the Python API's units."""
    return {
        "linf": DEFAULT_EPS_LINF,
        "l2": DEFAULT_EPS_L2,
        "l1": DEFAULT_EPS_L1,
        "l0": DEFAULT_EPS_L0,
    }[norm]


@overload
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
    sweep: None = None,
    **options: Any,
) -> AttackResult: ...


@overload
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
    sweep: Sequence[float],
    **options: Any,
) -> SweepResult: ...


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
    sweep: Sequence[float] | None = None,
    **options: Any,
) -> AttackResult | SweepResult:
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
        sweep: a list of budgets ([0, 1] units; L0: pixels) instead of ``eps``: the attack runs
            at each (see :func:`trompe.attacks.sweep`) and a
            :class:`~trompe.attacks.SweepResult` is returned.
        **options: attack hyper-parameters (``steps``, ``step_size``, ``seed``, ``queries``...;
            ``trompe attacks NAME`` lists them).

    Returns:
        The :class:`~trompe.attacks.AttackResult` (a :class:`~trompe.attacks.SweepResult` with
        ``sweep``); ``result.save("out")`` writes the files, and in Jupyter the result shows
        itself as its report picture.

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
    if info.access == "labels" and confidence is _DEFAULT:
        confidence = None  # a label-only attack sees no probabilities to raise
    goal = _resolve_goal(clf, images, target, confidence)
    if sweep is not None:
        if eps is not None or min_eps:
            raise InvalidArgumentError("give either a sweep of budgets or eps / min_eps")
        return run_sweep(
            info.cls, clf, images, goal, sweep, norm=norm, progress=progress, **options
        )
    if info.minimum_norm:
        if eps is not None or min_eps:
            raise InvalidArgumentError(
                f"attack {info.name!r} finds the smallest change by itself; it takes no eps"
            )
        runner: Attack = info.create(norm=norm, **options)
    else:
        if eps is not None:
            budget = eps
        elif info.default_eps is not None:
            budget = info.default_eps  # the attack's own (one-pixel: 1 pixel)
        else:
            budget = default_eps(norm)
        if min_eps:
            fixed = cast(type[FixedBudgetAttack], info.cls)
            runner = MinimalEps(fixed, max_eps=budget, norm=norm, **options)
        else:
            runner = info.create(eps=budget, norm=norm, **options)
    return runner(clf, images, goal, progress=progress)
