"""How large a change is: Lp norms of a batch, and the norms and PSNR of a saved result.

A leaf module (torch only): the attacks use :func:`lp_norm` on the [0, 1] change as they run,
and :func:`measure` gives the figures that results, reports and JSON records show, in 0-255
pixel levels, on the 8-bit values that a PNG holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["Norm", "Norms", "lp_norm", "measure"]

#: Threat models. L-inf, L2 and L1 are measured on the change in [0, 1] units (reports give
#: 0-255 units); L0 counts the pixels (positions, any channel) that change.
Norm = Literal["linf", "l2", "l1", "l0"]


def lp_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The size of each change of a batch in ``norm``. Shape: (B, C, H, W) -> (B,)."""
    flat = delta.flatten(1)
    if norm == "linf":
        size: torch.Tensor = flat.abs().amax(dim=1)
    elif norm == "l2":
        size = flat.norm(dim=1)
    elif norm == "l1":
        size = flat.abs().sum(dim=1)
    else:
        size = (delta != 0).any(dim=1).flatten(1).sum(dim=1).to(delta.dtype)
    return size


@dataclass(frozen=True)
class Norms:
    """Size of a perturbation per image, in 0-255 pixel levels.

    Attributes:
        linf: the largest change of one pixel channel.
        l2: the Euclidean norm of the whole change.
        psnr: peak signal-to-noise ratio in dB (``inf`` for no change).
        l1: the sum of the absolute changes of all pixel channels.
        l0: the number of pixels (positions, any channel) that changed.
    """

    linf: torch.Tensor
    l2: torch.Tensor
    psnr: torch.Tensor
    l1: torch.Tensor
    l0: torch.Tensor

    def of(self, norm: str) -> torch.Tensor:
        """The norm named ``norm`` (``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"``)."""
        if norm not in ("linf", "l2", "l1", "l0"):
            raise ValueError(f"unknown norm {norm!r}")
        value: torch.Tensor = getattr(self, norm)
        return value


def measure(original: torch.Tensor, adversarial: torch.Tensor) -> Norms:
    """Norms of ``adversarial - original`` in 0-255 units, computed on the 8-bit values.

    Both are snapped to the 8-bit grid first, so the figures are those of the saved PNGs.

    Shape:
        - Input: two (B, 3, H, W) batches in [0, 1].
        - Output: (B,) float64 tensors.
    """
    a = (original.detach().double() * 255).round()
    b = (adversarial.detach().double() * 255).round()
    changed = (b != a).any(dim=1).flatten(1).sum(dim=1).double()
    diff = (b - a).flatten(1)
    linf = diff.abs().amax(dim=1) if diff.shape[1] else torch.zeros(len(diff), dtype=diff.dtype)
    l2 = diff.norm(dim=1)
    l1 = diff.abs().sum(dim=1)
    mse = diff.square().mean(dim=1)
    psnr = torch.where(mse > 0, 10 * torch.log10(255.0**2 / mse), torch.full_like(mse, math.inf))
    return Norms(linf.cpu(), l2.cpu(), psnr.cpu(), l1.cpu(), changed.cpu())
