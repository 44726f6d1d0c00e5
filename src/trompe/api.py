"""One-call functions for notebooks and scripts, and the argument policy of every front end.

:func:`classify` and :func:`attack` are the calls; :func:`check_budget` and
:func:`budget_from_levels` hold the rules on budgets (eps, a sweep, the smallest-eps search)
that the command line and the web page apply before any work, so that they cannot disagree.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args, overload

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
from trompe.attacks.base import ProgressCallback, check_count, check_seed
from trompe.attacks.gradient import GradientOptions
from trompe.attacks.universal import UniversalProgressCallback, UniversalResult
from trompe.errors import BudgetWarning, InvalidArgumentError
from trompe.evaluation import (
    EvalConfig,
    EvalProgress,
    EvaluationReport,
    Stage,
    load_data,
    resolve_cascade,
    run_evaluation,
)
from trompe.evaluation._types import PRECISIONS
from trompe.evaluation.cascade import EVAL_NORMS
from trompe.evaluation.distributed import detect as detect_distributed
from trompe.evaluation.run import check_shard
from trompe.evaluation.survival import Survival, check_survival
from trompe.evaluation.transfer import TransferReport, check_transfer
from trompe.images import load_image, quantize
from trompe.models import DEFAULT_MODEL, Classifier, Prediction, load_model
from trompe.models.registry import resolve_device
from trompe.units import LEVELS, budget_to_unit, format_budget, max_budget

__all__ = [
    "DEFAULT_EVAL_BATCH_SIZE",
    "Budget",
    "ImageLike",
    "ModelLike",
    "attack",
    "budget_from_levels",
    "check",
    "check_budget",
    "classify",
    "default_budget",
    "evaluate",
    "evaluation_budgets",
    "evaluation_device",
    "resolve_model",
    "warn_tiny_budget",
]

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


def default_budget(attack: str, norm: str | None = None) -> float | None:
    """The budget :func:`attack` uses when none is given, in the Python API's units: the
    attack's own default (one-pixel: 1 pixel), else :func:`default_eps` of the threat model;
    ``None`` for a minimum-norm attack, which takes none.

    Args:
        attack: a registered attack name.
        norm: the threat model; default the attack's first.

    Example:
        >>> default_budget("pgd") == 10 / 255, default_budget("cw")
        (True, None)
    """
    info = get_attack(attack)
    if info.minimum_norm:
        return None
    if info.default_eps is not None:
        return info.default_eps
    return default_eps(norm or info.norms[0])


@dataclass(frozen=True)
class Budget:
    """A checked budget request, in the Python API's units ([0, 1]; L0: pixels).

    Attributes:
        attack: the attack's registry name.
        norm: the threat model: the one asked for, else the attack's first.
        eps: the budget; the largest one tried with ``min_eps``; ``None`` for the attack's
            default (and always for minimum-norm attacks and sweeps).
        sweep: the budgets of a sweep, in the order given, or ``None``.
        min_eps: search the smallest budget that works, up to ``eps``.
    """

    attack: str
    norm: Norm
    eps: float | None = None
    sweep: tuple[float, ...] | None = None
    min_eps: bool = False

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`attack` that this budget sets."""
        out: dict[str, Any] = {
            "attack": self.attack,
            "norm": self.norm,
            "eps": self.eps,
            "min_eps": self.min_eps,
        }
        if self.sweep is not None:
            out["sweep"] = list(self.sweep)
        return out


def check_budget(
    attack: str,
    *,
    norm: str | None = None,
    eps: float | None = None,
    sweep: Sequence[float] | None = None,
    min_eps: bool = False,
    eps_name: str = "eps",
    min_eps_name: str = "min_eps",
) -> Budget:
    """Check that an attack takes this threat model and this kind of budget, before any work.

    Budgets are in the Python API's units; their values are checked by the attack itself.

    Args:
        attack: a registered attack name.
        norm: the threat model; default the attack's first.
        eps: one budget (the largest one with ``min_eps``).
        sweep: several budgets, instead of ``eps``.
        min_eps: search the smallest budget up to ``eps``.
        eps_name: what the caller's user calls ``eps`` (``"--eps"`` on the command line), for
            the error messages.
        min_eps_name: the same for ``min_eps``.

    Returns:
        The request, with the attack's registry name and the threat model filled in.

    Raises:
        UnknownAttackError: no such attack (the message suggests the nearest names).
        InvalidArgumentError: a threat model the attack lacks, a budget given to an attack that
            finds the smallest change by itself, or a sweep mixed with ``eps`` or ``min_eps``.
    """
    info = get_attack(attack)
    chosen = norm or info.norms[0]
    if chosen not in get_args(Norm):
        known = ", ".join(get_args(Norm))
        raise InvalidArgumentError(f"norm must be one of {known}, got {chosen!r}")
    if chosen not in info.norms:
        raise InvalidArgumentError(
            f"attack {info.name!r} supports the {', '.join(info.norms)} threat model, not "
            f"{chosen!r}; see `trompe attacks` for the attacks of each"
        )
    if sweep is not None:
        if min_eps:
            raise InvalidArgumentError(f"give {min_eps_name} one largest budget, not a list")
        if eps is not None:
            raise InvalidArgumentError(f"give either a sweep of budgets or {eps_name}")
    elif info.minimum_norm and (eps is not None or min_eps):
        given = eps_name if eps is not None else min_eps_name
        raise InvalidArgumentError(
            f"attack {info.name!r} finds the smallest change by itself; it takes no {given} "
            "(a list of budgets gives a sweep of its results)"
        )
    return Budget(
        attack=info.name,
        norm=chosen,
        eps=None if eps is None else float(eps),
        sweep=None if sweep is None else tuple(float(b) for b in sweep),
        min_eps=min_eps,
    )


def budget_from_levels(
    attack: str,
    levels: Sequence[float] | None,
    *,
    norm: str | None = None,
    min_eps: bool = False,
    eps_name: str = "eps",
    min_eps_name: str = "min_eps",
) -> Budget:
    """A budget as people give it, checked and in the Python API's units.

    People count in 0-255 pixel levels (``10``, not ``10 / 255``) and L0 budgets in pixels;
    one value is a budget, several a sweep. The command line's ``--eps`` and the web page's
    field come here.

    Args:
        attack: a registered attack name.
        levels: the budgets in 0-255 levels (L0: pixels); ``None`` or empty for the default.
        norm: the threat model; default the attack's first.
        min_eps: search the smallest budget up to the (single) one given.
        eps_name: what the caller's user calls the budget, for the error messages.
        min_eps_name: the same for ``min_eps``.

    Raises:
        InvalidArgumentError: a budget that is not above 0, an L-inf budget above 255 levels,
            a fractional number of L0 pixels, and whatever :func:`check_budget` refuses.

    Example:
        >>> budget_from_levels("pgd", [8]).eps == 8 / 255
        True
        >>> budget_from_levels("pgd", [1, 2, 4]).sweep == (1 / 255, 2 / 255, 4 / 255)
        True
    """
    chosen = norm or get_attack(attack).norms[0]
    values = [float(v) for v in levels or ()]
    for value in values:
        if not value > 0 or not math.isfinite(value):
            raise InvalidArgumentError(
                f"{eps_name} must be a number of levels above 0, got {value}"
            )
    if chosen == "linf" and values and max(values) > LEVELS:
        raise InvalidArgumentError(f"{eps_name} is in 0-{LEVELS} pixel levels; got {max(values):g}")
    if chosen == "l0" and any(not value.is_integer() for value in values):
        raise InvalidArgumentError(f"an L0 budget ({eps_name}) is a whole number of pixels")
    converted = [budget_to_unit(value, chosen) for value in values]
    return check_budget(
        attack,
        norm=chosen,
        eps=converted[0] if len(converted) == 1 else None,
        sweep=converted if len(converted) > 1 else None,
        min_eps=min_eps,
        eps_name=eps_name,
        min_eps_name=min_eps_name,
    )


def warn_tiny_budget(eps: float, norm: str, *, stacklevel: int = 3) -> None:
    """Warn (:class:`~trompe.errors.BudgetWarning`) about a budget under one 8-bit level.

    Such a budget cannot change one 8-bit pixel value: the attack would return the photo
    unchanged. It is nearly always a budget in the other unit: the command line counts 0-255
    levels (``--eps 8``), the Python API [0, 1] units (``eps=8 / 255``). L0 budgets count
    pixels and are left alone.
    """
    if norm == "l0" or not 0 < eps < 1 / LEVELS:
        return
    levels = eps * LEVELS
    warnings.warn(
        BudgetWarning(
            f"the {norm} budget {eps:.3g} in [0, 1] units is {levels:.3g} of 255 levels, "
            "under one 8-bit level: it changes no pixel of the 8-bit output. The command "
            f"line's --eps counts 0-255 levels (--eps {levels:.3g} is this budget; --eps "
            f"{levels * LEVELS:.3g} may be what you meant); the Python API's eps is in [0, 1] "
            "(8 / 255 for 8 levels)"
        ),
        stacklevel=stacklevel,
    )


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
    survive: Any = None,
    samples: int | None = None,
    diversity: float = 0.0,
    translation: int = 0,
    variance: int = 0,
    momentum: float = 0.0,
    transfer_to: str | Classifier | Sequence[str | Classifier] | None = None,
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
    survive: Any = None,
    samples: int | None = None,
    diversity: float = 0.0,
    translation: int = 0,
    variance: int = 0,
    momentum: float = 0.0,
    transfer_to: str | Classifier | Sequence[str | Classifier] | None = None,
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
    survive: Any = None,
    samples: int | None = None,
    diversity: float = 0.0,
    translation: int = 0,
    variance: int = 0,
    momentum: float = 0.0,
    transfer_to: str | Classifier | Sequence[str | Classifier] | None = None,
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
        survive: transformations the image must survive (expectation over transformation):
            ``"jpeg:50-95,resize:0.5-1.0"``, a list of specs, or a
            :class:`~trompe.transforms.TransformChain`; the gradient is averaged over random
            draws of them, and ``result.survival`` says how the saved 8-bit image fares under
            the real ones (Pillow's JPEG encoder, resizes...). Iterative attacks only (fgsm,
            pgd, mifgsm, pgd-l0).
        samples: views averaged per step (default 4 with ``survive``, else 1).
        diversity, translation, variance, momentum: the gradient hook's input diversity,
            translation invariance, variance tuning and momentum, for transfer to other models
            (see :class:`~trompe.attacks.gradient.GradientOptions`); iterative attacks only.
        transfer_to: held-out models (names or classifiers) that the adversarial image is
            shown to afterwards; ``result.transfer`` says what each of them sees. The attack
            then uses its whole budget of steps (``early_stop=False`` unless given): stopping
            at the first success on the attacked model leaves a change too small to transfer.
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
    request = check_budget(attack, norm=norm, eps=eps, sweep=sweep, min_eps=min_eps)
    info = get_attack(request.attack)
    norm = request.norm
    hook = _gradient_hook(
        info.name,
        info.cls,
        options,
        survive=survive,
        samples=samples,
        diversity=diversity,
        translation=translation,
        variance=variance,
        momentum=momentum,
    )
    held_out = [] if transfer_to is None else _model_list(transfer_to)
    if held_out and "early_stop" not in options and "early_stop" in _parameters(info.cls):
        options["early_stop"] = False  # the transfer papers' setting: every step is taken
    for value in [eps] if sweep is None else list(sweep):
        if value is not None:
            warn_tiny_budget(float(value), norm)
    clf = resolve_model(model, device)
    images = load_image(image).unsqueeze(0).to(clf.device)
    if resolution == "model":
        images = quantize(clf.preprocess(images).clamp(0, 1))
    elif resolution != "full":
        raise InvalidArgumentError(f"resolution must be 'full' or 'model', got {resolution!r}")
    if info.access == "labels" and confidence is _DEFAULT:
        confidence = None  # a label-only attack sees no probabilities to raise
    goal = _resolve_goal(clf, images, target, confidence)
    # The file the image came from: the result's save() never writes onto it, force or not.
    sources = (Path(image),) if isinstance(image, str | os.PathLike) else ()
    if sweep is not None:
        swept = run_sweep(
            info.cls, clf, images, goal, sweep, norm=norm, progress=progress, **options
        )
        runs = [dataclasses.replace(run, sources=sources) for run in swept.results]
        return dataclasses.replace(swept, results=runs)
    if info.minimum_norm:
        runner: Attack = info.create(norm=norm, **options)
    else:
        budget = eps if eps is not None else default_budget(info.name, norm)
        assert budget is not None  # a fixed-budget attack always has a default
        if min_eps:
            fixed = cast(type[FixedBudgetAttack], info.cls)
            runner = MinimalEps(fixed, max_eps=budget, norm=norm, **options)
        else:
            runner = info.create(eps=budget, norm=norm, **options)
    result = dataclasses.replace(runner(clf, images, goal, progress=progress), sources=sources)
    if hook.transforms is not None:
        result = dataclasses.replace(
            result, survival=check_survival(clf, result.adversarial, result.goal, hook.transforms)
        )
    if held_out:
        models = [resolve_model(other, device) for other in held_out]
        result = dataclasses.replace(
            result,
            transfer=check_transfer(
                models, result.adversarial, result.goal, original=result.original
            ),
        )
    return result


def _parameters(cls: type) -> Mapping[str, Any]:
    """The keyword arguments an attack class takes."""
    import inspect

    return inspect.signature(cls).parameters


def _gradient_hook(
    name: str, cls: type, options: dict[str, Any], **hook_options: Any
) -> GradientOptions:
    """The gradient hook's options, checked; put into the attack's ``options`` when any is on
    (an attack without a hook refuses them in one line)."""
    hook = GradientOptions(transforms=hook_options.pop("survive"), **hook_options)
    if hook.active:
        check_gradient_options(name, cls)
        options["gradient"] = hook
    return hook


def check_gradient_options(name: str, cls: type) -> None:
    """Refuse, in one line, gradient-hook options for an attack that has no gradient hook."""
    import inspect

    if "gradient" not in inspect.signature(cls).parameters:
        raise InvalidArgumentError(
            f"attack {name!r} has no gradient hook: --survive, --diversity, --translation, "
            "--variance, --momentum and --samples work with fgsm, pgd, mifgsm and pgd-l0"
        )


def _model_list(
    models: str | Classifier | Sequence[str | Classifier],
) -> list[str | Classifier]:
    """Models given as one, a comma-separated text or a list."""
    if isinstance(models, Classifier):
        return [models]
    if isinstance(models, str):
        names = [name.strip() for name in models.split(",")]
        if not all(names):
            raise InvalidArgumentError(f"an empty model name in {models!r}")
        return list(names)
    return list(models)


# -- evaluation --------------------------------------------------------------------------------

#: Images per chunk of an evaluation: the unit of work, of seeding and of resume.
DEFAULT_EVAL_BATCH_SIZE = 100


def evaluation_budgets(
    eps: float | Sequence[float],
    norm: str,
    *,
    levels: bool = False,
    eps_name: str = "eps",
) -> tuple[float, ...]:
    """An evaluation's budgets, checked, ascending and without repeats, in [0, 1] units.

    Args:
        eps: one budget or several.
        norm: ``"linf"`` or ``"l2"``.
        levels: the budgets are in 0-255 levels (the command line's ``--eps``; L2 budgets in
            0-255 units), rather than the Python API's [0, 1] units.
        eps_name: what the caller's user calls the budget, for the error messages.

    Raises:
        InvalidArgumentError: another threat model, no budget, a budget that is not a number
            above 0, an L-inf budget above the whole range (1, or 255 levels).

    Example:
        >>> evaluation_budgets([8 / 255, 2 / 255, 8 / 255], "linf") == (2 / 255, 8 / 255)
        True
        >>> evaluation_budgets([1, 2, 4], "linf", levels=True) == (1 / 255, 2 / 255, 4 / 255)
        True
    """
    if norm not in EVAL_NORMS:
        raise InvalidArgumentError(
            f"an evaluation runs under the linf or l2 threat model, not {norm!r}"
        )
    given = [eps] if isinstance(eps, int | float) else list(eps)
    if not given:
        raise InvalidArgumentError(f"give {eps_name} at least one budget")
    unit = "0-255 levels" if levels else "[0, 1] units"
    values = []
    for value in given:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgumentError(f"{eps_name} must be numbers, got {value!r}")
        number = float(value)
        if not math.isfinite(number) or number <= 0:
            raise InvalidArgumentError(
                f"{eps_name} must be above 0 (a budget of 0 leaves every image as it is), "
                f"got {value!r}"
            )
        values.append(number)
    top = LEVELS if levels else 1.0
    if norm == "linf" and max(values) > top:
        hint = (
            "e.g. --eps 8 for 8/255"
            if levels
            else f"e.g. eps=8 / 255 for 8 levels; {max(values):g} levels is {max(values):g} / 255"
        )
        raise InvalidArgumentError(
            f"an L-inf {eps_name} is in {unit}, at most {top:g} (the whole range); got "
            f"{max(values):g} ({hint})"
        )
    converted = sorted(budget_to_unit(v, norm) if levels else v for v in values)
    unique: list[float] = []
    for value in converted:
        if not unique or value - unique[-1] > 1e-12 * max(1.0, value):
            unique.append(value)
    return tuple(unique)


def _check_l2_range(eps: Sequence[float], clf: Classifier) -> None:
    """Refuse an L2 budget larger than any change an image of the model's input size can have."""
    if clf.input_size is None:
        return
    largest = max_budget("l2", (3, *clf.input_size))
    if max(eps) > largest:
        raise InvalidArgumentError(
            f"the L2 budget {format_budget(max(eps), 'l2')} is larger than any change of a "
            f"{clf.input_size[0]}x{clf.input_size[1]} image ({format_budget(largest, 'l2')}, "
            f"{largest:.4g} in [0, 1] units); give a smaller budget"
        )


def evaluation_device(device: str | torch.device | None) -> str | torch.device | None:
    """The device of this process: under ``torchrun`` (``WORLD_SIZE`` > 1), a bare ``cuda``
    means this process's own GPU, ``cuda:LOCAL_RANK``; anything else is left as given."""
    if device is None or str(device) != "cuda":
        return device
    env = detect_distributed()
    return device if env is None else f"cuda:{env.local_rank}"


def evaluate(
    model: ModelLike,
    data: Any,
    *,
    eps: float | Sequence[float],
    norm: str = "linf",
    attacks: str | Sequence[str | Stage] = "standard",
    n: int | None = None,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    seed: int = 0,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    force: bool = False,
    shard: tuple[int, int] | None = None,
    checks: bool = True,
    save_adversarial: bool = False,
    strict: bool = False,
    progress: Callable[[EvalProgress], None] | None = None,
) -> EvaluationReport:
    """Robust accuracy of a model on a data set: the AutoAttack-grade cascade at each budget.

    Every image the model classifies correctly is attacked by each stage of the cascade in
    turn, at each budget from the smallest up, until one breaks it; a success counts only on
    the 8-bit image within the budget, re-predicted in float32. An image broken at a budget
    stays broken at every larger one, so robust accuracy never rises with the budget.

    Args:
        model: a registered model name or a :class:`~trompe.Classifier`.
        data: a folder of class subfolders, a ``.csv``/``.jsonl`` manifest, a built-in name
            (``"digits"``, ``"foolbox:imagenet"``...), a pair ``(images, labels)`` of tensors,
            a ``Dataset`` or a ``DataLoader`` (see :func:`trompe.evaluation.load_data`).
        eps: one budget or several, in [0, 1] units (L2 too: the norm of the change of an
            image in [0, 1]); sorted and deduplicated.
        norm: ``"linf"`` or ``"l2"``.
        attacks: ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square, as AutoAttack's standard
            version), ``"fast"`` (APGD-CE, APGD-T), ``"apgd-ce,square"`` or a list of attack
            names or :class:`~trompe.evaluation.Stage` values.
        n: evaluate a deterministic subset of this many images (spread over the classes).
        batch_size: images per chunk (the unit of work, seeding and resume).
        seed: the seed every chunk's attacks derive theirs from.
        precision: ``"fp32"``, or ``"bf16"``/``"fp16"`` to run the attacks under autocast
            (every success is re-checked in float32).
        device: where to run the model.
        out: a folder for the per-image records (written as they are done), the summary, the
            figure and the configuration; ``None`` writes nothing.
        resume: continue the run recorded in ``out`` (the configuration must be the same).
        force: start over in an ``out`` that holds a run already.
        shard: ``(i, k)``: evaluate only shard ``i`` of ``k`` (``0 <= i < k``), for job arrays;
            :func:`trompe.evaluation.merge` combines the shards written into one ``out``.
        checks: run the gradient-masking checks (named warnings in the report).
        save_adversarial: also write the adversarial images into ``out``.
        strict: an unreadable image is an error rather than skipped and listed.
        progress: called with an :class:`~trompe.evaluation.EvalProgress` as the work advances.

    Returns:
        The :class:`~trompe.evaluation.EvaluationReport`: clean accuracy, robust accuracy per
        budget, per-attack contributions, per-image records, warnings and timing; in Jupyter it
        shows itself as its figure.

    Raises:
        InvalidArgumentError: a budget, norm, count, precision or shard out of range, an
            attack without this threat model, data the model cannot take, a resume of another
            configuration.
        UnknownAttackError: an unknown attack name.
        OutputExistsError: ``out`` holds a run already and neither ``resume`` nor ``force``.

    Example:
        >>> clf = trompe.load_model("digits_robust")                       # doctest: +SKIP
        >>> report = trompe.evaluate(clf, "digits", eps=[16 / 255, 32 / 255])  # doctest: +SKIP
        >>> report.clean_accuracy, report.robust_accuracy                   # doctest: +SKIP
    """
    budgets = evaluation_budgets(eps, norm)
    for value in budgets:
        warn_tiny_budget(value, norm)
    if n is not None:
        check_count("n", n, low=1)
    check_count("batch_size", batch_size, low=1)
    if seed is None:
        raise InvalidArgumentError("seed must be a whole number (an evaluation is reproducible)")
    check_seed(seed)
    if precision not in PRECISIONS:
        raise InvalidArgumentError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if shard is not None:
        shard = check_shard(shard)
    if resume and force:
        raise InvalidArgumentError(
            "resume continues the run in the output folder, force starts it over: give one"
        )
    folder = None if out is None else Path(out)
    if folder is None and (resume or save_adversarial or shard is not None):
        wanted = "resume" if resume else "save_adversarial" if save_adversarial else "shard"
        raise InvalidArgumentError(f"{wanted} needs an output folder (out)")
    if folder is not None and folder.exists() and not folder.is_dir():
        raise InvalidArgumentError(f"out {str(folder)!r} is a file, not a folder; choose another")
    cascade, stages = resolve_cascade(attacks, norm)
    clf = resolve_model(model, evaluation_device(device))
    if norm == "l2":
        _check_l2_range(budgets, clf)
    dataset = load_data(data, clf, n=n, strict=strict)
    config = EvalConfig(
        model=clf.describe(),
        data=dataset.description,
        norm=norm,
        eps=budgets,
        stages=stages,
        cascade=cascade,
        batch_size=batch_size,
        seed=seed,
        precision=cast(Any, precision),
        checks=checks,
    )
    return run_evaluation(
        clf,
        dataset,
        config,
        out=folder,
        resume=resume,
        force=force,
        shard=shard,
        save_adversarial=save_adversarial,
        progress=progress,
    )


# -- real world: survival (issue 13, part 1) ---------------------------------------------------


#: The transforms ``trompe check`` and :func:`check` try when none are given.
DEFAULT_SURVIVE = "jpeg:50-95"


def check(
    image: ImageLike,
    target: str | int | None = None,
    *,
    model: ModelLike = DEFAULT_MODEL,
    survive: Any = DEFAULT_SURVIVE,
    original: ImageLike | None = None,
    device: str | torch.device | None = None,
) -> Survival:
    """How an image fares under real transforms: ``trompe check``.

    The image is rounded to 8 bits, put through the real transforms of ``survive`` (Pillow's
    JPEG encoder at each quality of a grid, Pillow resizes, crops, blurs...; see
    :mod:`trompe.transforms`) and classified again after each. The goal is met on a row when
    ``target`` is the top-1 (without a target: when the class the model gives ``original`` is
    not). The image survives when the goal is met as it is and on every row.

    Args:
        image: the image to check (a file path, a PIL image, an array or a (3, H, W) tensor).
        target: the class that should stay top-1 (name, synonym or index).
        model: a registered model name or a :class:`~trompe.Classifier`.
        survive: the transforms: a spec text (``"jpeg:50-95,resize:0.5-1"``), a list of specs
            or a :class:`~trompe.transforms.TransformChain`.
        original: without ``target``, the photo the image was made from: its top-1 is the true
            class that should stay away (an untargeted check).
        device: where to run the model.

    Returns:
        A :class:`~trompe.evaluation.survival.Survival`; ``.survived()``, ``.rate()`` and
        ``.to_json()`` hold the rows.

    Raises:
        InvalidArgumentError: neither ``target`` nor ``original``, or both; a bad spec.
        UnknownLabelError: an unknown target name.

    Example:
        >>> survival = trompe.check("adversarial.png", "pelican")  # doctest: +SKIP
        >>> survival.survived(), survival.to_json()["rows"][1]["setting"]  # doctest: +SKIP
        (True, 'quality 95')
    """
    from trompe.transforms import parse_transforms

    chain = parse_transforms(survive)
    if target is None and original is None:
        raise InvalidArgumentError(
            "give the target class that should survive, or the original photo (an untargeted "
            "check: its class should stay away)"
        )
    if target is not None and original is not None:
        raise InvalidArgumentError("give either a target or the original photo, not both")
    clf = resolve_model(model, device)
    images = load_image(image).unsqueeze(0)
    goal: Goal
    if target is not None:
        goal = Targeted(clf.labels.index(target))
    else:
        assert original is not None
        before = load_image(original).unsqueeze(0).to(clf.device)
        goal = Untargeted(clf.probs(before).argmax(dim=1).cpu())
    return check_survival(clf, images, goal, chain)


# -- real world: transfer over a folder (issue 13, part 2) --------------------------------------


#: The source of :func:`transfer`: an ensemble of the two smaller EfficientNet-Lites.
DEFAULT_TRANSFER_SOURCE = "efficientnet_lite0,efficientnet_lite1"
#: The held-out model of :func:`transfer`.
DEFAULT_TRANSFER_TARGET = "efficientnet_lite2"
#: The L-inf budget of the transfer papers (Dong et al. 2018, Xie et al. 2019): 16 levels.
DEFAULT_TRANSFER_EPS = 16 / 255


def transfer(
    photos: str | os.PathLike[str] | Sequence[ImageLike | tuple[str, torch.Tensor]],
    target: str | int | None = None,
    *,
    model: ModelLike = DEFAULT_TRANSFER_SOURCE,
    to: str | Classifier | Sequence[str | Classifier] = DEFAULT_TRANSFER_TARGET,
    attack: str = "mifgsm",
    eps: float = DEFAULT_TRANSFER_EPS,
    norm: Norm | None = None,
    confidence: float | None = None,
    survive: Any = None,
    samples: int | None = None,
    diversity: float = 0.0,
    translation: int = 0,
    variance: int = 0,
    momentum: float = 0.0,
    limit: int | None = None,
    max_pixels: int | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[Any], None] | None = None,
    seed: int | None = 0,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    save_adversarial: bool = False,
    **options: Any,
) -> TransferReport:
    """Transfer rates over photos: attack each on ``model``, show the saved PNG to ``to``.

    Each photo is attacked on the source model (an ensemble for ``"a,b"``, Dong et al. 2018),
    the adversarial image is rounded to 8 bits, encoded as PNG and read back, and every model
    judges it: the source, its members, and the held-out models, which the attack never saw.
    Untargeted, an image fools a model when its top-1 differs from that model's own top-1 of
    the clean photo; targeted, when the target is its top-1 (the source must also reach
    ``confidence``, if given). Transfer attacks run every step (``early_stop=False`` unless
    given): stopping at the first success on the source leaves an image just over the
    source's boundary, which seldom fools another model.

    Args:
        photos: a folder of photos (read flat, by name), or a list of images (paths, PIL
            images, arrays, tensors) or ``(name, tensor)`` pairs.
        target: the class to reach (name, synonym or index); ``None``: untargeted.
        model: the source: a model name, several joined by commas (an ensemble), or a
            :class:`~trompe.Classifier` (an :class:`~trompe.models.ensemble.Ensemble` too).
        to: the held-out models: names (one text with commas, or a list) or classifiers.
        attack: an attack with a gradient hook (fgsm, pgd, mifgsm, pgd-l0) or difgsm.
        eps: the budget, in [0, 1] units (default 16 / 255, the transfer papers').
        norm: the threat model (default the attack's first).
        confidence: the probability the source must give the target (targeted only).
        survive, samples, diversity, translation, variance, momentum: the gradient hook's
            options (:class:`~trompe.GradientOptions`): DI, TI, VT, MI, EOT.
        limit: attack only the first photos of a folder.
        max_pixels: refuse larger images (default 64,000,000).
        device: where to run the models.
        progress: called with a :class:`~trompe.evaluation.transfer.TransferProgress` after
            each photo.
        seed: the attack's seed.
        out: a folder for ``transfer.png`` and ``result.json`` (and the adversarial PNGs with
            ``save_adversarial``), written all or nothing; ``None`` writes nothing.
        force: overwrite files in ``out``.
        save_adversarial: also write ``adversarial/NAME.png`` per photo.
        **options: the attack's other options (``steps=10``, ``early_stop=True``...).

    Returns:
        A :class:`~trompe.evaluation.transfer.TransferReport` (``rates``, per-photo rows; in
        Jupyter it shows itself as its transfer matrix).

    Raises:
        InvalidArgumentError: an empty or missing folder, no held-out model, a held-out model
            that is also attacked, options the attack does not take, a budget out of range.
        UnknownModelError, UnknownAttackError, UnknownLabelError: a name not known.
        OutputExistsError: a file in ``out`` and not ``force``.

    Example:
        >>> report = trompe.transfer("photos/", model="efficientnet_lite0,efficientnet_lite1",
        ...                          to="efficientnet_lite2", diversity=0.5)  # doctest: +SKIP
        >>> report.rates["efficientnet_lite2"]                               # doctest: +SKIP
    """
    from trompe.evaluation.transfer import check_outputs, measure_transfer
    from trompe.images import DEFAULT_MAX_PIXELS, load_photos

    request = check_budget(attack, norm=norm, eps=eps)
    info = get_attack(request.attack)
    if info.minimum_norm or info.access != "gradients":
        raise InvalidArgumentError(
            f"attack {info.name!r} is not a fixed-budget gradient attack; transfer takes fgsm, "
            "pgd, mifgsm, difgsm or pgd-l0"
        )
    warn_tiny_budget(float(eps), request.norm)
    _gradient_hook(
        info.name,
        info.cls,
        options,
        survive=survive,
        samples=samples,
        diversity=diversity,
        translation=translation,
        variance=variance,
        momentum=momentum,
    )
    options.setdefault("early_stop", False)
    if seed is not None:
        options["seed"] = seed
    if target is not None and confidence is not None:
        options_confidence: float | None = confidence
    elif confidence is not None:
        raise InvalidArgumentError("confidence is for a target; leave it out when untargeted")
    else:
        options_confidence = None
    runner = info.create(eps=request.eps, norm=request.norm, **options)
    inputs: list[Path] = []
    if isinstance(photos, str | os.PathLike):
        named = load_photos(photos, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, limit=limit)
        inputs = [Path(photos) / name for name, _ in named]
    else:
        items = list(photos)
        pixels = max_pixels or DEFAULT_MAX_PIXELS
        if not items:
            raise InvalidArgumentError("no photos given; give a folder or a list of images")
        named = []
        for i, item in enumerate(items[:limit] if limit is not None else items):
            if isinstance(item, tuple):
                name, image = item
                named.append((str(name), load_image(image, max_pixels=pixels)))
            else:
                if isinstance(item, str | os.PathLike):
                    name = Path(item).name
                    inputs.append(Path(item))
                else:
                    name = f"image-{i}.png"
                named.append((name, load_image(item, max_pixels=pixels)))
    if out is not None:  # refused before any work
        check_outputs(
            Path(out),
            [name for name, _ in named] if save_adversarial else [],
            force=force,
            inputs=inputs,
        )
    held = _model_list(to)
    if not held:
        raise InvalidArgumentError("give at least one held-out model (to)")
    source = resolve_model(model, device)
    others = [resolve_model(other, device) for other in held]
    index = None if target is None else source.labels.index(target)
    report = measure_transfer(
        named,
        source,
        others,
        runner,
        target=index,
        confidence=options_confidence,
        progress=progress,
    )
    if out is not None:
        report.save(Path(out), force=force, save_adversarial=save_adversarial, inputs=inputs)
    return report


# -- real world: universal perturbation (issue 13, part 3) --------------------------------------


def universal(
    photos: str | os.PathLike[str] | Sequence[ImageLike],
    target: str | int | None = None,
    *,
    model: ModelLike = DEFAULT_MODEL,
    eps: float = 10 / 255,
    holdout: str | os.PathLike[str] | float | None = None,
    epochs: int = 20,
    batch_size: int = 8,
    step_size: float | None = None,
    patience: int = 5,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: UniversalProgressCallback | None = None,
    max_pixels: int | None = None,
) -> UniversalResult:
    """Learn one perturbation that fools the model on many photos, and measure it honestly.

    The universal adversarial perturbation (SGD form of Shafahi et al. 2020, arXiv:1811.11304;
    see :mod:`trompe.attacks.universal`) is learned at the model's input resolution on the
    training photos; it is applied to any photo by resizing it to the photo (bilinear), adding,
    clamping and rounding to 8 bits, as ``trompe apply`` does. The fooling rates are measured
    on those 8-bit photos: on the training photos, on held-out photos it never saw, and for
    random noise of the same L-inf budget (random signs of ``eps``), so that one sees it is not
    just noise.

    Args:
        photos: a folder of photos, or a list of images (paths, PIL images, arrays, tensors).
        target: a class (name, synonym or index) to turn every photo into; ``None``: change each
            photo's top-1, whatever it becomes.
        model: a registered model name or a :class:`~trompe.Classifier`.
        eps: the L-inf budget in [0, 1] units (whole levels from 1/255 to 127/255).
        holdout: the held-out photos: a folder, or the fraction of ``photos`` held out (default
            0.25; at least one photo each side), drawn with ``seed``.
        epochs: the most passes over the training photos.
        batch_size: photos per step.
        step_size: the signed step in [0, 1] units (default ``eps / 8``).
        patience: stop after this many epochs without a better training fooling rate (0: never).
        seed: seeds the split and the order of the photos.
        device: where to run.
        progress: called after each epoch with a
            :class:`~trompe.attacks.universal.UniversalProgress`.
        max_pixels: refuse larger photos.

    Returns:
        The :class:`~trompe.attacks.universal.UniversalResult`; ``result.save("out")`` writes
        perturbation.png, perturbation.pt, report.png and result.json.

    Raises:
        InvalidArgumentError: a bad budget, target, count or holdout; an empty folder, or too
            few photos to hold some out.
        ImageError: a photo cannot be read.

    Example:
        >>> result = trompe.universal("photos/", eps=10 / 255)        # doctest: +SKIP
        >>> result.holdout.rate, result.noise_holdout.rate              # doctest: +SKIP
        (0.7, 0.05)
    """
    from trompe.attacks.universal import (
        apply_universal,
        check_universal_eps,
        clean_top1,
        delta_size,
        fooling_rate,
        learn_universal,
        noise_perturbation,
    )
    from trompe.images import DEFAULT_MAX_PIXELS, load_photos
    from trompe.report.universal import Example

    eps_255 = check_universal_eps(eps)
    checked = check_seed(seed)
    # None draws a seed (from torch's global generator, which is not reseeded), recorded.
    seed = int(torch.randint(0, 2**62, (1,)).item()) if checked is None else checked
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    fraction: float | None = None
    if holdout is None:
        fraction = 0.25
    elif isinstance(holdout, float | int) and not isinstance(holdout, bool):
        fraction = float(holdout)
        if not 0.0 < fraction < 1.0:
            raise InvalidArgumentError(
                f"the held-out fraction must be between 0 and 1 (0.25: a quarter), got {holdout}"
            )
    elif not isinstance(holdout, str | os.PathLike):
        raise InvalidArgumentError(
            f"holdout is a folder or a fraction of the photos, got {type(holdout).__name__}"
        )
    named = _named_photos(photos, limit, "photo folder")
    if fraction is None:
        assert holdout is not None and not isinstance(holdout, float | int)
        train = named
        held = load_photos(holdout, max_pixels=limit, what="held-out folder")
    else:
        if len(named) < 2:
            raise InvalidArgumentError(
                f"{len(named)} photo: a universal perturbation needs at least 2 (one to learn "
                "on, one held out), or a held-out folder (--holdout FOLDER)"
            )
        count = min(len(named) - 1, max(1, round(len(named) * fraction)))
        order = torch.randperm(len(named), generator=torch.Generator().manual_seed(seed))
        held_index = sorted(order[:count].tolist())
        held = [named[i] for i in held_index]
        train = [named[i] for i in range(len(named)) if i not in set(held_index)]

    clf = resolve_model(model, device)
    target_index = None if target is None else clf.labels.index(target)
    train_images = [image for _, image in train]
    held_images = [image for _, image in held]
    train_before = clean_top1(clf, train_images)
    held_before = clean_top1(clf, held_images)
    run = learn_universal(
        clf,
        train_images,
        eps=eps,
        target=target_index,
        before=train_before,
        epochs=epochs,
        batch_size=batch_size,
        step_size=step_size,
        patience=patience,
        seed=seed,
        progress=progress,
    )
    noise = noise_perturbation(eps_255, delta_size(clf), seed=seed)
    rates = [
        fooling_rate(clf, images, delta, before, target_index)
        for delta in (run.delta, noise)
        for images, before in ((train_images, train_before), (held_images, held_before))
    ]
    labels = clf.labels
    holdout_rate = rates[1]
    # The figure's examples: fooled held-out photos first (then the others), by name.
    order_shown = sorted(range(len(held)), key=lambda i: (not holdout_rate.fooled[i], i))[:3]
    clean_probs = clf.probs(held_images) if held_images else torch.empty(0)
    examples = [
        Example(
            name=held[i][0],
            before=held_images[i],
            after=apply_universal(run.delta, held_images[i]),
            before_label=labels[held_before[i]],
            before_prob=float(clean_probs[i, held_before[i]]),
            after_label=labels[holdout_rate.after[i]],
            after_prob=holdout_rate.after_prob[i],
            fooled=holdout_rate.fooled[i],
        )
        for i in order_shown
    ]
    params = {
        "epochs": epochs,
        "batch_size": batch_size,
        "step_size_255": round((eps_255 / 8 if step_size is None else step_size * 255), 4),
        "patience": patience,
        "seed": seed,
        "holdout": str(holdout) if fraction is None else fraction,
    }
    sources: tuple[str, ...] = ()
    if isinstance(photos, str | os.PathLike):
        sources = tuple(str(Path(photos) / name) for name, _ in named)
    elif isinstance(photos, Sequence):
        sources = tuple(str(p) for p in photos if isinstance(p, str | os.PathLike))
    if fraction is None:
        assert isinstance(holdout, str | os.PathLike)
        sources += tuple(str(Path(holdout) / name) for name, _ in held)
    return UniversalResult(
        delta=run.delta,
        eps_255=eps_255,
        model=clf.name,
        model_info=clf.describe(),
        target=target_index,
        target_label=None if target_index is None else labels[target_index],
        train=rates[0],
        holdout=rates[1],
        noise_train=rates[2],
        noise_holdout=rates[3],
        train_names=[name for name, _ in train],
        holdout_names=[name for name, _ in held],
        labels=list(labels),
        run=run,
        params=params,
        examples=examples,
        sources=sources,
    )


def _named_photos(
    photos: str | os.PathLike[str] | Sequence[ImageLike], max_pixels: int, what: str
) -> list[tuple[str, torch.Tensor]]:
    """A folder's photos, or a list of images with names (file names, else ``photo-<i>``)."""
    from trompe.images import load_photos

    if isinstance(photos, str | os.PathLike):
        return load_photos(photos, max_pixels=max_pixels, what=what)
    if isinstance(photos, Image.Image | np.ndarray | torch.Tensor) or not isinstance(
        photos, Sequence
    ):
        raise InvalidArgumentError(
            "photos is a folder or a list of images, got "
            f"{type(photos).__name__}; wrap one image in a list"
        )
    if not photos:
        raise InvalidArgumentError("no photos given; give a folder or a list of images")
    return [
        (
            Path(item).name if isinstance(item, str | os.PathLike) else f"photo-{i}",
            load_image(item, max_pixels=max_pixels),
        )
        for i, item in enumerate(photos)
    ]


# -- real world: adversarial patch (issue 13, part 4) -------------------------------------------


if TYPE_CHECKING:
    from trompe.evaluation.patch import PatchResult

#: What :func:`patch` holds out when ``holdout`` is None: this share of the photos.
DEFAULT_HOLDOUT_FRACTION = 0.25

#: Photos: a folder, a list of images, or a mapping of names to images.
PhotosLike = str | os.PathLike[str] | Sequence[ImageLike] | Mapping[str, ImageLike]


def _photo_list(
    photos: PhotosLike, what: str, max_pixels: int | None = None
) -> list[tuple[str, torch.Tensor]]:
    """``(name, image)`` pairs from a folder (:func:`~trompe.images.load_photos`) or a list."""
    from trompe.images import DEFAULT_MAX_PIXELS, load_photos

    pixels = max_pixels or DEFAULT_MAX_PIXELS
    if isinstance(photos, str | os.PathLike):
        return load_photos(photos, max_pixels=pixels, what=what)
    if isinstance(photos, Mapping):
        if not photos:
            raise InvalidArgumentError(f"the {what} holds no photos; give at least one")
        return [(str(name), load_image(image, max_pixels=pixels)) for name, image in photos.items()]
    if isinstance(photos, torch.Tensor) and photos.dim() == 4:
        photos = list(photos)
    items = list(photos)
    if not items:
        raise InvalidArgumentError(f"the {what} holds no photos; give at least one")
    named = []
    for i, item in enumerate(items):
        name = os.path.basename(os.fspath(item)) if isinstance(item, str | os.PathLike) else None
        named.append((name or f"photo-{i}", load_image(item, max_pixels=pixels)))
    return named


def _model_crops(clf: Classifier, photos: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """The 8-bit crops the model sees (its own evaluation crop and resize) of each photo."""
    if clf.input_size is None:
        # A model of any input size sees the photos as they are: they must share one size.
        sizes = {tuple(image.shape[-2:]) for _, image in photos}
        if len(sizes) > 1:
            raise InvalidArgumentError(
                f"model {clf.name!r} takes any input size and the photos differ in size; give "
                "photos of one size, or a model with a fixed input size (--input-size)"
            )
        return quantize(torch.stack([image for _, image in photos]))
    with torch.no_grad():
        return torch.stack(
            [quantize(clf.preprocess(image[None])[0].clamp(0, 1)) for _, image in photos]
        )


def patch(
    photos: PhotosLike,
    target: str | int,
    *,
    model: ModelLike = DEFAULT_MODEL,
    size: float = 0.1,
    holdout: PhotosLike | float | None = None,
    steps: int = 500,
    batch_size: int = 8,
    step_size: float = 0.03,
    placements: int = 20,
    side: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
    max_pixels: int | None = None,
    progress: Callable[[Any], None] | None = None,
) -> PatchResult:
    """Learn a printable adversarial patch (Brown et al. 2017, arXiv:1712.09665) and check it
    on held-out photos: ``trompe patch``.

    The patch is learnt with EOT over where it lands (uniform), how large (area ``size`` x
    [0.7, 1.3]), how turned (+/-20 degrees) and how lit (brightness, contrast) on the model-size
    crops of the training photos (:func:`trompe.attacks.patch.learn_patch`), then pasted as
    saved (8 bits) at ``placements`` random places on each held-out photo, next to a noise
    patch of the same size (:func:`trompe.evaluation.patch.evaluate_patch`).

    Args:
        photos: a folder of photos, or a list of images (paths, PIL images, tensors...).
        target: the class to make the model see (name, synonym or index); a patch is targeted.
        model: a registered model name or a :class:`~trompe.Classifier` with a fixed input size.
        size: the patch's area as a fraction of the image the model sees, in (0, 0.5].
        holdout: the photos to check it on: a folder or list of images, or a fraction of
            ``photos`` held out (drawn with ``seed``); None holds out
            :data:`DEFAULT_HOLDOUT_FRACTION` (at least one photo).
        steps: optimisation steps.
        batch_size: random draws (photo and placement) per step.
        step_size: Adam's learning rate on the [0, 1] patch.
        placements: random places per held-out photo in the check.
        side: the saved patch's side in pixels (for printing).
        seed: the random seed.
        device: where to run the model.
        max_pixels: refuse larger photos.
        progress: called with a :class:`~trompe.attacks.patch.PatchProgress` after each step.

    Returns:
        A :class:`~trompe.evaluation.patch.PatchResult`; ``.save(out)`` writes its files.

    Raises:
        InvalidArgumentError: a bad size, holdout, count or folder (one line, before any work).
        UnknownLabelError: an unknown target.

    Example:
        >>> result = trompe.patch("photos/", "toaster", size=0.1)  # doctest: +SKIP
        >>> result.success_rate, result.noise_success_rate          # doctest: +SKIP
        (0.85, 0.0)
        >>> result.save("trompe-patch")                               # doctest: +SKIP
    """
    import time

    from trompe.attacks.patch import check_size, learn_patch
    from trompe.evaluation.patch import PatchResult, evaluate_patch

    size = check_size(size)
    if target is None:
        raise InvalidArgumentError("a patch is targeted: give a target class, e.g. toaster")
    steps = check_count("steps", steps, low=1)
    batch_size = check_count("batch_size", batch_size, low=1)
    placements = check_count("placements", placements, low=1)
    side = check_count("side", side, low=8)
    if side > 4096:
        raise InvalidArgumentError(
            f"side is the saved patch's side in pixels, 8 to 4096; got {side}"
        )
    seed_value = check_seed(seed)
    seed = 0 if seed_value is None else seed_value
    if (
        isinstance(step_size, bool)
        or not isinstance(step_size, int | float)
        or not (0 < step_size <= 1)
    ):
        raise InvalidArgumentError(f"step_size must be in (0, 1], got {step_size!r}")
    fraction: float | None = None
    if holdout is None:
        fraction = DEFAULT_HOLDOUT_FRACTION
    elif isinstance(holdout, float | int) and not isinstance(holdout, bool):
        fraction = float(holdout)
        if not 0.0 < fraction < 1.0:
            raise InvalidArgumentError(
                f"the holdout fraction must be between 0 and 1 (e.g. 0.25), got {holdout}"
            )
    train = _photo_list(photos, "photo folder", max_pixels)
    if fraction is not None:
        if len(train) < 2:
            raise InvalidArgumentError(
                f"{len(train)} photo: nothing left to learn on once some are held out; give more "
                "photos or a separate holdout folder"
            )
        count = min(len(train) - 1, max(1, round(fraction * len(train))))
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        held_index = set(order[:count].tolist())
        held = [item for i, item in enumerate(train) if i in held_index]
        train = [item for i, item in enumerate(train) if i not in held_index]
    else:
        held = _photo_list(cast(PhotosLike, holdout), "holdout folder", max_pixels)

    clf = resolve_model(model, device)
    target_index = clf.labels.index(target)
    train_crops = _model_crops(clf, train)
    held_crops = _model_crops(clf, held)
    start = time.perf_counter()
    learnt = learn_patch(
        clf,
        train_crops,
        target_index,
        size=size,
        steps=steps,
        batch_size=batch_size,
        step_size=float(step_size),
        side=side,
        seed=seed,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    evaluation = evaluate_patch(
        clf,
        learnt,
        held_crops,
        [name for name, _ in held],
        target_index,
        size=size,
        placements=placements,
        seed=seed,
    )
    return PatchResult(
        patch=learnt,
        model=clf.name,
        target=target_index,
        target_label=str(clf.labels[target_index]),
        size=size,
        evaluation=evaluation,
        parameters={
            "steps": steps,
            "batch_size": batch_size,
            "step_size": float(step_size),
            "seed": seed,
            "scale_range": [0.7, 1.3],
            "max_angle_degrees": 20.0,
            "holdout": "fraction" if fraction is not None else "given",
            "holdout_fraction": fraction,
        },
        train=[name for name, _ in train],
        seconds=seconds,
    )


# -- real world: apply a perturbation or a patch (issue 13, parts 3 and 4) ---------------------


#: The one line for a file that is an image but no perturbation or patch of trompe.
NOT_AN_ARTIFACT = "not a trompe perturbation or patch (made by trompe universal or trompe patch)"


def read_artifact(
    artifact: str | os.PathLike[str],
) -> tuple[str, torch.Tensor, dict[str, Any]]:
    """Read a perturbation or a patch: a PNG with trompe's ``trompe`` tEXt record, or the
    ``.pt`` file beside it (``torch.load(weights_only=True)``).

    Returns:
        ``(kind, tensor, metadata)``: kind ``"universal"`` with ``delta`` (3, h, w) in [0, 1]
        units, or ``"patch"`` with the patch image (3, h, w) in [0, 1].

    Raises:
        InvalidArgumentError: the file is not one (one line).
        ImageError: the file cannot be read.
    """
    import json

    from trompe.attacks.universal import check_universal_eps, delta_from_png_image
    from trompe.images import read_png_text

    path = Path(artifact)
    shown = f"'{path}'"
    if path.suffix.lower() in (".pt", ".pth"):
        if not path.is_file():
            raise InvalidArgumentError(f"no such file: {shown}")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unpickling raises many kinds; the file is data, not code
            raise InvalidArgumentError(f"{shown} is {NOT_AN_ARTIFACT}") from None
        if not isinstance(data, dict) or data.get("kind") not in ("universal", "patch"):
            raise InvalidArgumentError(f"{shown} is {NOT_AN_ARTIFACT}")
        meta = {k: v for k, v in data.items() if not isinstance(v, torch.Tensor)}
        tensor = data.get("delta" if data["kind"] == "universal" else "patch")
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 or tensor.shape[0] != 3:
            raise InvalidArgumentError(f"{shown} is {NOT_AN_ARTIFACT} (no tensor of 3 channels)")
        tensor = tensor.detach().float()
        if not bool(torch.isfinite(tensor).all()):
            raise InvalidArgumentError(f"{shown} holds NaN or infinite values")
        if data["kind"] == "universal":
            eps_255 = check_universal_eps(int(meta.get("eps_255", 0)) / 255)
            if float(tensor.abs().max()) * 255 > eps_255 + 1e-3:
                raise InvalidArgumentError(
                    f"{shown} holds changes above its eps of {eps_255} levels; make it again "
                    "with trompe universal"
                )
        return str(data["kind"]), tensor, meta
    image = load_image(path)
    record = read_png_text(path).get("trompe")
    try:
        found: Any = json.loads(record) if record is not None else None
    except ValueError:
        found = None
    if not isinstance(found, dict) or found.get("kind") not in ("universal", "patch"):
        raise InvalidArgumentError(f"{shown} is {NOT_AN_ARTIFACT}")
    if found["kind"] == "universal":
        levels = found.get("eps_255")
        if isinstance(levels, bool) or not isinstance(levels, int):
            raise InvalidArgumentError(f"{shown} is {NOT_AN_ARTIFACT} (no eps_255 in it)")
        check_universal_eps(levels / 255)
        return "universal", delta_from_png_image(image, levels), found
    return "patch", image, found


def apply(
    artifact: str | os.PathLike[str],
    image: ImageLike,
    *,
    where: tuple[float, float, float] | None = None,
) -> torch.Tensor:
    """Apply a universal perturbation or a patch to a photo: ``trompe apply``.

    A universal perturbation (``trompe universal``) is resized to the photo, added, clamped
    and rounded to 8 bits (:func:`~trompe.attacks.universal.apply_universal`). A patch
    (``trompe patch``) is pasted by :func:`trompe.attacks.patch.apply_patch` at ``where``.

    Args:
        artifact: perturbation.png or perturbation.pt (patch.png / patch.pt).
        image: the photo (a path, a PIL image, an array or a tensor).
        where: for a patch: ``(x, y, scale)``, the centre as fractions of the photo's width and
            height and the patch's side as a fraction of the photo's shorter side (default: the
            patch's own placement); a perturbation covers the whole photo and takes none.

    Returns:
        The changed photo (3, H, W) on the 8-bit grid.

    Raises:
        InvalidArgumentError: the artifact is not one, or ``where`` given for a perturbation.
    """
    from trompe.attacks.universal import apply_universal

    kind, tensor, meta = read_artifact(artifact)
    photo = load_image(image)
    if kind == "universal":
        if where is not None:
            raise InvalidArgumentError(
                "a universal perturbation covers the whole photo: --where is for patches only"
            )
        return apply_universal(tensor, photo)
    import importlib

    # Imported by name: the patch module (issue 13, part 4) comes with `trompe patch`.
    try:
        apply_patch = importlib.import_module("trompe.attacks.patch").apply_patch
    except (ImportError, AttributeError):
        raise InvalidArgumentError(
            "applying a patch needs trompe.attacks.patch.apply_patch (trompe patch), which this "
            "installation lacks"
        ) from None
    result: torch.Tensor = apply_patch(tensor, photo, where=where, meta=meta)
    return result
