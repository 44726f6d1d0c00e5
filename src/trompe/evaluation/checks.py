"""Gradient-masking checks: named warnings when a robust accuracy may be an illusion.

A gradient attack that fails proves nothing if the gradient it followed was useless: zero
(a quantising or thresholding layer), not finite, random (a randomized defence), or saturated.
Carlini et al., "On evaluating adversarial robustness" (2019, arXiv:1902.06705), list the signs
of such gradient masking, and AutoAttack (Croce & Hein 2020, its ``checks.py``) tests a few of
them. The checks here look for those signs and report each as a
:class:`~trompe.evaluation._types.CheckWarning` with a stable code (:data:`CHECKS`), a sentence
for people (what was seen, what it suggests, what to try) and the numbers in ``details``. A
warning is a reason to distrust the robust accuracy, not a proof that it is wrong; silence is
no proof of the opposite.

Three groups, by what they need:

* :func:`probe_model`, before the cascade, on clean images (one chunk is enough): three
  forward passes and two backward passes per image, nothing else.

  - ``randomized-outputs``: the same batch, evaluated three times, gives logits that differ by
    more than a relative L2 distance of ``1e-3`` for some image, or another class. The same
    batch through the same kernels gives identical logits on the CPU and should differ only
    in the last bits on a GPU (nondeterministic kernels); AutoAttack's threshold is ``1e-4`` on
    unit-normalised logits, and a defence whose noise matters moves them by far more (0.02
    noise on the digits' pixels: about ``2e-2``). A randomized model needs attacks that
    average over its randomness (expectation over transformation, AutoAttack's ``rand``
    version).
  - ``probability-outputs``: every output row lies in [0, 1] and sums to 1 (within
    ``1e-4``): the model returns probabilities where logits are expected, so the
    cross-entropy is computed on a softmax of probabilities and is nearly flat (AutoAttack
    warns on the same).
  - ``zero-gradients`` / ``non-finite-gradients``: the gradient, with respect to the input, of
    the logit margin ``max_{i != y} z_i - z_y`` is exactly zero, or has a NaN or infinity,
    for at least one image (AutoAttack warns on any point too: such an image's "robust" is
    meaningless to every gradient attack). The margin, not the cross-entropy, is used because
    it never saturates: a zero here is the network's own, not the softmax's.
  - ``saturated-cross-entropy``: the cross-entropy's gradient is exactly zero (the softmax is
    saturated in float32) while the margin's is not, for at least 10 % of the images, and the
    cascade has no attack on the scale-free DLR loss (``apgd-t``, ``apgd-dlr``) that sees
    through it.

* :func:`stress`, after the cascade, on at most :data:`STRESS_IMAGES` (16) images of one chunk
  that stayed robust at the largest budget (the run calls it on the first chunk only). Its
  cost, with the cascade's APGD-CE at ``S`` steps and ``R`` restarts (100 and 1 in the named
  cascades): at most ``16 * S`` gradients for the large budget and ``16 * 2S * (R + 1)`` for
  the stronger run, 8,000 in all; the images that break stop early. On ``digits_robust``,
  100 test images at 32/255 on a loaded 2-core machine: the ``fast`` cascade spent 33,000
  gradients in 34 s and the stress checks 14 s (small batches cost more per image); APGD-CE,
  APGD-T over 9 targets and Square with 5,000 queries spent 83,000 gradients in 182 s, the
  stress checks 10 s.

  - ``large-budget-not-broken``: APGD-CE at a budget within which every image can be turned
    into the same uniform mid-grey image (L-inf ``128/255``; L2 ``128/255 * sqrt(C H W)``), so
    that at most the images of one class can honestly stay robust, still leaves more than 10 %
    of the images tried, and at least 2 of them, robust. On the shipped robust digits model
    (``digits_robust``, PGD-trained at 32/255) it breaks every one of 16 images left robust
    at 32/255 by APGD-CE.
  - ``restarts-change-result``: APGD-CE with twice the steps and one restart more (a new seed)
    breaks more than 10 % of the images tried, and at least 2, at the largest budget, although
    the cascade left them robust. After either cascade above (83 of the 100 images robust),
    no check of this module fires.

* :func:`from_records`, from the per-image records alone (so that a merge of shards can run
  it):

  - ``black-box-beats-white-box``: at some budget, a score- or label-based stage (Square) that
    follows a gradient stage broke images that every gradient stage before it failed on, more
    than 0.2 % of the evaluated images and at least one (AutoAttack's threshold). A black box
    that sees only outputs should not beat attacks that see the gradient, unless the gradient
    is masked.
  - ``reduced-precision-rejected``: in a ``bf16``/``fp16`` run, attacks reported successes
    that the float32 re-check of the 8-bit image did not confirm (any). They are not counted,
    but they show that reduced precision changes the model's decisions near the boundary, so
    it may also hide adversarial examples that float32 would find.
  - ``unconfirmed-successes``: the same in a float32 run, where it should never happen: the
    model's outputs change between two evaluations of one image.

Not a check: robust accuracy staying flat as the budget grows. ``digits_robust`` keeps all of
357 correctly classified test images robust at 1, 2 and 4/255 (APGD-CE, 20 steps), a sound model
evaluated at small budgets; the large-budget check asks the same question where the answer must
be "broken".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F

from trompe.attacks.base import _no_autocast
from trompe.attacks.goal import Untargeted
from trompe.attacks.registry import get_attack
from trompe.attacks.result import AttackResult
from trompe.errors import GradientMaskingWarning, InvalidArgumentError, UnknownAttackError
from trompe.evaluation._types import (
    BudgetOutcome,
    CheckWarning,
    EvalConfig,
    ImageRecord,
    chunk_seed,
)
from trompe.metrics import Norm
from trompe.models.classifier import Classifier
from trompe.units import format_budget

__all__ = [
    "CHECKS",
    "STRESS_IMAGES",
    "from_records",
    "probe_model",
    "stress",
]

#: Every warning code the checks can raise, with one line on what it means.
CHECKS: dict[str, str] = {
    "randomized-outputs": "the same images twice give different logits: a randomized model",
    "probability-outputs": "the model returns probabilities, not logits: a flat cross-entropy",
    "zero-gradients": "the input gradient of the logit margin is exactly zero for some images",
    "non-finite-gradients": "the input gradient of the logit margin is NaN or infinite",
    "saturated-cross-entropy": "the cross-entropy's gradient vanishes and no DLR attack runs",
    "large-budget-not-broken": "APGD-CE at a huge budget (mid-grey reachable) leaves images robust",
    "restarts-change-result": "more steps and restarts break images the cascade left robust",
    "black-box-beats-white-box": "Square broke images that every gradient attack failed on",
    "reduced-precision-rejected": "bf16/fp16 attacks claimed successes float32 did not confirm",
    "unconfirmed-successes": "float32 attacks claimed successes the re-check did not confirm",
}

#: Relative L2 difference of two evaluations' logits above which the model is randomized.
RANDOM_TOLERANCE = 1e-3
#: Forward passes of the same batch compared by the randomness check.
RANDOM_PASSES = 3
#: Tolerance of the check that outputs are probabilities (rows in [0, 1] summing to 1).
PROBABILITY_TOLERANCE = 1e-4
#: Fraction of images with a saturated cross-entropy (non-zero margin gradient) that warns.
SATURATED_FRACTION = 0.1
#: Images (robust at the largest budget) a stress check spends attacks on, per call.
STRESS_IMAGES = 16
#: A stress check warns when more than this fraction of the images tried, and at least
#: :data:`STRESS_MIN_IMAGES`, come out the wrong way.
STRESS_FRACTION = 0.1
STRESS_MIN_IMAGES = 2
#: The large budget, per pixel, in [0, 1] units: from any image, the uniform image of level
#: 128 is within it (|128 - 0| and |128 - 255| are at most 128 levels).
LARGE_LEVEL = 128 / 255
#: Fraction of the evaluated images a black-box stage may break after the gradient stages
#: without a warning (AutoAttack's ``check_square_sr``: 0.2 %).
BLACK_BOX_FRACTION = 0.002
#: Attacks whose loss is the scale-free DLR, which a saturated softmax does not starve.
DLR_ATTACKS = frozenset({"apgd-t", "apgd-dlr"})

# Salt of the stress checks' seeds, apart from the cascade's (budget, stage) indices.
_STRESS_SALT = -1


def _warning(code: str, message: str, **details: Any) -> CheckWarning:
    if code not in CHECKS:  # pragma: no cover - a typo in this module
        raise KeyError(code)
    return CheckWarning(code, message, details)


def _images(count: int, total: int) -> str:
    return f"{count} of {total} image" + ("" if total == 1 else "s")


# -- before the cascade -------------------------------------------------------------------------


def probe_model(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor, config: EvalConfig
) -> list[CheckWarning]:
    """Cheap checks on clean images before the cascade: random outputs (the same batch twice
    gives different logits), zero or non-finite gradients of the loss.

    Codes: ``randomized-outputs``, ``probability-outputs``, ``zero-gradients``,
    ``non-finite-gradients``, ``saturated-cross-entropy`` (see the module's docstring for the
    thresholds). The gradient checks need a model with ``access="gradients"`` and are skipped
    for others. Cost: three forward and two backward passes per image.

    Args:
        model: the classifier, on its device.
        images: (b, 3, H, W) clean images in [0, 1] (one chunk's).
        labels: (b,) their true classes.
        config: the evaluation (its stages decide ``saturated-cross-entropy``).

    Returns:
        The warnings, in the order of the codes above; empty when all is well.
    """
    if len(images) == 0:
        return []
    device = model.device
    images = images.detach().to(device, torch.float32)
    labels = labels.to(device)
    found: list[CheckWarning] = []
    was_training = model.training
    model.eval()
    try:
        with _no_autocast(device):
            found += _check_outputs(model, images, labels)
            if model.access == "gradients":
                found += _check_gradients(model, images, labels, config)
    finally:
        model.train(was_training)
    return found


def _check_outputs(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor
) -> list[CheckWarning]:
    found = []
    with torch.no_grad():
        passes = [model(images).float() for _ in range(RANDOM_PASSES)]
    first = passes[0]
    scale = torch.where(first.isfinite(), first, 0).norm(dim=1).clamp_min(1e-12)
    worst = torch.zeros(len(first), device=first.device)
    changed = torch.zeros(len(first), dtype=torch.bool, device=first.device)
    for other in passes[1:]:
        # A NaN or infinity in the same place twice is the same output (the cascade refuses
        # such logits); one that comes and goes is randomness.
        same = (other == first) | (other.isnan() & first.isnan())
        diff = torch.where(same, 0, torch.nan_to_num(other - first, nan=math.inf))
        gap = diff.norm(dim=1) / scale
        worst = torch.maximum(worst, gap)
        changed |= other.argmax(dim=1) != first.argmax(dim=1)
    random = (worst > RANDOM_TOLERANCE) | changed
    count = int(random.sum())
    if count:
        found.append(
            _warning(
                "randomized-outputs",
                f"the same {_images(count, len(first))} gave different logits in "
                f"{RANDOM_PASSES} evaluations (up to {float(worst.max()):.2g} relative), so the "
                "model is randomized and single-run gradients mislead; evaluate it with "
                "attacks that average over its randomness (EOT, AutoAttack's rand version)",
                images=count,
                of=len(first),
                passes=RANDOM_PASSES,
                max_relative_difference=_finite(float(worst.max())),
                tolerance=RANDOM_TOLERANCE,
                predictions_changed=int(changed.sum()),
            )
        )
    tol = PROBABILITY_TOLERANCE
    probabilities = (
        bool((first >= -tol).all())
        and bool((first <= 1 + tol).all())
        and bool(((first.sum(dim=1) - 1).abs() <= tol).all())
    )
    if probabilities and first.shape[1] > 1:
        found.append(
            _warning(
                "probability-outputs",
                "every output row lies in [0, 1] and sums to 1, so the model returns "
                "probabilities where logits are expected and the attacks' cross-entropy is "
                "nearly flat; wrap the network before its softmax (or return its logarithm)",
                images=len(first),
                tolerance=tol,
            )
        )
    return found


def _check_gradients(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor, config: EvalConfig
) -> list[CheckWarning]:
    x = images.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x).float()
        own = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.scatter(1, labels[:, None], -math.inf).amax(dim=1)
        (margin_grad,) = torch.autograd.grad((others - own).sum(), x, retain_graph=True)
        ce = F.cross_entropy(logits, labels, reduction="sum")
        (ce_grad,) = torch.autograd.grad(ce, x)
    flat = margin_grad.flatten(1)
    finite = flat.isfinite().all(dim=1)
    zero = finite & (flat == 0).all(dim=1)
    n = len(flat)
    found = []
    if int(zero.sum()):
        count = int(zero.sum())
        found.append(
            _warning(
                "zero-gradients",
                f"the input gradient of the logit margin is exactly zero for "
                f"{_images(count, n)}, so gradient attacks cannot move there (a quantising or "
                "thresholding layer?) and their failures say nothing; trust the score-based "
                "stage (square) or attack a differentiable approximation (BPDA)",
                images=count,
                of=n,
                first=_first(zero),
            )
        )
    if int((~finite).sum()):
        count = int((~finite).sum())
        found.append(
            _warning(
                "non-finite-gradients",
                f"the input gradient of the logit margin is NaN or infinite for "
                f"{_images(count, n)}, so gradient attacks follow no direction there (a sqrt, "
                "log or division at zero?); fix the model's numerics or trust the score-based "
                "stage (square)",
                images=count,
                of=n,
                first=_first(~finite),
            )
        )
    ce_flat = ce_grad.flatten(1)
    saturated = finite & ~zero & (ce_flat == 0).all(dim=1)
    count = int(saturated.sum())
    has_dlr = any(_key(stage.attack) in DLR_ATTACKS for stage in config.stages)
    if count and count >= SATURATED_FRACTION * n and not has_dlr:
        found.append(
            _warning(
                "saturated-cross-entropy",
                f"the cross-entropy's input gradient underflows to zero for "
                f"{_images(count, n)} (a saturated softmax) and no stage uses the scale-free "
                "DLR loss, so the cross-entropy attacks are blind there; add apgd-t to the "
                "cascade",
                images=count,
                of=n,
                fraction=SATURATED_FRACTION,
            )
        )
    return found


def _first(mask: torch.Tensor, limit: int = 5) -> list[int]:
    """The first few positions (in the batch) where ``mask`` holds."""
    return [int(i) for i in mask.nonzero().squeeze(1)[:limit].tolist()]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _key(name: str) -> str:
    return name.lower().replace("_", "-")


# -- after the cascade --------------------------------------------------------------------------


def stress(
    model: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    records: Sequence[ImageRecord],
    config: EvalConfig,
) -> list[CheckWarning]:
    """Checks that spend attacks, on (a few of) the images of one chunk that stayed robust at
    the largest budget: a much larger budget must break (almost) all of them; more iterations
    and restarts must not change the result.

    Codes: ``large-budget-not-broken``, ``restarts-change-result`` (thresholds and costs in the
    module's docstring). Runs only for the ``linf`` and ``l2`` threat models and a model with
    ``access="gradients"``; the attacks' seeds derive from the configuration's seed and the
    chunk, so the same chunk gives the same findings in any process.

    Args:
        model: the classifier, on its device.
        images: (b, 3, H, W) the chunk's readable images, in record order.
        labels: (b,) their true classes.
        records: the chunk's records (skipped images included; those are left out).
        config: the evaluation (budgets, norm, the cascade's APGD-CE steps and restarts).

    Raises:
        InvalidArgumentError: records that do not match the images (another chunk's).
    """
    done = [r for r in records if r.skipped is None]
    if len(done) != len(images) or len(labels) != len(images):
        raise InvalidArgumentError(
            f"stress got {len(images)} images, {len(labels)} labels and {len(done)} records of "
            "readable images; pass one chunk's images with that chunk's records"
        )
    if not done or config.norm not in ("linf", "l2") or model.access != "gradients":
        return []
    if any(int(r.label) != int(y) for r, y in zip(done, labels.tolist(), strict=True)):
        raise InvalidArgumentError(
            "stress got labels that differ from the records'; pass one chunk's images with that "
            "chunk's records, in the same order"
        )
    robust = [i for i, r in enumerate(done) if r.budgets and r.budgets[-1].robust]
    chosen = torch.tensor(robust[:STRESS_IMAGES], dtype=torch.long)
    if not len(chosen):
        return []
    x = images[chosen].detach().float()
    y = labels[chosen].to(torch.long)
    positions = [done[i].position for i in chosen.tolist()]
    chunk = done[0].chunk
    norm = config.norm
    steps, restarts = _cascade_apgd(config)
    eps = config.eps[-1]
    large = LARGE_LEVEL * (1.0 if norm == "linf" else math.sqrt(math.prod(x.shape[1:])))
    seeds = [chunk_seed(config.seed, chunk, _STRESS_SALT, k) for k in (0, 1)]
    found = []
    if large > eps:
        result = _apgd(model, x, y, large, norm, steps, 1, seeds[0])
        left = ~result.success
        if _too_many(int(left.sum()), len(x)):
            count = int(left.sum())
            found.append(
                _warning(
                    "large-budget-not-broken",
                    f"APGD-CE at {format_budget(large, norm)}, within which every image can "
                    f"become the same uniform grey, left {count} of the {len(x)} images robust "
                    f"at {format_budget(eps, norm)} unbroken, so its gradients lead nowhere "
                    "(masked); trust the score-based stage (square) or attack a differentiable "
                    "approximation (BPDA)",
                    eps=large,
                    eps_text=format_budget(large, norm),
                    robust=count,
                    tried=len(x),
                    steps=steps,
                    positions=[p for p, keep in zip(positions, left.tolist(), strict=True) if keep],
                    gradients=int(result.gradients.sum()),
                )
            )
    stronger = _apgd(
        model,
        x,
        y,
        eps,
        norm,
        2 * steps,
        restarts + 1,
        seeds[1],
    )
    broken = stronger.success
    count = int(broken.sum())
    if _too_many(count, len(x)):
        found.append(
            _warning(
                "restarts-change-result",
                f"APGD-CE with {2 * steps} steps and {restarts + 1} restarts broke "
                f"{_images(count, len(x))} that the cascade left robust at "
                f"{format_budget(eps, norm)}, so the cascade's attacks had not converged (or "
                "the gradients are noisy) and the robust accuracy is too high; evaluate with "
                "more steps and restarts",
                eps=eps,
                broken=count,
                tried=len(x),
                steps=2 * steps,
                restarts=restarts + 1,
                positions=[p for p, hit in zip(positions, broken.tolist(), strict=True) if hit],
                gradients=int(stronger.gradients.sum()),
            )
        )
    return found


def _too_many(count: int, tried: int) -> bool:
    return count >= STRESS_MIN_IMAGES and count > STRESS_FRACTION * tried


def _cascade_apgd(config: EvalConfig) -> tuple[int, int]:
    """The steps and restarts of the cascade's APGD-CE (100 and 1 if it has none)."""
    for stage in config.stages:
        if _key(stage.attack) in ("apgd-ce", "apgd"):
            return int(stage.options.get("steps", 100)), int(stage.options.get("restarts", 1))
    return 100, 1


def _apgd(
    model: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    norm: str,
    steps: int,
    restarts: int,
    seed: int,
) -> AttackResult:
    attack = get_attack("apgd-ce").create(
        eps=eps, norm=cast("Norm", norm), steps=steps, restarts=restarts, seed=seed
    )
    with warnings.catch_warnings():
        # probe_model names masked gradients once; the engine's warning would repeat it.
        warnings.simplefilter("ignore", GradientMaskingWarning)
        return attack(model, images, Untargeted(labels))


# -- from the records ---------------------------------------------------------------------------


def from_records(records: Sequence[ImageRecord], config: EvalConfig) -> list[CheckWarning]:
    """Checks read from the records alone (so a merge of shards can run them): the black-box
    Square stage breaking images the white-box stages could not, float32 re-checks rejecting
    candidates of a reduced-precision run.

    Codes: ``black-box-beats-white-box``, ``reduced-precision-rejected``,
    ``unconfirmed-successes`` (thresholds in the module's docstring).

    Args:
        records: every image's record (skipped ones are left out).
        config: the evaluation the records come from.
    """
    done = [r for r in records if r.skipped is None and len(r.budgets) == len(config.eps)]
    if not done:
        return []
    found = []
    found += _black_box(done, config)
    found += _rejected(done, config)
    return found


def _access(name: str) -> str | None:
    try:
        return get_attack(name).access
    except UnknownAttackError:
        return None


def _black_box(done: Sequence[ImageRecord], config: EvalConfig) -> list[CheckWarning]:
    # The black-box stages that come after at least one gradient stage: an image they broke
    # was attacked by every gradient stage before them, and survived.
    seen_gradient = False
    after_gradient = []
    gradient_stages = []
    for stage in config.stages:
        access = _access(stage.attack)
        if access == "gradients":
            seen_gradient = True
            gradient_stages.append(stage.attack)
        elif access in ("scores", "labels") and seen_gradient:
            after_gradient.append(stage.attack)
    if not after_gradient:
        return []
    n = len(done)
    per_budget: list[dict[str, Any]] = []
    for k, eps in enumerate(config.eps):
        # Carried images were broken at a smaller budget: not attacked again at this one.
        count = sum(
            1
            for r in done
            if r.correct and _fresh(r.budgets[k]) and r.budgets[k].broken_by in after_gradient
        )
        if count and count > BLACK_BOX_FRACTION * n:
            per_budget.append(
                {"eps": eps, "eps_text": format_budget(eps, config.norm), "broken": count}
            )
    if not per_budget:
        return []
    worst = max(per_budget, key=lambda b: b["broken"])
    attacks = ", ".join(after_gradient)
    return [
        _warning(
            "black-box-beats-white-box",
            f"{attacks} broke {_images(worst['broken'], n)} at {worst['eps_text']} that every "
            f"gradient attack ({', '.join(gradient_stages)}) failed on, which a model with "
            "useful gradients rarely allows; suspect masked gradients and try more "
            "queries and restarts of the black-box attack or an adaptive attack",
            attacks=list(after_gradient),
            evaluated=n,
            fraction=BLACK_BOX_FRACTION,
            budgets=per_budget,
        )
    ]


def _fresh(outcome: BudgetOutcome) -> bool:
    return not outcome.robust and not outcome.carried


def _rejected(done: Sequence[ImageRecord], config: EvalConfig) -> list[CheckWarning]:
    per_budget: list[dict[str, Any]] = []
    for k, eps in enumerate(config.eps):
        rejected = sum(r.budgets[k].rejected for r in done)
        images = sum(1 for r in done if r.budgets[k].rejected)
        if rejected:
            per_budget.append(
                {
                    "eps": eps,
                    "eps_text": format_budget(eps, config.norm),
                    "rejected": rejected,
                    "images": images,
                }
            )
    if not per_budget:
        return []
    total = sum(b["rejected"] for b in per_budget)
    images = len({r.position for r in done if any(b.rejected for b in r.budgets)})
    details = {"rejected": total, "images": images, "budgets": per_budget}
    if config.precision != "fp32":
        return [
            _warning(
                "reduced-precision-rejected",
                f"attacks under {config.precision} claimed {total} successes on "
                f"{_images(images, len(done))} that the float32 re-check of the 8-bit image "
                "did not confirm (not counted), so reduced precision changes the model's "
                "decisions near the boundary and may hide adversarial examples too; check a "
                "sample with --precision fp32",
                precision=config.precision,
                **details,
            )
        ]
    return [
        _warning(
            "unconfirmed-successes",
            f"attacks claimed {total} successes on {_images(images, len(done))} that the "
            "float32 re-check of the same 8-bit image did not confirm (not counted), so the "
            "model's outputs are not deterministic; look for randomness in the model",
            precision=config.precision,
            **details,
        )
    ]
