"""The picture of a perturbation: the change amplified around mid-grey."""

from __future__ import annotations

import math

import torch

from trompe.errors import InvalidArgumentError
from trompe.images import to_uint8

__all__ = ["perturbation_image"]


def perturbation_image(
    original: torch.Tensor, adversarial: torch.Tensor, amplify: float = 10.0
) -> torch.Tensor:
    """The change an attack made, amplified around mid-grey: ``0.5 + amplify * (adv - orig)``.

    Grey means no change; brighter or darker channels were raised or lowered. Values are
    clamped to [0, 1], so changes larger than ``0.5 / amplify`` saturate.

    Args:
        original: the clean images, in [0, 1].
        adversarial: the adversarial images, in [0, 1], of the same shape.
        amplify: how much the change is magnified (10: one 8-bit level becomes ten).

    Returns:
        The picture of the change, float, in [0, 1], on the inputs' device.

    Raises:
        InvalidArgumentError: not float tensors of one shape (3, H, W) or (B, 3, H, W), or
            ``amplify`` not a positive finite number.

    Shape:
        - Input: (3, H, W) or (B, 3, H, W), twice.
        - Output: same as the input.

    Example:
        >>> x = torch.zeros(3, 2, 2)
        >>> perturbation_image(x, x + 1 / 255)[0, 0, 0] * 255
        tensor(137.5000)
    """
    for name, tensor in (("original", original), ("adversarial", adversarial)):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            what = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise InvalidArgumentError(f"{name} must be a float image tensor, got {what}")
        if tensor.dim() not in (3, 4) or tensor.shape[-3] != 3:
            raise InvalidArgumentError(
                f"{name} must have shape (3, H, W) or (B, 3, H, W), got {tuple(tensor.shape)}"
            )
    if original.shape != adversarial.shape:
        raise InvalidArgumentError(
            "original and adversarial must have the same shape, got "
            f"{tuple(original.shape)} and {tuple(adversarial.shape)}"
        )
    if isinstance(amplify, bool) or not isinstance(amplify, int | float):
        raise InvalidArgumentError(f"amplify must be a number, got {amplify!r}")
    if not (math.isfinite(amplify) and amplify > 0):
        raise InvalidArgumentError(f"amplify must be a positive finite number, got {amplify}")
    original = original.detach()
    adversarial = adversarial.detach().to(original.device)
    dtype = torch.promote_types(original.dtype, adversarial.dtype)
    change = adversarial.to(dtype) - original.to(dtype)
    return (0.5 + amplify * change).clamp_(0.0, 1.0)


def _perturbation_levels(
    original: torch.Tensor, adversarial: torch.Tensor, amplify: float = 10.0
) -> torch.Tensor:
    """:func:`perturbation_image` in 8 bits, computed on the images' 8-bit levels.

    A change of ``d`` levels becomes ``round(127.5 + amplify * d)`` exactly (128 + 10 d for
    the default x10, ties to even), so that the saved picture is symmetric around grey and
    free of float noise at the rounding ties.
    """
    change = to_uint8(adversarial).double() - to_uint8(original).double()
    return (127.5 + amplify * change).round_().clamp_(0, 255).to(torch.uint8)
