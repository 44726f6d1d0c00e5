"""The gradient hook's options, shared by every iterative attack: EOT, DI, TI, VT and momentum.

An iterative attack (FGSM, PGD, MI-FGSM, PGD-L0) takes one step per gradient; what that
gradient is taken of is the hook (:meth:`~trompe.attacks.base.IterativeAttack._gradient`).
:class:`GradientOptions` turns the hook into a pipeline that any of them can take through its
``gradient=`` argument, so that an attack survives transformations or transfers to other models
without a new attack class:

- **EOT** (``transforms``, ``samples``; Athalye, Engstrom, Ilyas & Kwok, "Synthesizing Robust
  Adversarial Examples", ICML 2018, arXiv:1707.07397): the gradient is averaged over ``samples``
  random draws of differentiable transforms (JPEG, resize, crop, blur, lighting...; see
  :mod:`trompe.transforms`), applied to the full image before the model's own crop and resize.
  Early stopping then asks more than the clean image: the rounded image must meet the goal on
  the clean view *and* on the transforms' hardest fixed views (:meth:`TransformChain.views`).
- **DI** (``diversity``, ``min_scale``; Xie et al., CVPR 2019, arXiv:1803.06978): with
  probability ``diversity`` each view is shrunk and padded back at a random place.
- **VT** (``variance``, ``variance_radius``; Wang & He, "Enhancing the Transferability of
  Adversarial Attacks through Variance Tuning", CVPR 2021, arXiv:2103.15571): the gradient is
  corrected by the variance of the previous step, the mean gradient at ``variance`` random
  neighbours within ``variance_radius * eps`` minus the gradient at the point itself. As in
  the paper (and its code), the neighbours are drawn uniformly in that L-inf box and not
  clipped to [0, 1] (they are, with EOT: the differentiable codecs take [0, 1] only).
- **TI** (``translation``; Dong, Pang, Su & Zhu, "Evading Defenses to Transferable Adversarial
  Examples by Translation-Invariant Attacks", CVPR 2019, arXiv:1904.02884): the gradient is
  smoothed by a Gaussian kernel of ``translation`` pixels (the paper's 15), sampled over
  [-3 sigma, 3 sigma] as in the paper's code (sigma is ``(translation - 1) / 6`` pixels). The
  pixels are those of the image attacked: a photo attacked at its own size (trompe's default)
  needs a kernel in proportion to its size over the paper's 299 px.
- **MI** (``momentum``; Dong et al., CVPR 2018, arXiv:1710.06081): the step follows a velocity
  of L1-normalised gradients, ``g <- momentum * g + grad / ||grad||_1``.

They compose in that order (the VMI-DI-TI-FGSM of the papers): views are drawn (EOT, then DI),
their mean gradient is corrected (VT), smoothed (TI) and accumulated (MI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from trompe.attacks.goal import Goal
from trompe.errors import InvalidArgumentError

if TYPE_CHECKING:
    from trompe.models.classifier import Classifier
    from trompe.transforms import TransformChain

__all__ = ["GradientOptions", "Judge", "gaussian_kernel", "objective", "smooth"]

#: EOT's default number of views per step when transforms are given.
DEFAULT_EOT_SAMPLES = 4


def _check_fraction(name: str, value: object, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be a number from 0 to 1, got {value!r}")
    if not (0 < value <= 1 if low_open else 0 <= value <= 1):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise InvalidArgumentError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def _check_whole(name: str, value: object, *, low: int = 0, high: int = 10_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgumentError(
            f"{name} must be a whole number from {low} to {high:,}, got {value!r}"
        )
    return int(value)


@dataclass(frozen=True)
class GradientOptions:
    """What the gradient of each step is taken of; the defaults change nothing.

    Args:
        transforms: EOT: a :class:`~trompe.transforms.TransformChain`, or its text
            (``"jpeg:50-95,resize:0.5-1.0"``) or a list of specs, parsed by
            :func:`trompe.transforms.parse_transforms`; ``None`` for none.
        samples: views averaged per step; default 4 with ``transforms`` (EOT), else 1.
        diversity: DI: the probability that a view is shrunk and padded back (0: off; the
            paper's 0.5 or 0.7).
        min_scale: DI: the smallest relative size of the shrunk view (default 0.9).
        translation: TI: the side of the Gaussian kernel that smooths the gradient, in pixels
            (0: off; odd, the paper's 15; 7 with DI).
        variance: VT: random neighbours per step to estimate the variance (0: off; the
            paper's 20).
        variance_radius: VT: the neighbours' distance, in multiples of eps (the paper's 1.5).
        momentum: MI: the decay of the velocity (0: off; the paper's 1.0).
    """

    transforms: Any = None
    samples: int | None = None
    diversity: float = 0.0
    min_scale: float = 0.9
    translation: int = 0
    variance: int = 0
    variance_radius: float = 1.5
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if self.transforms is not None:
            from trompe.transforms import TransformChain, parse_transforms

            chain = (
                self.transforms
                if isinstance(self.transforms, TransformChain)
                else parse_transforms(self.transforms)
            )
            object.__setattr__(self, "transforms", chain if len(chain) else None)
        if self.samples is None:
            samples = DEFAULT_EOT_SAMPLES if self.transforms is not None else 1
        else:
            samples = _check_whole("samples", self.samples, low=1)
        object.__setattr__(self, "samples", samples)
        object.__setattr__(self, "diversity", _check_fraction("diversity", self.diversity))
        object.__setattr__(
            self, "min_scale", _check_fraction("min_scale", self.min_scale, low_open=True)
        )
        translation = _check_whole("translation", self.translation, high=255)
        if translation and translation % 2 == 0:
            raise InvalidArgumentError(
                f"translation is the side of a centred kernel: an odd number, got {translation}"
            )
        object.__setattr__(self, "translation", translation)
        object.__setattr__(self, "variance", _check_whole("variance", self.variance))
        radius = self.variance_radius
        if isinstance(radius, bool) or not isinstance(radius, int | float) or not radius > 0:
            raise InvalidArgumentError(f"variance_radius must be above 0, got {radius!r}")
        object.__setattr__(self, "variance_radius", float(radius))
        momentum = self.momentum
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, int | float)
            or not math.isfinite(momentum)
            or momentum < 0
        ):
            raise InvalidArgumentError(f"momentum must be a number of 0 or more, got {momentum!r}")
        object.__setattr__(self, "momentum", float(momentum))

    @property
    def active(self) -> bool:
        """Whether the options change the gradient at all."""
        return bool(
            self.transforms is not None
            or self.samples != 1
            or self.diversity
            or self.translation
            or self.variance
            or self.momentum
        )

    def params(self) -> dict[str, Any]:
        """The options that are on, JSON-ready, for reports (``transforms`` as its text)."""
        out: dict[str, Any] = {}
        if self.transforms is not None:
            out["survive"] = str(self.transforms)
        if self.samples != 1 or self.transforms is not None:
            out["samples"] = self.samples
        if self.diversity:
            out["diversity"] = self.diversity
            out["min_scale"] = self.min_scale
        if self.translation:
            out["translation"] = self.translation
        if self.variance:
            out["variance"] = self.variance
            out["variance_radius"] = self.variance_radius
        if self.momentum:
            out["momentum"] = self.momentum
        return out

    # -- the pipeline, called by IterativeAttack._run ----------------------------------------

    def init_state(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image state of the pipeline (VT's variance, MI's velocity), batch-indexed."""
        state: dict[str, torch.Tensor] = {}
        if self.variance:
            state["hook_variance"] = torch.zeros_like(images)
        if self.momentum:
            state["hook_velocity"] = torch.zeros_like(images)
        return state

    def gradient(
        self,
        model: Classifier,
        x: torch.Tensor,
        goal: Goal,
        generator: torch.Generator,
        state: dict[str, torch.Tensor],
        index: torch.Tensor,
        eps: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``(logits, direction, forwards, backwards)`` for the iterates ``x`` of images
        ``index``.

        ``logits`` are what the tracker judges by: the clean logits of ``x`` without EOT; with
        EOT, per image the view (of those drawn this step) with the smallest goal margin, so
        that the best iterate is the one that survives best. ``forwards``: per image, the model
        evaluations spent, on the CPU; ``backwards``: the gradients taken per image (``samples``
        views, at the point and at each of VT's neighbours).
        """
        grad, logits, forwards = self._mean_gradient(model, x, goal, generator)
        if self.transforms is None and (self.diversity or self.samples != 1):
            with torch.no_grad():
                logits = model(x)  # the clean view, for the tracker
            forwards += 1
        if self.variance:
            corrected = grad + state["hook_variance"][index]
            neighbours = torch.zeros_like(grad)
            radius = self.variance_radius * eps
            for _ in range(self.variance):
                noise = torch.rand(x.shape, generator=generator, device=x.device)
                point = x + (2 * noise - 1) * radius
                if self.transforms is not None:
                    point = point.clamp(0, 1)  # the differentiable codecs take [0, 1] only
                neighbour, _, spent = self._mean_gradient(model, point, goal, generator)
                neighbours += neighbour
                forwards += spent
            state["hook_variance"][index] = neighbours / self.variance - grad
            grad = corrected
        if self.translation:
            grad = smooth(grad, self.translation)
        if self.momentum:
            l1 = grad.flatten(1).abs().sum(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            velocity = self.momentum * state["hook_velocity"][index] + grad / l1
            state["hook_velocity"][index] = velocity
            grad = velocity
        backwards = int(self.samples or 1) * (1 + self.variance)
        return logits, grad, forwards, backwards

    def _mean_gradient(
        self, model: Classifier, x: torch.Tensor, goal: Goal, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mean gradient over ``samples`` views of ``x``, the logits the tracker reads
        (min-margin view with EOT, else the last view's) and the forwards per image."""
        samples = int(self.samples or 1)
        total = torch.zeros_like(x)
        worst_logits: torch.Tensor | None = None
        worst_margin: torch.Tensor | None = None
        for _ in range(samples):
            leaf = x.detach().requires_grad_(True)
            with torch.enable_grad():
                view = self._view(model, leaf, generator)
                logits, loss = objective(model, goal, view)
                (grad,) = torch.autograd.grad(loss.sum(), leaf)
            total += grad
            logits = logits.detach()
            margin = goal.margin(logits)
            if worst_margin is None or worst_logits is None:
                worst_logits, worst_margin = logits.clone(), margin
            else:
                lower = margin < worst_margin
                worst_logits[lower] = logits[lower]
                worst_margin = torch.minimum(margin, worst_margin)
        assert worst_logits is not None
        forwards = torch.full((len(x),), samples, dtype=torch.long)
        return total / samples, worst_logits, forwards

    def _view(self, model: Classifier, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random differentiable view of ``x``: EOT's transforms on the full image, then
        DI on what the network sees (after the model's own crop and resize)."""
        if self.transforms is not None:
            x = self.transforms.draw(x, generator)
        if self.diversity:
            from trompe.attacks.difgsm import input_diversity

            # The draws of DIFGSM._gradient, in its order (which images, then their sizes and
            # offsets): the hook with diversity and MI-FGSM is M-DI2-FGSM, step for step.
            drawn = torch.rand(len(x), generator=generator, device=x.device) < self.diversity
            varied = drawn.nonzero().squeeze(1)
            if len(varied):
                seen = model.preprocess(x)
                views = input_diversity(seen[varied], min_scale=self.min_scale, generator=generator)
                x = seen.index_put((varied,), views)
        return x

    def judge(self, model: Classifier) -> Judge | None:
        """What early stopping checks rounded images with: ``None`` (the model itself) without
        EOT; with EOT, a :class:`Judge` that gives per image the logits of the view with the
        smallest goal margin among the clean image and the transforms' hardest fixed views
        (:meth:`TransformChain.views`), so that an image stops only once it meets the goal on
        all of them."""
        if self.transforms is None:
            return None
        return Judge(model, self.transforms)


class Judge:
    """Min-margin logits over the clean view and a chain's fixed views (see
    :meth:`GradientOptions.judge`). ``forwards``: model evaluations per image and call."""

    def __init__(self, model: Classifier, chain: TransformChain) -> None:
        self.model = model
        self.views = chain.views()
        self.forwards = 1 + len(self.views)

    def __call__(self, images: torch.Tensor, goal: Goal) -> torch.Tensor:
        with torch.no_grad():
            logits: torch.Tensor = self.model(images)
            worst = goal.margin(logits)
            for view in self.views:
                other = self.model(view(images))
                margin = goal.margin(other)
                lower = margin < worst
                logits[lower] = other[lower]
                worst = torch.minimum(margin, worst)
        return logits


def objective(
    model: Classifier, goal: Goal, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, loss)``: the model's logits of ``images`` and the per-image loss that a
    gradient attack ascends, ``goal.loss(logits)``; for an
    :class:`~trompe.models.ensemble.Ensemble` its own (:meth:`Ensemble.loss`: the mean of the
    members' losses with ``combine="loss"``). Shape: (B, 3, H, W) -> (B, C), (B,)."""
    from trompe.models.ensemble import Ensemble

    if isinstance(model, Ensemble):
        return model.loss(goal, images)
    logits: torch.Tensor = model(images)
    return logits, goal.loss(logits)


def gaussian_kernel(size: int) -> torch.Tensor:
    """The TI paper's kernel: a (size, size) Gaussian over [-3 sigma, 3 sigma], summing to 1."""
    points = torch.linspace(-3, 3, size)
    line = torch.exp(-0.5 * points.square())
    kernel = line[:, None] * line[None, :]
    return kernel / kernel.sum()


def smooth(grad: torch.Tensor, size: int) -> torch.Tensor:
    """Convolve each channel of ``grad`` with :func:`gaussian_kernel` (zero padding)."""
    channels = grad.shape[1]
    kernel = gaussian_kernel(size).to(grad.device, grad.dtype)
    weight = kernel.expand(channels, 1, size, size)
    return F.conv2d(grad, weight, padding=size // 2, groups=channels)
