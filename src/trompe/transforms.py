"""Transformations an adversarial image should survive: parsed from specs, differentiable for
the attack (EOT), and real (Pillow) for the honest check.

A spec list such as ``"jpeg:50-95,resize:0.5-1.0,crop:0.9,blur,light"`` becomes a
:class:`TransformChain`. The chain has three faces:

- :meth:`TransformChain.draw`: a random, differentiable view of a batch (kornia's
  differentiable JPEG, resize, crop, blur, brightness/contrast...), for the attack's gradient;
- :meth:`TransformChain.views`: a few fixed, differentiable views at the hardest settings
  (lowest JPEG quality, smallest size...), for early stopping;
- :meth:`TransformChain.grid`: the real transforms on a grid of settings (Pillow's JPEG encoder
  at each quality, Pillow resizes, crops), for the survival check of the saved 8-bit image.

kornia is imported only when a differentiable view is made (the ``survive`` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["RealTransform", "TransformChain", "parse_transforms"]


@dataclass(frozen=True)
class RealTransform:
    """One point of the survival grid: a real transform at one setting.

    Attributes:
        name: the transform's spec name (``"jpeg"``).
        setting: the setting, for people (``"quality 75"``).
        apply: maps a PIL RGB image to the transformed PIL RGB image.
    """

    name: str
    setting: str
    apply: Callable[[Any], Any]


class TransformChain:
    """The transforms of a spec list, applied in order. See :func:`parse_transforms`."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __str__(self) -> str:
        """The canonical spec text (``"jpeg:50-95,resize:0.5-1"``)."""
        raise NotImplementedError

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random differentiable view of each image of (B, 3, H, W) ``images`` (the size may
        change: the model's own crop and resize follow)."""
        raise NotImplementedError

    def views(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """Fixed differentiable views at the hardest settings, for early stopping."""
        raise NotImplementedError

    def grid(self) -> list[RealTransform]:
        """The real transforms over a grid of settings, for the survival check."""
        raise NotImplementedError


def parse_transforms(spec: str | Sequence[Any] | TransformChain) -> TransformChain:
    """A :class:`TransformChain` from a spec text, a list of specs, or a chain (returned).

    Raises:
        InvalidArgumentError: an unknown transform, a bad or out-of-order range; one line.
    """
    raise NotImplementedError
