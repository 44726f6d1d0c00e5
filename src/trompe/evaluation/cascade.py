"""The cascade: each attack in turn on the images still robust, budget after budget.

:func:`resolve_cascade` turns what a user names (``"standard"``, ``"fast"``,
``"apgd-ce,square"``, a list of :class:`~trompe.evaluation._types.Stage`) into stages, and
:func:`run_chunk` evaluates one chunk of images with them.

Where the time goes, and what is never spent:

- The clean prediction is one float32 forward pass per image; an image the model gets wrong
  is never attacked (``broken_by="clean"``).
- Budgets run in ascending order. An image broken at a budget is broken at every larger one
  with the same image (``carried``): it is not attacked again, and robust accuracy cannot rise
  with the budget.
- Each stage runs only on the images that every earlier stage left robust, and within a stage
  the engine stops each image as soon as its 8-bit version is misclassified.
- A minimum-norm stage (FAB-T) does not depend on the budget: it runs once per image, at the
  smallest budget at which the image reaches it, and its result is projected into each larger
  budget. (An image that reaches it at a larger budget reached it at every smaller one.)
- Every candidate is projected into the budget, rounded to 8 bits within it, and re-predicted
  in float32; where that leaves an attack's own output unchanged and the attack ran in float32,
  the attack's own prediction of exactly that image is reused instead of a second forward pass.

What is left is the attacks' own work on the images that stay robust, and there the last two
stages of the standard cascade dominate: on the shipped robust digits model (360 test images,
L-inf 32/255, 2 shared CPU cores) APGD-CE took 2 % of the time, APGD-T 14 %, FAB-T 42 % and
Square 42 %, and FAB-T and Square broke no image that the first two had left robust.
``ChunkOutcome.seconds`` gives the split of every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trompe.attacks._options import check_option_names
from trompe.attacks.base import FixedBudgetAttack, _no_autocast
from trompe.attacks.goal import Goal, Untargeted
from trompe.attacks.registry import AttackInfo, get_attack
from trompe.attacks.result import AttackResult
from trompe.attacks.tracker import ProgressCallback, Tracker
from trompe.errors import InvalidArgumentError
from trompe.evaluation._types import (
    BudgetOutcome,
    Chunk,
    EvalConfig,
    ImageRecord,
    Stage,
    chunk_seed,
)
from trompe.metrics import measure
from trompe.models.classifier import Classifier
from trompe.units import format_budget

__all__ = ["CASCADES", "ChunkOutcome", "resolve_cascade", "run_chunk"]

#: The named cascades. ``standard``: AutoAttack's standard version (APGD-CE, APGD-T over the 9
#: classes ranked next, FAB-T over the same, Square with 5000 queries on the square sizes of its
#: 10,000-query schedule, as AutoAttack runs it), 100 iterations each.
#: ``fast``: a documented cheaper cascade.
CASCADES: dict[str, tuple[Stage, ...]] = {
    "standard": (
        Stage("apgd-ce", {"steps": 100, "restarts": 1}),
        Stage("apgd-t", {"steps": 100, "targets": 9}),
        Stage("fab-t", {"steps": 100, "targets": 9}),
        Stage("square", {"queries": 5000, "p_init": 0.8, "rescale": False}),
    ),
    "fast": (
        Stage("apgd-ce", {"steps": 100, "restarts": 1}),
        Stage("apgd-t", {"steps": 100, "targets": 3}),
    ),
}

#: The threat models an evaluation takes.
EVAL_NORMS = ("linf", "l2")
#: Options the cascade sets itself (per budget and per chunk).
_SET_BY_CASCADE = ("eps", "norm", "seed")
#: The autocast dtypes of the reduced precisions.
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: The largest entry of each image's gradient of the logits as it enters a float16 network:
#: far above float16's smallest normal number (6e-5), far below its largest (65504).
_FP16_GRADIENT_TOP = 2.0**8


def resolve_cascade(
    attacks: str | Sequence[str | Stage], norm: str
) -> tuple[str, tuple[Stage, ...]]:
    """The cascade's name and stages from ``"standard"``, ``"fast"``, ``"apgd-ce,square"`` or a
    list of names or :class:`Stage` values; each attack must exist and support ``norm``.

    An attack named alone takes the options it has in the standard cascade (``square``: 5000
    queries), so ``"apgd-ce,square"`` means AutoAttack's versions of both; an attack outside
    the standard cascade takes its own defaults. Aliases resolve to the registry's names.

    Raises:
        UnknownAttackError: an unknown attack name.
        InvalidArgumentError: an attack without the ``norm`` threat model, an empty cascade, or
            one that names an attack twice.
    """
    if norm not in EVAL_NORMS:
        raise InvalidArgumentError(
            f"an evaluation's norm must be one of {', '.join(EVAL_NORMS)}, got {norm!r}"
        )
    items: list[str | Stage]
    name = "custom"
    if isinstance(attacks, str):
        key = attacks.strip().lower()
        if key in CASCADES:
            name = key
            items = list(CASCADES[key])
        else:
            items = [part.strip() for part in attacks.split(",")]
            if any(not part for part in items) and any(items):
                raise InvalidArgumentError(
                    f"attacks {attacks!r} has an empty name between commas; write them as "
                    "apgd-ce,square"
                )
            items = [part for part in items if part]
    else:
        items = list(attacks)
    if not items:
        raise InvalidArgumentError(
            "the cascade is empty: name at least one attack (apgd-ce,square) or a cascade "
            f"({', '.join(CASCADES)})"
        )
    standard = {stage.attack: stage.options for stage in CASCADES["standard"]}
    stages: list[Stage] = []
    for item in items:
        if isinstance(item, Stage):
            info = get_attack(item.attack)
            options = dict(item.options)
        elif isinstance(item, str):
            info = get_attack(item)
            options = dict(standard.get(info.name, {}))
        else:
            raise InvalidArgumentError(
                f"a cascade lists attack names or Stage values, got {type(item).__name__}"
            )
        if any(stage.attack == info.name for stage in stages):
            raise InvalidArgumentError(
                f"the cascade names attack {info.name!r} twice; name each attack once"
            )
        _check_stage(info, options, norm)
        stages.append(Stage(info.name, options))
    return name, tuple(stages)


def _check_stage(info: AttackInfo, options: Mapping[str, Any], norm: str) -> None:
    """Refuse an attack without ``norm``, options it does not take, or values it refuses."""
    if norm not in info.norms:
        raise InvalidArgumentError(
            f"attack {info.name!r} supports the {', '.join(info.norms)} threat model, not "
            f"{norm!r}; leave it out of the cascade (see `trompe attacks`)"
        )
    reserved = sorted(set(options) & set(_SET_BY_CASCADE))
    if reserved:
        raise InvalidArgumentError(
            f"the options of attack {info.name!r} set {', '.join(reserved)}, which the "
            "evaluation sets itself (budgets with --eps, the seed with --seed); leave them out"
        )
    check_option_names(info.cls, options)
    # Build it once, so that a bad value fails now rather than in the middle of a run.
    _create(info, 1 / 255 if norm == "linf" else 0.5, norm, 0, options, 1000)


def _create(
    info: AttackInfo,
    eps: float,
    norm: str,
    seed: int,
    options: Mapping[str, Any],
    num_classes: int,
) -> Any:
    """The attack of a stage at a budget: minimum-norm attacks get no budget (those with a
    ``stop_at`` option get it as that); ``targets`` is clamped to the classes the model has
    besides the true one."""
    options = dict(options)
    if "targets" in options and isinstance(options["targets"], int):
        options["targets"] = max(1, min(options["targets"], num_classes - 1))
    if info.minimum_norm:
        if "stop_at" not in options and any(o.name == "stop_at" for o in info.options()):
            # FAB-T: no further target for an image once it has a success within the budget.
            options["stop_at"] = eps
        return info.create(norm=norm, seed=seed, **options)  # type: ignore[arg-type]
    return info.create(eps=eps, norm=norm, seed=seed, **options)  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class ChunkOutcome:
    """One chunk evaluated.

    Attributes:
        records: one per image of the chunk (skipped ones included), in position order.
        adversarial: per budget index, (b, 3, H, W) images on the 8-bit grid: the adversarial
            image of every broken image, the original of a robust one (b = readable images).
        seconds: per stage attack name, wall-clock time spent in it.
    """

    records: tuple[ImageRecord, ...]
    adversarial: dict[int, torch.Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class _Budget(FixedBudgetAttack, register=False):
    """The engine's projection and 8-bit rounding for one budget (never run as an attack)."""

    name = "budget"

    def _run(
        self, model: Any, images: torch.Tensor, goal: Goal, progress: ProgressCallback | None
    ) -> Tracker:
        raise NotImplementedError("a budget only projects and rounds")

    def into(self, candidates: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """``candidates`` projected into the budget around ``images``, then rounded to 8 bits
        within it."""
        return self.round_into_budget(self.project(candidates, images), images)


class _Scales:
    """The per-image gradient scales of one backward pass, shared by its two ends."""

    values: torch.Tensor | None = None


class _ScaleUp(torch.autograd.Function):
    """The identity on the logits; backward, each image's gradient is scaled so that its
    largest entry is :data:`_FP16_GRADIENT_TOP` (the scales are kept for :class:`_ScaleDown`)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, scales: _Scales) -> torch.Tensor:
        ctx.scales = scales
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        top = grad.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-30)
        scale = (_FP16_GRADIENT_TOP / top).clamp(max=2.0**40)
        ctx.scales.values = scale
        return grad * scale.view(-1, *([1] * (grad.dim() - 1))), None


class _ScaleDown(torch.autograd.Function):
    """The identity on the images; backward, each image's gradient is divided by the scale
    :class:`_ScaleUp` gave it, which restores the true gradient."""

    @staticmethod
    def forward(ctx: Any, images: torch.Tensor, scales: _Scales) -> torch.Tensor:
        ctx.scales = scales
        return images.view_as(images)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        scale = ctx.scales.values
        if scale is None:
            return grad, None
        return grad / scale.view(-1, *([1] * (grad.dim() - 1))), None


class _Autocast(nn.Module):
    """Runs a classifier under :func:`torch.autocast` and returns float32 logits.

    The engine switches an enclosing autocast off for every attack, so reduced precision has to
    live inside the model the attack is given. In float16, each image's gradient is scaled up
    on its way back through the network and down again at its input (per-image dynamic loss
    scaling): the small gradients of confident images would otherwise underflow to zero, and
    the attacks would see a masked model that is not. bfloat16 has float32's range and needs
    no scaling.
    """

    def __init__(self, model: Classifier, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = model
        self.dtype = dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scaled = self.dtype == torch.float16 and torch.is_grad_enabled() and images.requires_grad
        scales = _Scales()
        if scaled:
            images = _ScaleDown.apply(images, scales)  # type: ignore[no-untyped-call]
        with torch.autocast(images.device.type, dtype=self.dtype):
            logits: torch.Tensor = self.inner(images)
        logits = logits.float()
        if scaled:
            logits = _ScaleUp.apply(logits, scales)  # type: ignore[no-untyped-call]
        return logits


def _attacked_model(model: Classifier, precision: str) -> Classifier:
    """The classifier the attacks see: ``model`` itself in float32, else an autocast wrapper
    with the same class names and access level."""
    if precision == "fp32":
        return model
    if precision not in _DTYPES:
        raise InvalidArgumentError(
            f"precision must be one of fp32, {', '.join(_DTYPES)}, got {precision!r}"
        )
    wrapped = Classifier(
        _Autocast(model, _DTYPES[precision]),
        labels=model._labels,
        name=model.name,
        access=model.access,
    )
    return wrapped.to(model.device)


def _predict(model: Classifier, images: torch.Tensor) -> torch.Tensor:
    """The model's classes for ``images``, in float32 and without gradients: (n,) long."""
    if not len(images):
        return torch.zeros(0, dtype=torch.long, device=images.device)
    with _no_autocast(images.device), torch.no_grad():
        logits: torch.Tensor = model(images)
    return logits.float().argmax(dim=1)


def _norms(original: torch.Tensor, adversarial: torch.Tensor) -> list[dict[str, float]]:
    """The changes measured on 8-bit values, 0-255 units (L0: pixels), one dict per image."""
    found = measure(original, adversarial)
    return [
        {"linf": float(a), "l2": float(b), "l1": float(c), "l0": float(d)}
        for a, b, c, d in zip(
            found.linf.tolist(),
            found.l2.tolist(),
            found.l1.tolist(),
            found.l0.tolist(),
            strict=True,
        )
    ]


@dataclass
class _Cached:
    """A minimum-norm stage's result per image of the chunk (it depends on no budget)."""

    have: torch.Tensor  # (b,) bool, on the CPU
    adversarial: torch.Tensor  # (b, 3, H, W)
    success: torch.Tensor  # (b,) bool, on the CPU
    predicted: torch.Tensor  # (b,) long, on the CPU: the attack's float32 class of it


def run_chunk(
    model: Classifier,
    chunk: Chunk,
    config: EvalConfig,
    *,
    keep_adversarial: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> ChunkOutcome:
    """Evaluate one chunk: clean predictions, then for each budget in ascending order each
    stage on the images still robust.

    Every candidate an attack returns is projected into the budget, rounded to 8 bits within
    it, and re-predicted in float32 (outside any autocast); only then does the image count as
    broken. An image broken at a budget is broken at every larger one (its image is reused:
    ``carried``), so robust accuracy never rises with the budget. Seeds come from
    :func:`~trompe.evaluation._types.chunk_seed` (config seed, chunk, budget, stage), so a chunk
    gives the same records in any process.

    The counts of a record (``forwards``, ``gradients``) are those of the attacks' results,
    summed over the stages that ran on the image at that budget, plus one forward pass for
    each re-check the cascade had to make itself; the clean prediction is not counted.
    Skipped images get a record with ``skipped`` set, label ``-1`` and no budgets.

    Args:
        model: the classifier, on its device.
        chunk: the images.
        config: budgets, norm, stages, seed, precision.
        keep_adversarial: fill ``ChunkOutcome.adversarial``.
        on_stage: called with a short description before each stage.
    """
    device = model.device
    images = chunk.images.detach().to(device, torch.float32)
    labels = chunk.labels.to(device).long()
    count = len(chunk)
    attacked = _attacked_model(model, config.precision)
    infos = [get_attack(stage.attack) for stage in config.stages]
    seconds = {stage.attack: 0.0 for stage in config.stages}

    with _no_autocast(device), torch.no_grad():
        logits: torch.Tensor = model(images) if count else torch.zeros(0, 1, device=device)
    num_classes = int(logits.shape[1])
    clean_cpu = logits.float().argmax(dim=1).cpu()
    labels_cpu = labels.cpu()
    wrong = (clean_cpu != labels_cpu).tolist()
    broken = list(wrong)  # per image: broken at this budget or a smaller one, or clean-wrong
    broken_by: list[str | None] = ["clean" if w else None for w in wrong]
    prediction = clean_cpu.tolist()
    norms: list[dict[str, float] | None] = [None] * count
    current = images.clone()  # the adversarial image of each broken image, else the original
    cached: dict[int, _Cached] = {}

    outcomes: dict[int, list[BudgetOutcome]] = {}
    adversarial: dict[int, torch.Tensor] = {}
    for k in sorted(range(len(config.eps)), key=lambda i: config.eps[i]):
        eps = config.eps[k]
        budget = _Budget(eps=eps, norm=config.norm)  # type: ignore[arg-type]
        before = list(broken)
        forwards = [0] * count
        gradients = [0] * count
        rejected = [0] * count
        for s, (stage, info) in enumerate(zip(config.stages, infos, strict=True)):
            todo = [i for i in range(count) if not broken[i]]
            if not todo:
                break
            if on_stage is not None:
                on_stage(f"{stage.attack} at {format_budget(eps, config.norm)}")
            start = time.perf_counter()
            index = torch.tensor(todo, dtype=torch.long, device=device)
            originals = images[index]
            if info.minimum_norm:
                found, success, spent = _minimum_norm_stage(
                    cached,
                    s,
                    info,
                    stage,
                    attacked,
                    images,
                    labels,
                    index,
                    config,
                    chunk,
                    k,
                    num_classes,
                )
            else:
                attack = _create(
                    info,
                    eps,
                    config.norm,
                    chunk_seed(config.seed, chunk.index, k, s),
                    stage.options,
                    num_classes,
                )
                result: AttackResult = attack(attacked, originals, Untargeted(labels[index]))
                found = result.adversarial.to(device)
                success = result.success
                spent = (result.forwards, result.gradients, result.probs_after.argmax(dim=1))
            candidates = budget.into(found, originals)
            unchanged = (candidates == found).flatten(1).all(dim=1).cpu()
            claimed = success.cpu() & unchanged
            after, extra = _recheck(
                model, candidates, unchanged, spent[2], config.precision == "fp32"
            )
            newly = after.cpu() != labels_cpu[index.cpu()]
            measured = _norms(originals, candidates) if bool(newly.any()) else []
            for j, i in enumerate(todo):
                forwards[i] += int(spent[0][j]) + int(extra[j])
                gradients[i] += int(spent[1][j])
                if bool(newly[j]):
                    broken[i] = True
                    broken_by[i] = stage.attack
                    prediction[i] = int(after[j])
                    norms[i] = measured[j]
                    current[i] = candidates[j]
                elif bool(claimed[j]):
                    rejected[i] += 1
            seconds[stage.attack] += time.perf_counter() - start
        outcomes[k] = [
            _outcome(
                eps,
                wrong[i],
                broken[i],
                before[i],
                broken_by[i],
                prediction[i],
                norms[i],
                forwards[i],
                gradients[i],
                rejected[i],
            )
            for i in range(count)
        ]
        if keep_adversarial:
            adversarial[k] = current.detach().cpu().clone()

    records = [
        ImageRecord(
            position=chunk.positions[i],
            id=chunk.ids[i],
            label=int(labels_cpu[i]),
            chunk=chunk.index,
            clean_prediction=int(clean_cpu[i]),
            budgets=tuple(outcomes[k][i] for k in range(len(config.eps))),
        )
        for i in range(count)
    ]
    records += [
        ImageRecord(
            position=position,
            id=name,
            label=-1,
            chunk=chunk.index,
            clean_prediction=None,
            skipped=reason,
        )
        for position, name, reason in chunk.skipped
    ]
    records.sort(key=lambda r: r.position)
    return ChunkOutcome(tuple(records), adversarial, seconds)


def _outcome(
    eps: float,
    wrong: bool,
    broken: bool,
    broken_before: bool,
    broken_by: str | None,
    prediction: int,
    norms: dict[str, float] | None,
    forwards: int,
    gradients: int,
    rejected: int,
) -> BudgetOutcome:
    if wrong:
        return BudgetOutcome(eps, robust=False, broken_by="clean", prediction=prediction)
    if not broken:
        return BudgetOutcome(
            eps,
            robust=True,
            prediction=prediction,
            forwards=forwards,
            gradients=gradients,
            rejected=rejected,
        )
    if broken_before:
        return BudgetOutcome(
            eps,
            robust=False,
            broken_by=broken_by,
            carried=True,
            prediction=prediction,
            norms=norms,
        )
    return BudgetOutcome(
        eps,
        robust=False,
        broken_by=broken_by,
        prediction=prediction,
        norms=norms,
        forwards=forwards,
        gradients=gradients,
        rejected=rejected,
    )


def _recheck(
    model: Classifier,
    candidates: torch.Tensor,
    unchanged: torch.Tensor,
    predicted: torch.Tensor,
    reuse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 class of each candidate, and the forward passes that took per image.

    Where ``reuse`` holds (the attack ran in float32) and projection and rounding left the
    attack's own output unchanged, the attack's float32 prediction ``predicted`` of that very
    image stands.
    """
    extra = torch.zeros(len(candidates), dtype=torch.long)
    if reuse:
        after = predicted.to(candidates.device).clone()
        need = (~unchanged).nonzero().squeeze(1)
    else:
        after = torch.zeros(len(candidates), dtype=torch.long, device=candidates.device)
        need = torch.arange(len(candidates))
    if len(need):
        after[need.to(candidates.device)] = _predict(model, candidates[need.to(candidates.device)])
        extra[need] = 1
    return after, extra


def _minimum_norm_stage(
    cached: dict[int, _Cached],
    s: int,
    info: AttackInfo,
    stage: Stage,
    attacked: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    index: torch.Tensor,
    config: EvalConfig,
    chunk: Chunk,
    k: int,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run a minimum-norm stage on the images of ``index`` that it has not seen in this chunk,
    and return its result for all of them: (adversarial, success, (forwards, gradients,
    the attack's float32 classes)).

    Its result depends on no budget, so each image is attacked once (at the smallest budget
    where it reaches the stage); reused results cost nothing at the larger budgets.
    """
    memory = cached.get(s)
    if memory is None:
        memory = _Cached(
            torch.zeros(len(images), dtype=torch.bool),
            images.clone(),
            torch.zeros(len(images), dtype=torch.bool),
            torch.zeros(len(images), dtype=torch.long),
        )
        cached[s] = memory
    cpu = index.cpu()
    fresh = ~memory.have[cpu]
    forwards = torch.zeros(len(index), dtype=torch.long)
    gradients = torch.zeros(len(index), dtype=torch.long)
    if bool(fresh.any()):
        run = index[fresh.to(index.device)]
        attack = _create(
            info,
            config.eps[k],
            config.norm,
            chunk_seed(config.seed, chunk.index, k, s),
            stage.options,
            num_classes,
        )
        result: AttackResult = attack(attacked, images[run], Untargeted(labels[run]))
        run_cpu = run.cpu()
        memory.have[run_cpu] = True
        memory.adversarial[run] = result.adversarial.to(images.device)
        memory.success[run_cpu] = result.success
        memory.predicted[run_cpu] = result.probs_after.argmax(dim=1)
        forwards[fresh] = result.forwards
        gradients[fresh] = result.gradients
    return (
        memory.adversarial[index],
        memory.success[cpu],
        (forwards, gradients, memory.predicted[cpu]),
    )
