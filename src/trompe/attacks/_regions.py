"""Square regions of an image, shared by the score-based attacks (Square, SimBA).

A score-based attack spends queries; it should not spend them on pixels the model never reads.
These helpers find the region that a classifier's crop and resize read (:func:`seen_box`), work
on that region alone (:func:`crop`, :func:`paste`), query the model with a changed region and
count the queries on the :class:`~trompe.attacks.tracker.Tracker` (:func:`ask_region`), freeze
the images whose queried version met the goal (:func:`record_region`), and round an L2 change to
8 bits without losing most of it (:func:`round_l2`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trompe.attacks.base import FixedBudgetAttack, lp_norm
from trompe.attacks.oracle import Oracle
from trompe.attacks.tracker import Tracker

__all__ = ["Box", "ask_region", "crop", "paste", "record_region", "round_l2", "seen_box"]


#: (top, left, height, width) of a region of an image.
Box = tuple[int, int, int, int]


def seen_box(model: Any, height: int, width: int) -> Box:
    """The part of an image of ``height`` x ``width`` that the model's preprocessing reads.

    trompe's classifiers take images of any size through a centred crop with the aspect ratio
    of their input size (shrunk by their ``crop_fraction``), then a resize. From the input size
    alone (all that an :class:`~trompe.attacks.oracle.Oracle` tells), the region is known up to
    the crop fraction: the largest centred region with that aspect ratio holds every pixel the
    model reads. Where ``model`` also tells its ``crop_fraction`` (a
    :class:`~trompe.models.classifier.Classifier` does), the box is exact. No query is spent.

    Returns:
        (top, left, height, width) of the box; the whole image when the model has no fixed
        input size or the image has it already.
    """
    size = getattr(model, "input_size", None)
    if size is None or (height, width) == tuple(size):
        return (0, 0, height, width)
    out_h, out_w = size
    fraction = float(getattr(model, "crop_fraction", 1.0))
    # The same arithmetic as trompe.images.center_crop_resize.
    if height * out_w >= width * out_h:
        region_h, region_w = width * out_h / out_w, float(width)
    else:
        region_h, region_w = float(height), height * out_w / out_h
    crop_h = min(height, max(1, math.floor(region_h * fraction + 0.5)))
    crop_w = min(width, max(1, math.floor(region_w * fraction + 0.5)))
    return ((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w)


def crop(images: torch.Tensor, box: Box) -> torch.Tensor:
    top, left, height, width = box
    return images[..., top : top + height, left : left + width].clone()


def paste(images: torch.Tensor, region: torch.Tensor, box: Box) -> torch.Tensor:
    """``images`` with ``box`` replaced by ``region`` (``region`` itself, not a copy, when the box
    is the whole image)."""
    top, left, height, width = box
    if (height, width) == tuple(images.shape[-2:]):
        return region
    out = images.clone()
    out[..., top : top + height, left : left + width] = region
    return out


def round_l2(
    attack: FixedBudgetAttack, adversarial: torch.Tensor, images: torch.Tensor
) -> torch.Tensor:
    """Round to 8 bits within an L2 budget, keeping nearly all of the change.

    Nearest rounding adds noise of about ``sqrt(n / 12)`` levels over ``n`` changed values, which
    pushes a change on the sphere just past it. Rather than rounding the whole change towards
    the original (which loses half a level per value on average), shrink the change by the
    little that the rounding noise needs and round again; the few images still past the budget
    after a few tries take the engine's rounding towards the original.
    """
    with torch.no_grad():
        limit = attack.eps * 255 + 1e-4
        original = images * 255
        change = adversarial * 255 - original
        rounded = (original + change).round().clamp(0, 255)
        for _ in range(6):
            size = lp_norm(rounded - original, "l2")
            over = size > limit
            if not bool(over.any()):
                break
            noise = lp_norm(rounded - original - change, "l2")
            wanted = (limit**2 - noise.square()).clamp_min(0).sqrt()
            # The noise is not quite orthogonal to the change: shrink by the overshoot at least.
            scale = torch.minimum(wanted / lp_norm(change, "l2").clamp_min(1e-12), limit / size)
            scale = (scale * 0.999).clamp(max=1.0)
            change = torch.where(over.view(-1, 1, 1, 1), change * scale.view(-1, 1, 1, 1), change)
            retry = (original[over] + change[over]).round().clamp(0, 255)
            rounded[over] = retry
        out = rounded / 255  # whole levels: on the grid already
        over = lp_norm(rounded - original, "l2") > limit
        if bool(over.any()):
            out[over] = FixedBudgetAttack.round_into_budget(attack, adversarial[over], images[over])
        return out


def ask_region(
    model: Oracle,
    tracker: Tracker,
    images: torch.Tensor,
    box: Box,
    index: torch.Tensor,
    regions: torch.Tensor,
) -> torch.Tensor:
    """Query the model on images ``index`` with their seen box replaced; count the queries."""
    logits = model.logits(paste(images[index], regions, box))
    tracker.count(index, forwards=1)
    return logits


def record_region(
    tracker: Tracker,
    images: torch.Tensor,
    box: Box,
    index: torch.Tensor,
    regions: torch.Tensor,
    met: torch.Tensor,
) -> None:
    """Freeze the images whose queried (8-bit) version met the goal."""
    winners = index[met]
    if len(winners):
        tracker.done[winners] = True
        tracker.adversarial[winners] = paste(images[winners], regions[met], box)
