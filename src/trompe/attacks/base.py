"""The attack engine: one interface for every attack, with 8-bit honesty and early stopping.

An attack is built from its hyper-parameters only and called with a classifier, a batch of
images and a goal; it returns an :class:`~trompe.attacks.result.AttackResult`. The base class's
``__call__`` does what every attack needs and no subclass may skip: it validates the inputs,
keeps the model frozen, times the run, rounds the output to 8 bits within the budget, and
computes ``success`` by re-predicting the returned images, so success can never disagree with
what the model says of the saved PNG.
"""

from __future__ import annotations

import contextlib
import math
import operator
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from trompe.attacks.goal import Goal
from trompe.attacks.gradient import GradientOptions, objective
from trompe.attacks.oracle import Oracle
from trompe.attacks.registry import Family
from trompe.attacks.registry import register as _register
from trompe.attacks.result import AttackResult
from trompe.attacks.tracker import Progress, ProgressCallback, Tracker, watch_gradients
from trompe.errors import AccessError, InvalidArgumentError, ModelOutputError
from trompe.images import quantize
from trompe.metrics import Norm, lp_norm, measure
from trompe.models.classifier import ACCESS_LEVELS, Access, Classifier
from trompe.units import format_budget, max_budget

__all__ = [
    "Attack",
    "FixedBudgetAttack",
    "IterativeAttack",
    "Norm",
    "Progress",
    "ProgressCallback",
    "Tracker",
    "check_count",
    "check_norm",
    "check_positive",
    "check_seed",
    "l1_normalise",
    "l2_normalise",
    "lp_norm",
    "project_l0",
    "project_l1",
    "seen_pixels",
]

NORMS: tuple[Norm, ...] = ("linf", "l2")
#: A budget over this many times the largest change an image can have is refused as absurd.
ABSURD_FACTOR = 1000
ALL_NORMS: tuple[Norm, ...] = ("linf", "l2", "l1", "l0")


#: The largest whole-number option (steps, queries, restarts, pixels...): torch's 32-bit sizes
#: and loops; the command line's flags (``--steps``) take the same range.
MAX_COUNT = 2**31 - 1
#: The largest seed: what ``torch.Generator.manual_seed`` and NumPy both take (63 bits).
MAX_SEED = 2**63 - 1


def check_positive(name: str, value: float, *, integer: bool = False) -> None:
    """Raise :class:`InvalidArgumentError`, one line naming ``name`` and its range, unless
    ``value`` is a finite number above 0 (``integer``: a whole number from 1 to
    :data:`MAX_COUNT`)."""
    bad_type = not isinstance(value, int) if integer else not isinstance(value, int | float)
    if isinstance(value, bool) or bad_type or not value > 0 or not math.isfinite(value):
        kind = "a whole number" if integer else "a number"
        raise InvalidArgumentError(f"{name} must be {kind} above 0, got {value!r}")
    if integer and value > MAX_COUNT:
        raise InvalidArgumentError(
            f"{name} must be a whole number from 1 to {MAX_COUNT:,}, got {value!r}"
        )


def check_count(name: str, value: object, *, low: int = 0) -> int:
    """``value`` as a whole number from ``low`` to :data:`MAX_COUNT`; else
    :class:`InvalidArgumentError`, one line naming ``name`` and that range."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COUNT:
        raise InvalidArgumentError(
            f"{name} must be a whole number from {low} to {MAX_COUNT:,}, got {value!r}"
        )
    return int(value)


def check_seed(seed: object) -> int | None:
    """The seed of an attack's random generator: ``None`` (a fresh one) or a whole number from
    0 to :data:`MAX_SEED`."""
    if seed is None:
        return None
    try:  # NumPy's integers too
        value = operator.index(seed)  # type: ignore[arg-type]
    except TypeError:
        value = -1
    if isinstance(seed, bool) or not 0 <= value <= MAX_SEED:
        raise InvalidArgumentError(
            f"seed must be None or a whole number from 0 to {MAX_SEED} (2**63 - 1), got {seed!r}"
        )
    return value


#: The name ``IterativeAttack._run`` used before the tracker had its own module.
_Tracker = Tracker


class Attack(ABC):
    """Base class of every attack.

    Subclasses set the class attributes below, take their hyper-parameters as keyword-only
    arguments in ``__init__``, and implement :meth:`_run`. A concrete subclass that sets its
    own ``name`` registers itself in :mod:`trompe.attacks.registry` when it is defined; pass
    ``register=False`` in the class statement to opt out (``class Mine(PGD, register=False)``).
    See ``docs/adding-an-attack.md``.
    """

    #: Registry key, kebab-case (``pgd``, ``mifgsm``).
    name: str
    #: Other names the registry accepts (``mi-fgsm``); not inherited by subclasses.
    aliases: ClassVar[tuple[str, ...]] = ()
    #: The group ``trompe attacks`` lists it in: ``"gradient"`` (fixed budget),
    #: ``"minimum-norm"``, ``"sparse"``, ``"scores"`` or ``"labels"``.
    family: ClassVar[Family] = "gradient"
    #: Its place within the family in listings, lower first.
    rank: ClassVar[int] = 100
    #: The threat models the attack supports.
    norms: tuple[Norm, ...] = NORMS
    #: Whether the attack accepts a :class:`~trompe.attacks.goal.Targeted` goal.
    supports_targeted: bool = True
    #: Whether the attack looks for the smallest change (no ``eps`` budget).
    minimum_norm: bool = False
    #: What the attack needs of the model: ``"gradients"``, ``"scores"`` or ``"labels"``.
    #: Below ``"gradients"``, :meth:`_run` gets an :class:`~trompe.attacks.oracle.Oracle`.
    access: ClassVar[Access] = "gradients"
    #: One line for listings (``trompe attacks``): the method, its authors and year.
    summary: ClassVar[str] = ""

    norm: Norm
    seed: int | None

    def __setattr__(self, name: str, value: Any) -> None:
        # Every attack stores its seed as ``self.seed = seed``: checked here, once for all.
        if name == "seed":
            value = check_seed(value)
        super().__setattr__(name, value)

    def __init_subclass__(cls, *, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if register and "name" in cls.__dict__ and not _has_abstract_methods(cls):
            _register(cls)

    def params(self) -> dict[str, Any]:
        """The hyper-parameters, JSON-ready, for reports."""
        return {
            k: v
            for k, v in vars(self).items()
            if not k.startswith("_") and isinstance(v, int | float | str | bool | type(None))
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def _generator(self, device: torch.device) -> torch.Generator:
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator

    def __call__(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        *,
        progress: ProgressCallback | None = None,
    ) -> AttackResult:
        """Attack a batch of images.

        Args:
            model: the classifier to fool.
            images: (B, 3, H, W) floats in [0, 1], of any size the classifier takes.
            goal: a :class:`~trompe.attacks.goal.Targeted` or
                :class:`~trompe.attacks.goal.Untargeted` goal with one class per image.
            progress: called after each step with a :class:`Progress`.

        Returns:
            The result; ``adversarial`` is on the 8-bit grid and within the budget, and
            ``success`` is the goal evaluated by ``model`` on exactly those images.

        Raises:
            InvalidArgumentError: images of the wrong shape or range, a goal of another batch
                size, or a targeted goal for an attack without a targeted form.
            ModelOutputError: the model returned inf or NaN logits for the original or the
                adversarial images: nothing can be judged by them, so this is never a success.

        Warns:
            GradientMaskingWarning: a gradient attack's first gradient of the model is zero
                or not finite for some images (checked here for every gradient attack).

        An enclosing :func:`torch.autocast` is switched off for the attack: the model runs in
        float32, as the attack's bookkeeping (margins, 8-bit checks) needs.
        """
        if not isinstance(model, Classifier):
            raise InvalidArgumentError(
                f"attacks take a trompe Classifier, got {type(model).__name__}; wrap your "
                "network with trompe.Classifier(module, mean=..., std=...)"
            )
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise InvalidArgumentError(f"images must be a (B, 3, H, W) tensor, got {shape}")
        if not images.is_floating_point():
            raise InvalidArgumentError(f"images must be floats in [0, 1], got {images.dtype}")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise InvalidArgumentError("images must lie in [0, 1]")
        if not isinstance(goal, Goal):
            raise InvalidArgumentError(
                f"goal must be Targeted(...) or Untargeted(...), got {type(goal).__name__}"
            )
        if len(goal) != images.shape[0]:
            raise InvalidArgumentError(
                f"the goal has {len(goal)} classes for {images.shape[0]} images; give one each"
            )
        if goal.targeted and not self.supports_targeted:
            raise InvalidArgumentError(
                f"attack {self.name!r} has no targeted form; drop the target or pick a "
                "targeted attack (see `trompe attacks`)"
            )
        given = ACCESS_LEVELS.index(model.access)
        if given > ACCESS_LEVELS.index(self.access):
            raise AccessError(
                f"attack {self.name!r} needs {self.access} but model {model.name!r} gives "
                f"{model.access} only; pick an attack that needs {model.access} (see `trompe "
                "attacks`)" + (f", {model.access_hint}" if model.access_hint else "")
            )
        if self.access == "labels" and goal.confidence is not None:
            raise InvalidArgumentError(
                f"attack {self.name!r} sees only the top-1 label, so it cannot aim for a "
                "confidence; leave the confidence out"
            )
        num_classes = model.num_classes
        if goal.classes.numel() and (goal.classes.min() < 0 or goal.classes.max() >= num_classes):
            raise InvalidArgumentError(f"goal classes must be between 0 and {num_classes - 1}")

        self._check_budget(images)

        device = model.device
        images = images.detach().to(device, torch.float32)
        goal = goal.to(device)
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            with _no_autocast(device), torch.no_grad():
                logits_before = model(images).float()
            self._check_logits(model, logits_before, "the original images")
            # Images that meet the goal already are returned unchanged: no change is smallest.
            todo = (~goal.met(logits_before)).nonzero().squeeze(1)
            adversarial = images.clone()
            steps = torch.zeros(len(images), dtype=torch.long)
            forwards = torch.ones(len(images), dtype=torch.long)  # the evaluation before
            gradients = torch.zeros(len(images), dtype=torch.long)
            queries = torch.zeros(len(images), dtype=torch.long)
            if len(todo):
                oracle = None if self.access == "gradients" else Oracle(model, self.access)
                target = model if oracle is None else oracle
                # Every gradient attack's first gradient is checked for masking here, once.
                watch = (
                    watch_gradients(model, self.name, todo)
                    if oracle is None
                    else contextlib.nullcontext()
                )
                with _no_autocast(device), watch:
                    tracker = self._run(target, images[todo], goal.subset(todo), progress)
                self._check_output(images[todo], tracker.adversarial)
                if oracle is not None and oracle.queries != int(tracker.forwards.sum()):
                    raise RuntimeError(
                        f"attack {self.name!r} counted {int(tracker.forwards.sum())} queries "
                        f"but asked {oracle.queries}: a bug in the attack, please report it"
                    )
                adversarial[todo] = tracker.adversarial
                cpu = todo.cpu()
                steps[cpu] = tracker.steps
                forwards[cpu] += tracker.forwards
                queries[cpu] = tracker.forwards
                gradients[cpu] = tracker.gradients
            adversarial = quantize(adversarial)
            with _no_autocast(device), torch.no_grad():
                logits_after = model(adversarial).float()
            forwards += 1
            self._check_logits(model, logits_after, "the adversarial images")
        finally:
            model.train(was_training)
        seconds = time.perf_counter() - start
        return AttackResult(
            original=images.cpu(),
            adversarial=adversarial.cpu(),
            goal=goal.to(torch.device("cpu")),
            success=goal.met(logits_after).cpu(),
            probs_before=logits_before.softmax(dim=1).cpu(),
            probs_after=logits_after.softmax(dim=1).cpu(),
            norms=measure(images, adversarial),
            steps=steps,
            forwards=forwards,
            gradients=gradients,
            queries=queries,
            seconds=seconds,
            attack=self.name,
            params=self.params(),
            model=model.name,
            labels=model._labels,
            device=str(device),
            model_info=model.describe(num_classes=int(logits_after.shape[1])),
        )

    def _check_budget(self, images: torch.Tensor) -> None:
        """Refuse a budget that cannot apply to ``images`` (none here: no budget)."""
        return

    def _check_logits(self, model: Classifier, logits: torch.Tensor, what: str) -> None:
        """Raise :class:`ModelOutputError` for images with a NaN or +inf logit, or only -inf
        ones: their softmax is NaN and their margin meaningless, so no success (or failure)
        can be read off. A -inf logit beside finite ones is a masked class, and allowed."""
        bad = logits.isnan().any(dim=1) | logits.isposinf().any(dim=1)
        bad |= logits.isneginf().all(dim=1)
        count = int(bad.sum())
        if count:
            kinds = " and ".join(
                name
                for name, found in (
                    ("NaN", bool(logits.isnan().any())),
                    ("inf", bool(logits.isinf().any())),
                )
                if found
            )
            first = int(bad.nonzero()[0])
            raise ModelOutputError(
                f"model {model.name!r} returned {kinds} logits for {count} of {len(logits)} "
                f"images ({what}; first: image {first}), so attack {self.name!r} cannot judge "
                "them; check the model's weights and numerics (an overflow in float16?)"
            )

    def _check_output(self, images: torch.Tensor, adversarial: torch.Tensor) -> None:
        """Raise if ``_run`` returned images outside [0, 1]: a bug, never a success.

        :class:`FixedBudgetAttack` also checks the 8-bit grid and the budget.
        """
        if adversarial.shape != images.shape:
            raise RuntimeError(
                f"attack {self.name!r} returned images of shape {tuple(adversarial.shape)} for "
                f"{tuple(images.shape)}: a bug in the attack, please report it"
            )
        if adversarial.numel() and (adversarial.min() < 0 or adversarial.max() > 1):
            raise RuntimeError(
                f"attack {self.name!r} returned values outside [0, 1]: a bug in the attack, "
                "please report it"
            )

    @abstractmethod
    def _run(
        self,
        model: Any,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        """Search the adversarial images; return the tracker holding them (8-bit, in budget).

        ``model`` is the :class:`~trompe.models.classifier.Classifier` for gradient attacks and
        an :class:`~trompe.attacks.oracle.Oracle` for the others. ``images`` are only those
        that do not meet the goal yet. The tracker's ``forwards`` must count every model
        evaluation per image (for an oracle, the engine checks the total against the oracle's
        own count).
        """


class FixedBudgetAttack(Attack):
    """An attack with a budget ``eps`` in a norm: the change never exceeds it, after rounding.

    Args:
        eps: the budget: in [0, 1] units for L-inf, L2 and L1 (``10 / 255`` for the demos'
            "10"); a number of pixels for L0.
        norm: ``"linf"`` (per-pixel limit), ``"l2"`` (Euclidean limit on the whole change),
            ``"l1"`` or ``"l0"``, among those the attack supports.
    """

    def __init__(self, *, eps: float, norm: Norm = "linf") -> None:
        check_positive("eps", eps)
        check_norm(self, norm)
        if norm == "linf" and eps > 1:
            raise InvalidArgumentError(
                f"eps is in [0, 1] units in the Python API (10 / 255 for 10 pixel levels), "
                f"got {eps}"
            )
        if norm == "l0" and (isinstance(eps, float) and not eps.is_integer()):
            raise InvalidArgumentError(f"an L0 budget is a number of pixels, got {eps}")
        self.eps = float(eps)
        self.norm = norm

    # -- the threat model ----------------------------------------------------------------------

    def _check_budget(self, images: torch.Tensor) -> None:
        """Refuse an absurd budget: over :data:`ABSURD_FACTOR` times the largest change these
        images can have (every value across the whole [0, 1] range; L0: every pixel).

        Up to that, a budget above the largest change is simply no bound (``eps=100`` in L2 is
        a common way to say "unbounded"), and the attack runs as if unbounded within [0, 1].
        Beyond it (``1e38``), float32 overflows on the way and the attack would silently
        change nothing.
        """
        limit = max_budget(self.norm, tuple(images.shape[1:]))
        if self.eps > ABSURD_FACTOR * limit:
            height, width = images.shape[-2:]
            raise InvalidArgumentError(
                f"eps {format_budget(self.eps, self.norm)} is absurd: far above the largest "
                f"{self.norm} change an image of {width} x {height} can have "
                f"({format_budget(limit, self.norm)}); any budget from that one up is no bound"
            )

    def _check_output(self, images: torch.Tensor, adversarial: torch.Tensor) -> None:
        """Raise if ``_run`` left [0, 1], the 8-bit grid or the budget: a bug, never a success.

        Measured in 0-255 units (L0: pixels whose 8-bit value changed), with a slack of 1e-3
        for float error. An original off the 8-bit grid (a resized tensor) cannot be matched
        exactly by 8-bit values; its own rounding error is added to the budget then.
        """
        super()._check_output(images, adversarial)
        if not adversarial.numel():
            return
        with torch.no_grad():
            levels = adversarial * 255
            if bool(((levels - levels.round()).abs() > 1e-3).any()):
                raise RuntimeError(
                    f"attack {self.name!r} returned images off the 8-bit grid: a bug in the "
                    "attack, please report it"
                )
            original = images * 255
            if self.norm == "l0":
                sizes = lp_norm(levels.round() - original.round(), "l0")
                limit = torch.full_like(sizes, self.eps)
            else:
                sizes = lp_norm(levels - original, self.norm)
                limit = self.eps * 255 + lp_norm(original - original.round(), self.norm)
            over = sizes > limit + 1e-3
            if bool(over.any()):
                worst = int((sizes - limit).argmax())
                unit = "pixels" if self.norm == "l0" else "(0-255 units)"
                raise RuntimeError(
                    f"attack {self.name!r} left its budget: a change of {float(sizes[worst]):.4g}"
                    f" in {self.norm} for eps {float(limit[worst]):.4g} {unit}: a bug in the "
                    "attack, please report it"
                )

    def project(self, adversarial: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Bring each image back into the eps-ball around ``images`` and into [0, 1]."""
        delta = adversarial - images
        if self.norm == "linf":
            delta = delta.clamp_(-self.eps, self.eps)  # in place: delta is a new tensor
        elif self.norm == "l2":
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            factor = (self.eps / norms).clamp(max=1.0)
            delta = delta * factor.view(-1, 1, 1, 1)
        elif self.norm == "l1":
            delta = project_l1(delta, self.eps)
        else:
            delta = project_l0(delta, int(self.eps))
        return (images + delta).clamp_(0.0, 1.0)

    def round_into_budget(self, adversarial: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Round to 8 bits without leaving the budget or [0, 1].

        L-inf: round to the nearest level, then clamp to the levels within eps of the original
        (exact when the original is on the 8-bit grid, as photos read from files are). L2:
        round to the nearest level; images whose rounded change exceeds eps are rounded
        towards the original instead, which never increases any pixel's change. L1 likewise;
        L0: rounding never changes a pixel that the change left alone.
        """
        with torch.no_grad():
            original = images * 255
            levels = (adversarial * 255).round()
            if self.norm == "linf":
                slack = 1e-4  # float error in eps * 255; levels are integers
                low = torch.ceil(original - self.eps * 255 - slack)
                high = torch.floor(original + self.eps * 255 + slack)
                levels = torch.minimum(torch.maximum(levels, low), high)
            elif self.norm == "l0":
                untouched = (adversarial == images).all(dim=1, keepdim=True)
                levels = torch.where(untouched, original.round(), levels)
            else:
                limit = self.eps * 255 + 1e-4
                over = lp_norm(levels - original, self.norm) > limit
                if over.any():
                    toward = original[over] + torch.trunc(adversarial[over] * 255 - original[over])
                    levels[over] = toward.round()
            return quantize(levels.clamp(0, 255) / 255)

    def random_start_point(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A uniform random point of the eps-ball around each image, clipped to [0, 1]."""
        if self.norm == "linf":
            noise = torch.rand(images.shape, generator=generator, device=images.device)
            delta = (2 * noise - 1) * self.eps
        elif self.norm in ("l1", "l0"):
            # A random sparse start: uniform noise, projected onto the ball.
            noise = torch.rand(images.shape, generator=generator, device=images.device)
            delta = self.project(images + (2 * noise - 1) * 0.5, images) - images
        else:
            direction = torch.randn(images.shape, generator=generator, device=images.device)
            direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            dims = images[0].numel()
            radius = torch.rand(images.shape[0], generator=generator, device=images.device)
            delta = direction * (self.eps * radius ** (1 / dims)).view(-1, 1, 1, 1)
        return self.project(images + delta, images)


class IterativeAttack(FixedBudgetAttack):
    """A gradient attack that takes ``steps`` steps inside the eps-ball (FGSM, PGD, MI-FGSM).

    The loop is shared: each step evaluates the model and its gradient on the images still
    running only; images whose 8-bit version meets the goal leave the batch (``early_stop``),
    so the cost falls as images succeed. Subclasses define :meth:`_step`.

    Args:
        eps: the budget in [0, 1] units.
        norm: ``"linf"`` or ``"l2"``.
        steps: the most steps per image.
        step_size: the size of one step in [0, 1] units (L-inf: per pixel; L2: of the whole
            change); ``None`` takes the attack's default.
        random_start: start from a random point of the eps-ball instead of the image.
        restarts: runs from new random points for the images that have not met their goal;
            the best iterate over all runs is kept.
        early_stop: stop each image as soon as its 8-bit version meets the goal. Without it,
            every image takes every step and the last iterate is returned.
        seed: seeds the random start; ``None`` draws a fresh seed.
        gradient: the gradient hook's options
            (:class:`~trompe.attacks.gradient.GradientOptions`: EOT over transforms, input
            diversity, translation invariance, variance tuning, momentum); ``None`` for the
            plain gradient.
    """

    default_relative_step: ClassVar[float] = 0.25

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "linf",
        steps: int = 40,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        early_stop: bool = True,
        seed: int | None = 0,
        gradient: GradientOptions | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        check_positive("steps", steps, integer=True)
        if gradient is not None and not isinstance(gradient, GradientOptions):
            raise InvalidArgumentError(
                f"gradient must be GradientOptions(...) or None, got {type(gradient).__name__}"
            )
        self.gradient = gradient if gradient is not None and gradient.active else None
        check_positive("restarts", restarts, integer=True)
        if restarts > 1 and not random_start:
            raise InvalidArgumentError("restarts need random_start=True: they would repeat")
        self.restarts = int(restarts)
        if step_size is not None:
            check_positive("step_size", step_size)
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else self._default_step()
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        self.seed = seed

    def _default_step(self) -> float:
        return self.default_relative_step * self.eps

    def params(self) -> dict[str, Any]:
        """The hyper-parameters, with the gradient hook's options that are on."""
        params = super().params()
        if self.gradient is not None:
            params.update(self.gradient.params())
        return params

    def _hooked_gradient(
        self,
        model: Classifier,
        x: torch.Tensor,
        goal: Goal,
        generator: torch.Generator,
        state: dict[str, torch.Tensor],
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, int | torch.Tensor, int]:
        """:meth:`_gradient` (one backward pass), or the pipeline of :attr:`gradient` when
        options are on: ``(logits, grad, forwards, backwards)``."""
        if self.gradient is None:
            return (*self._gradient(model, x, goal, generator), 1)
        return self.gradient.gradient(model, x, goal, generator, state, index, self.eps)

    def _init_state(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image state carried from step to step (e.g. momentum), indexed like the batch."""
        return {}

    @abstractmethod
    def _step(
        self,
        adversarial: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, torch.Tensor],
        index: torch.Tensor,
    ) -> torch.Tensor:
        """One ascent step of the goal's loss, before projection."""

    def _gradient(
        self,
        model: Classifier,
        x: torch.Tensor,
        goal: Goal,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, int | torch.Tensor]:
        """The gradient hook: the logits of ``x`` and the gradient that steers the next step.

        The loop calls it once per step with the iterates ``x`` of the images still running
        and their ``goal``. Override it to change what the gradient is taken of without
        touching the loop: an input-transform attack (DI-FGSM) differentiates the loss of
        randomly transformed images, an expectation-over-transformation attack averages the
        gradient over several transforms.

        Args:
            model: the classifier.
            x: (N, 3, H, W) the current iterates (no gradient attached).
            goal: their goal, one class per image.
            generator: the run's random generator (seeded by ``seed``): draw transforms here.

        Returns:
            ``(logits, grad, forwards)``: the model's logits of ``x`` itself, untransformed
            (the tracker keeps the best iterate and stops early by them), (N, C); the ascent
            direction of the goal's loss, shaped like ``x``; and the model evaluations spent
            per image, an int or an (N,) long tensor on the CPU (the loop counts one gradient).
        """
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits, loss = objective(model, goal, x)  # an ensemble's loss ensemble included
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return logits, grad, 1

    def _run(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        def round_fn(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return self.round_into_budget(x, images[index])

        # The best iterate is the fallback of early stopping and what restarts compare; a
        # single fixed-step run returns its last iterate and needs no best-iterate bookkeeping.
        keep_best = self.early_stop or self.restarts > 1
        tracker = Tracker(images, goal, self.early_stop, keep_best=keep_best)
        judge = self.gradient.judge(model) if self.gradient is not None else None
        generator = self._generator(images.device)
        # No noise where the model does not look (outside its centre crop): it could never be
        # optimised away and would only make the photo worse.
        seen = seen_pixels(model, images) if self.random_start else None
        total = self.steps * self.restarts
        x = images.clone()
        for restart in range(self.restarts):
            if restart and not len(tracker.active()):
                break
            if self.random_start:
                x = self.random_start_point(images, generator)
                if seen is not None:
                    x = torch.where(seen, x, images)
            state = self._init_state(images)
            if self.gradient is not None:
                state.update(self.gradient.init_state(images))
            for step in range(self.steps + 1):
                index = tracker.active()
                if not len(index):
                    break
                last = step == self.steps
                if last and not self.early_stop:
                    break  # a fixed-step run returns its last iterate, evaluated by __call__
                # While every image runs (always, without early stopping), work on the whole
                # batch as it is: no gather of x, images and goal, no scatter back.
                everyone = index is tracker.everyone
                if everyone:
                    current, origin, running = x, images, goal
                else:
                    current, origin, running = x[index], images[index], goal.subset(index)
                backwards = 0
                if last:
                    with torch.no_grad():
                        logits = model(current)
                    forwards: int | torch.Tensor = 1
                else:
                    logits, grad, forwards, backwards = self._hooked_gradient(
                        model, current, running, generator, state, index
                    )
                tracker.count(
                    index, forwards=forwards, gradients=0 if last else 1, backwards=backwards
                )
                tracker.observe(model, index, current, logits, round_fn, judge)
                if last:
                    break
                with torch.no_grad():
                    moved = self._step(current, grad, state, index)
                    if everyone:
                        x = self.project(moved, origin)
                    else:
                        x[index] = self.project(moved, origin)
                if progress is not None:
                    done = int(tracker.done.sum())
                    at = restart * self.steps + step + 1
                    progress(Progress(at, total, done, len(images), tracker.goal_prob))
        last_iterate = not self.early_stop and self.restarts == 1
        tracker.finish(round_fn, x if last_iterate else tracker.best)
        return tracker


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Switch off an enclosing autocast: the attacks' margins, 8-bit checks and best iterates
    are float32 bookkeeping (bf16 logits carry about three significant digits)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _has_abstract_methods(cls: type) -> bool:
    # ABCMeta sets __abstractmethods__ only after __init_subclass__ has run: look ourselves.
    return any(getattr(getattr(cls, n, None), "__isabstractmethod__", False) for n in dir(cls))


def seen_pixels(model: Classifier, images: torch.Tensor) -> torch.Tensor | None:
    """Where the model's crop and resize read the images, as a (B, 1, H, W) mask.

    ``None`` when the model sees every pixel (the images have its input size, or it has none).
    For an :class:`~trompe.models.ensemble.Ensemble`: where any member looks.
    Found with one backward pass through the crop and resize alone (not the network): pixels
    outside the crop get an exactly zero gradient.
    """
    from trompe.models.ensemble import Ensemble

    if isinstance(model, Ensemble):  # where any member looks
        masks = [seen_pixels(member, images) for member in model.members]
        if any(mask is None for mask in masks):
            return None
        union = masks[0]
        for mask in masks[1:]:
            assert mask is not None and union is not None
            union = union | mask
        return union
    if model.input_size is None or tuple(images.shape[-2:]) == model.input_size:
        return None
    probe = images[:1].clone().requires_grad_(True)
    with torch.enable_grad():
        grad: torch.Tensor = torch.autograd.grad(model.preprocess(probe).sum(), probe)[0]
    return (grad.abs().sum(dim=1, keepdim=True) > 0).expand(len(images), 1, *images.shape[-2:])


def l2_normalise(tensor: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = tensor / tensor.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return out


def l1_normalise(tensor: torch.Tensor) -> torch.Tensor:
    norms = tensor.flatten(1).abs().sum(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    out: torch.Tensor = tensor / norms
    return out


def check_norm(attack: Attack, norm: str) -> None:
    if norm not in ALL_NORMS:
        raise InvalidArgumentError(f"norm must be one of {', '.join(ALL_NORMS)}, got {norm!r}")
    if norm not in attack.norms:
        supported = ", ".join(attack.norms)
        raise InvalidArgumentError(
            f"attack {attack.name!r} supports the {supported} threat model, not {norm!r}; "
            "see `trompe attacks` for the attacks of each"
        )


def project_l1(delta: torch.Tensor, radius: float) -> torch.Tensor:
    """Project each change of a batch onto the L1 ball of ``radius`` (Duchi et al. 2008).

    Changes already inside are returned as they are. Shape: (B, ...) -> (B, ...).
    """
    flat = delta.flatten(1)
    magnitude = flat.abs()
    inside = magnitude.sum(dim=1) <= radius
    if bool(inside.all()):
        return delta
    # The threshold theta that soft-thresholding needs to land exactly on the sphere.
    ordered, _ = magnitude.sort(dim=1, descending=True)
    cumulative = ordered.cumsum(dim=1) - radius
    ranks = torch.arange(1, flat.shape[1] + 1, device=delta.device, dtype=delta.dtype)
    valid = ordered - cumulative / ranks > 0
    count = valid.to(torch.long).cumsum(dim=1).argmax(dim=1, keepdim=True)
    theta = (cumulative.gather(1, count) / (count + 1).to(delta.dtype)).clamp_min(0)
    shrunk = flat.sign() * (magnitude - theta).clamp_min(0)
    out = torch.where(inside[:, None], flat, shrunk)
    return out.view_as(delta)


def project_l0(delta: torch.Tensor, pixels: int) -> torch.Tensor:
    """Keep, per image, the change of the ``pixels`` pixels (positions) that change most.

    Shape: (B, C, H, W) -> (B, C, H, W).
    """
    strength = delta.square().sum(dim=1).flatten(1)  # (B, H*W)
    if pixels >= strength.shape[1]:
        return delta
    keep_index = strength.topk(pixels, dim=1).indices
    keep = torch.zeros_like(strength, dtype=torch.bool).scatter_(1, keep_index, True)
    out: torch.Tensor = delta * keep.view(delta.shape[0], 1, *delta.shape[2:])
    return out


# The underscored names these helpers had before they were public.
_check_positive = check_positive
_check_norm = check_norm
_l1_normalise = l1_normalise
_l2_normalise = l2_normalise
_seen_pixels = seen_pixels
