"""The diverse-inputs iterative FGSM (DI-FGSM, M-DI2-FGSM with momentum).

Xie, Zhang, Zhou, Bai, Wang, Ren & Yuille, "Improving Transferability of Adversarial Examples
with Input Diversity", CVPR 2019, arXiv:1803.06978.

Threat model: L-inf (or L2) ball of radius ``eps``; white box on a surrogate model, aimed at
other models (transfer). At each step, with probability ``diversity_prob``, each image is
randomly resized and randomly padded before the gradient is taken, so that the change does not
overfit the surrogate's exact view of the image; with momentum (``decay``, default 1.0) this is
the paper's M-DI2-FGSM, without it (``decay=0``) DI2-FGSM. With ``diversity_prob=0`` the attack
is exactly MI-FGSM.

The transform acts on what the network sees, after the model's own crop and resize, so a
full-size photo gets the same diversity as a model-size crop, and the gradient flows back to
the photo's pixels through that crop and resize. The paper enlarges a 299 px image to a random
size in [299, 330) and pads it to 330; here the image is shrunk to a random fraction in
[``min_scale``, 1] of its size and padded back to it (the same transform, up to a rescaling of
the whole canvas, which keeps the model's input size). Resizing is bilinear rather than the
paper's nearest-neighbour, so that every pixel gets a gradient at every step.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from trompe.attacks.base import Norm, check_positive
from trompe.attacks.goal import Goal
from trompe.attacks.gradient import objective
from trompe.attacks.mifgsm import MIFGSM
from trompe.errors import InvalidArgumentError
from trompe.models.classifier import Classifier

__all__ = ["DIFGSM", "input_diversity"]


def input_diversity(
    images: torch.Tensor, *, min_scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Shrink each image to a random size and pad it back, at a random place, with zeros.

    Each image of the batch gets its own size (an integer height between ``min_scale`` times
    its height and its height, the width in proportion) and its own offset. Differentiable.

    Args:
        images: (B, C, H, W).
        min_scale: the smallest relative size, in (0, 1].
        generator: the source of the random sizes and offsets.

    Returns:
        (B, C, H, W): the transformed images.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> out = input_diversity(torch.ones(2, 3, 32, 32), min_scale=0.5, generator=g)
        >>> out.shape, bool((out == 0).any())
        (torch.Size([2, 3, 32, 32]), True)
    """
    batch, _, height, width = images.shape
    device = images.device
    lowest = max(1, math.ceil(min_scale * height - 1e-9))
    heights = torch.randint(lowest, height + 1, (batch,), generator=generator, device=device)
    # One uniform draw per offset, scaled to the room each image leaves (same draws per size).
    offsets = torch.rand((batch, 2), generator=generator, device=device)
    out = []
    for i in range(batch):
        new_h = int(heights[i])
        new_w = max(1, min(width, round(new_h * width / height)))
        top = min(height - new_h, int(float(offsets[i, 0]) * (height - new_h + 1)))
        left = min(width - new_w, int(float(offsets[i, 1]) * (width - new_w + 1)))
        small = images[i : i + 1]
        if (new_h, new_w) != (height, width):
            small = F.interpolate(small, size=(new_h, new_w), mode="bilinear", align_corners=False)
        out.append(F.pad(small, (left, width - new_w - left, top, height - new_h - top)))
    return torch.cat(out)


class DIFGSM(MIFGSM):
    """Iterative FGSM with momentum on randomly resized and padded inputs (M-DI2-FGSM).

    Args:
        eps: the budget in [0, 1] units.
        norm: ``"linf"`` or ``"l2"``.
        steps: the most steps per image (default 10).
        step_size: default ``eps / steps``.
        decay: the momentum factor ``mu`` (default 1.0, M-DI2-FGSM; 0 gives DI2-FGSM).
        diversity_prob: the probability ``p`` that an image is transformed at a step (default
            0.5, as in the paper; 0 is MI-FGSM).
        min_scale: the smallest size of the resized image relative to the model's view
            (default 0.9: the paper's 299 / 330).
        random_start: start from a random point of the ball (default off, as in the paper).
        restarts: further runs from new random points (needs ``random_start``).
        early_stop: stop each image as soon as its 8-bit version meets the goal (on the image
            itself, untransformed).
        seed: seeds the random start and the transforms.

    Example:
        >>> attack = DIFGSM(eps=16 / 255, steps=10, diversity_prob=0.7)  # doctest: +SKIP
        >>> result = attack(surrogate, images, Untargeted(labels))        # doctest: +SKIP
    """

    name = "difgsm"
    aliases: ClassVar[tuple[str, ...]] = ("di-fgsm", "di2-fgsm", "m-di2-fgsm")
    rank = 35
    summary = "MI-FGSM on randomly resized and padded inputs, for transfer (Xie et al. 2019)"

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "linf",
        steps: int = 10,
        step_size: float | None = None,
        decay: float = 1.0,
        diversity_prob: float = 0.5,
        min_scale: float = 0.9,
        random_start: bool = False,
        restarts: int = 1,
        early_stop: bool = True,
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            eps=eps,
            norm=norm,
            steps=steps,
            step_size=step_size,
            decay=decay,
            random_start=random_start,
            restarts=restarts,
            early_stop=early_stop,
            seed=seed,
        )
        if isinstance(diversity_prob, bool) or not 0 <= diversity_prob <= 1:
            raise InvalidArgumentError(
                f"diversity_prob is a probability, between 0 and 1, got {diversity_prob!r}"
            )
        check_positive("min_scale", min_scale)
        if min_scale > 1:
            raise InvalidArgumentError(f"min_scale must be at most 1, got {min_scale}")
        self.diversity_prob = float(diversity_prob)
        self.min_scale = float(min_scale)

    def _gradient(
        self,
        model: Classifier,
        x: torch.Tensor,
        goal: Goal,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, int | torch.Tensor]:
        """The gradient of the loss on the transformed view of the images drawn this step.

        Images not drawn take the plain gradient (one forward pass); drawn ones take a forward
        pass of their transformed view for the gradient and one of themselves, without a
        graph, for the logits the tracker judges them by.
        """
        if self.diversity_prob == 0:  # draw nothing: exactly MI-FGSM, random starts included
            return super()._gradient(model, x, goal, generator)
        drawn = torch.rand(len(x), generator=generator, device=x.device) < self.diversity_prob
        varied = drawn.nonzero().squeeze(1)
        if not len(varied):
            return super()._gradient(model, x, goal, generator)
        plain = (~drawn).nonzero().squeeze(1)
        leaf = x.detach().requires_grad_(True)
        with torch.enable_grad():
            seen = model.preprocess(leaf[varied])
            views = input_diversity(seen, min_scale=self.min_scale, generator=generator)
            loss = objective(model, goal.subset(varied), views)[1].sum()
            if len(plain):
                plain_logits, plain_loss = objective(model, goal.subset(plain), leaf[plain])
                loss = loss + plain_loss.sum()
            (grad,) = torch.autograd.grad(loss, leaf)
        with torch.no_grad():
            varied_logits = model(x[varied])
            logits = varied_logits.new_empty((len(x), varied_logits.shape[1]))
            logits[varied] = varied_logits
            if len(plain):
                logits[plain] = plain_logits.detach()
        forwards = 1 + drawn.to(torch.long).cpu()
        return logits, grad, forwards
