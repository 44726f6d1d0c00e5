"""A printable adversarial patch: one square image that makes the model see a target class
wherever it is pasted.

Brown, Mané, Roy, Abadi & Gilmer, "Adversarial Patch", 2017, arXiv:1712.09665. Threat model: no
norm bound on the pixels it covers, none outside; the patch is universal (learnt once on a
folder of photos) and robust, because it is learnt as an expectation over transformation (EOT,
Athalye et al. 2018) of where it lands, how large, how turned and how lit it is:

    patch = argmax_p  E_{x ~ photos, t ~ T} log P(target | paste(p, x, t))

:func:`learn_patch` runs Adam on that objective (its negative: the cross-entropy to the target,
averaged over a batch of draws) with the patch kept in [0, 1]. :func:`paste` is the
differentiable pasting (an affine ``grid_sample`` of the patch and of its mask, torch only);
:func:`draw_placements` draws the transformations; :func:`apply_patch` pastes the 8-bit patch on
a full-size photo without rotation, as ``trompe apply`` does, on the 8-bit grid.

Sizes: ``size`` is the patch's area as a fraction of the image the model sees (a square crop),
as in the paper (10 % of the image). Placed on a photo, the patch is a square whose side is a
fraction ``scale`` of the photo's shorter side: ``scale = sqrt(size)`` (size 0.1 -> side 0.316),
so on a square photo the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models.classifier import Classifier

__all__ = [
    "DEFAULT_ANGLE",
    "DEFAULT_PATCH_SIDE",
    "DEFAULT_SCALE_RANGE",
    "MAX_SIZE",
    "PatchProgress",
    "Placements",
    "apply_patch",
    "check_size",
    "check_where",
    "draw_placements",
    "learn_patch",
    "parse_where",
    "paste",
    "patch_box",
    "resize_patch",
    "side_of",
]

#: The side in pixels of the stored, printable patch (what ``patch.png`` holds).
DEFAULT_PATCH_SIDE = 256
#: The largest ``size`` (area fraction): a larger patch hides the photo, and stops being a patch.
MAX_SIZE = 0.5
#: The area of a draw is ``size`` times a factor drawn uniformly in this range.
DEFAULT_SCALE_RANGE = (0.7, 1.3)
#: Rotations drawn uniformly in +/- this many degrees.
DEFAULT_ANGLE = 20.0
#: Lighting: brightness added, uniform in +/- this; contrast factor uniform in 1 +/- this.
DEFAULT_BRIGHTNESS = 0.1
DEFAULT_CONTRAST = 0.2


def check_size(size: object) -> float:
    """``size``, the patch's area as a fraction of the image, in (0, :data:`MAX_SIZE`]."""
    if isinstance(size, bool) or not isinstance(size, int | float):
        raise InvalidArgumentError(f"size must be a number in (0, {MAX_SIZE}], got {size!r}")
    value = float(size)
    if not 0.0 < value <= MAX_SIZE:  # also refuses NaN
        raise InvalidArgumentError(
            f"size is the patch's area as a fraction of the image, in (0, {MAX_SIZE}]; got {size} "
            "(0.1 covers a tenth of the image)"
        )
    return value


def side_of(size: float) -> float:
    """The side of a square patch of area ``size`` (a fraction of a square image's area), as a
    fraction of the image's side: ``sqrt(size)``."""
    return math.sqrt(size)


@dataclass(frozen=True)
class Placements:
    """Where, how large, how turned and how lit a batch of pasted patches are.

    Attributes:
        centres: (B, 2) patch centres (x, y) as fractions of the image's width and height.
        sides: (B,) patch sides as fractions of the image's shorter side.
        angles: (B,) rotations in degrees (counter-clockwise on screen).
        brightness: (B,) added to the patch's pixels.
        contrast: (B,) the patch's pixels are scaled by this around mid-grey.
    """

    centres: torch.Tensor
    sides: torch.Tensor
    angles: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor

    def __len__(self) -> int:
        return int(self.sides.shape[0])


def draw_placements(
    count: int,
    size: float,
    generator: torch.Generator,
    *,
    aspect: float = 1.0,
    scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
    angle: float = DEFAULT_ANGLE,
    brightness: float = DEFAULT_BRIGHTNESS,
    contrast: float = DEFAULT_CONTRAST,
) -> Placements:
    """Random placements for EOT: area ``size`` x U(scale_range), rotation U(+/-angle), lighting.

    The centre is uniform over the positions where the unrotated square lies inside the image
    (a rotated one may clip its corners a little).

    Args:
        count: how many.
        size: the nominal area, a fraction of a square image's area.
        generator: the random source (CPU).
        aspect: the image's width / height (1 for the model's square crop).
        scale_range: the range of the area factor.
        angle: the largest rotation, in degrees.
        brightness: the largest brightness shift.
        contrast: the largest contrast change (the factor is in 1 +/- this).
    """

    def uniform(low: float, high: float, n: int = count) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    sides = uniform(size * scale_range[0], size * scale_range[1]).sqrt().clamp(max=1.0)
    # Sides are fractions of the shorter side; the half-extent in each axis as a fraction.
    half_x = sides / 2 / max(aspect, 1.0)
    half_y = sides / 2 * min(aspect, 1.0)
    centres = torch.stack(
        [
            half_x + (1 - 2 * half_x) * torch.rand(count, generator=generator),
            half_y + (1 - 2 * half_y) * torch.rand(count, generator=generator),
        ],
        dim=1,
    )
    return Placements(
        centres=centres,
        sides=sides,
        angles=uniform(-angle, angle),
        brightness=uniform(-brightness, brightness),
        contrast=uniform(1 - contrast, 1 + contrast),
    )


def paste(
    patch: torch.Tensor, images: torch.Tensor, placements: Placements
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``patch`` on each image as ``placements`` say, differentiably in the patch.

    The patch and an all-ones mask are mapped into each image by one affine ``grid_sample``
    (bilinear, zeros outside), so the mask's edge is antialiased and gradients flow to every
    patch pixel that lands in the image. Lighting is applied to the patch (a printed patch in
    another light), clamped to [0, 1].

    Args:
        patch: (3, P, P) in [0, 1] (may require grad).
        images: (B, 3, H, W) in [0, 1].
        placements: B placements.

    Returns:
        ``(pasted images (B, 3, H, W), mask (B, 1, H, W) in [0, 1])``.
    """
    batch, _, height, width = images.shape
    if len(placements) != batch:
        raise InvalidArgumentError(f"{len(placements)} placements for {batch} images")
    device, dtype = images.device, images.dtype
    centres = placements.centres.to(device, dtype)
    sides = placements.sides.to(device, dtype) * min(height, width)  # in pixels
    angles = torch.deg2rad(placements.angles.to(device, dtype))
    cos, sin = angles.cos(), angles.sin()
    # Output normalised coordinates (u, v) in [-1, 1] -> patch normalised coordinates:
    # q = R(-angle) @ diag(W / side, H / side) @ ((u, v) - centre), in pixel-true proportions.
    sx, sy = width / sides, height / sides
    u0, v0 = 2 * centres[:, 0] - 1, 2 * centres[:, 1] - 1
    a11, a12 = cos * sx, sin * sy
    a21, a22 = -sin * sx, cos * sy
    theta = torch.stack(
        [
            torch.stack([a11, a12, -(a11 * u0 + a12 * v0)], dim=1),
            torch.stack([a21, a22, -(a21 * u0 + a22 * v0)], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [batch, 4, height, width], align_corners=False)
    lit = (patch.to(device, dtype)[None] - 0.5) * placements.contrast.to(device, dtype)[
        :, None, None, None
    ] + 0.5
    lit = (lit + placements.brightness.to(device, dtype)[:, None, None, None]).clamp(0, 1)
    ones = torch.ones_like(lit[:, :1])
    sampled = F.grid_sample(
        torch.cat([lit, ones], dim=1), grid, mode="bilinear", align_corners=False
    )
    content, mask = sampled[:, :3], sampled[:, 3:]
    # content is already weighted by the mask at the edge (zeros padding): a soft edge.
    return images * (1 - mask) + content, mask


def resize_patch(patch: torch.Tensor, side: int) -> torch.Tensor:
    """The patch at ``side`` x ``side`` pixels (antialiased bilinear), differentiably."""
    if tuple(patch.shape[-2:]) == (side, side):
        return patch
    resized = F.interpolate(
        patch[None], size=(side, side), mode="bilinear", align_corners=False, antialias=True
    )[0]
    return resized.clamp(0, 1)


@dataclass(frozen=True)
class PatchProgress:
    """One step of :func:`learn_patch`: ``loss`` and ``target_prob`` are the means over the
    batch of draws of that step."""

    step: int
    steps: int
    loss: float
    target_prob: float


def learn_patch(
    model: Classifier,
    images: torch.Tensor,
    target: int,
    *,
    size: float = 0.1,
    steps: int = 500,
    batch_size: int = 8,
    step_size: float = 0.03,
    side: int = DEFAULT_PATCH_SIDE,
    seed: int = 0,
    progress: Callable[[PatchProgress], None] | None = None,
) -> torch.Tensor:
    """Learn a patch that makes ``model`` see ``target`` wherever it is pasted on ``images``.

    Each step draws ``batch_size`` photos (with replacement) and as many placements
    (:func:`draw_placements`), pastes the patch (:func:`paste`), and takes an Adam step of
    ``step_size`` on the mean cross-entropy to ``target``; the patch is clamped to [0, 1].
    The patch is stored at ``side`` pixels for printing and trained at the model's scale: it
    is first resized (antialiased) to the largest side a draw can have in the model's input,
    so the model sees it as it will see it once pasted, and the detail it cannot see stays
    smooth. It starts as smooth random colours.

    Args:
        model: the classifier (its parameters are not changed).
        images: (N, 3, H, W) photos in [0, 1] at the model's input size.
        target: the class to make the model see.
        size: the patch's nominal area as a fraction of the image.
        steps: optimisation steps.
        batch_size: draws per step.
        step_size: Adam's learning rate, in [0, 1] pixel units.
        side: the stored patch's side in pixels.
        seed: the random seed (initial patch, photos drawn, placements).
        progress: called after each step.

    Returns:
        The patch, (3, side, side) in [0, 1], on the 8-bit grid, on the CPU.
    """
    size = check_size(size)
    if images.dim() != 4 or images.shape[0] == 0:
        raise InvalidArgumentError("learn_patch needs a (N, 3, H, W) batch of photos")
    generator = torch.Generator().manual_seed(seed)
    device = model.device
    photos = images.to(device, torch.float32)
    height, width = int(photos.shape[-2]), int(photos.shape[-1])
    # The largest side a draw has, in the model's pixels: the patch is trained at that scale.
    train_side = max(2, math.ceil(side_of(size * DEFAULT_SCALE_RANGE[1]) * min(height, width)))
    coarse = torch.rand(1, 3, 8, 8, generator=generator)
    start = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    parameter = start[0].clamp(0, 1).to(device).requires_grad_(True)
    optimiser = torch.optim.Adam([parameter], lr=step_size)
    was_training = model.training
    model.eval()
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        targets = torch.full((batch_size,), target, device=device, dtype=torch.long)
        for step in range(1, steps + 1):
            index = torch.randint(photos.shape[0], (batch_size,), generator=generator)
            placements = draw_placements(batch_size, size, generator, aspect=width / height)
            small = resize_patch(parameter, train_side)
            pasted, _ = paste(small, photos[index.to(device)], placements)
            logits = model(pasted)
            loss = F.cross_entropy(logits, targets)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            with torch.no_grad():
                parameter.clamp_(0, 1)
            if progress is not None:
                prob = float(logits.detach().softmax(-1)[:, target].mean())
                progress(PatchProgress(step, steps, float(loss.detach()), prob))
    finally:
        for p, flag in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    return quantize(parameter.detach().cpu())


def check_where(where: object) -> tuple[float, float, float] | None:
    """``where`` as ``(x, y, scale)`` (each a finite number), or None."""
    if where is None:
        return None
    if not isinstance(where, tuple | list) or len(where) != 3:
        raise InvalidArgumentError(
            f"where is (x, y, scale): the patch centre as fractions of the width and height, and "
            f"its side as a fraction of the shorter side, e.g. (0.5, 0.5, 0.3); got {where!r}"
        )
    values = []
    for value in where:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgumentError(f"where holds numbers, got {where!r}")
        values.append(float(value))
    x, y, scale = values
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise InvalidArgumentError(
            "the patch centre x,y is a fraction of the width and height, in [0, 1]; "
            f"got {x:g},{y:g}"
        )
    if not 0.0 < scale <= 1.0:  # also refuses NaN
        if scale > 1.0:
            raise InvalidArgumentError(
                f"a patch of scale {scale:g} is larger than the image (scale is the patch side as "
                "a fraction of the image's shorter side, at most 1)"
            )
        raise InvalidArgumentError(f"the patch scale must be above 0, got {scale:g}")
    return x, y, scale


def parse_where(text: str) -> tuple[float, float, float]:
    """``--where x,y,scale`` as :func:`check_where` takes it (the command line's parser).

    Example:
        >>> parse_where("0.5,0.5,0.3")
        (0.5, 0.5, 0.3)
    """
    parts = [part.strip() for part in str(text).split(",")]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InvalidArgumentError(
            f"--where is x,y,scale: the patch centre as fractions of the photo's width and "
            f"height and its side as a fraction of the shorter side, e.g. 0.5,0.5,0.3; got "
            f"{str(text)[:40]!r}"
        )
    x, y, scale = values
    checked = check_where((x, y, scale))
    return checked if checked is not None else (x, y, scale)


def patch_box(height: int, width: int, where: tuple[float, float, float]) -> tuple[int, int, int]:
    """``(top, left, side)`` in pixels of a patch placed at ``where`` on a height x width image.

    Raises:
        InvalidArgumentError: the patch would be under one pixel, or would stick out.
    """
    x, y, scale = where
    side = round(scale * min(height, width))
    if side < 1:
        raise InvalidArgumentError(
            f"a patch of scale {scale:g} on a {width}x{height} image is under one pixel; "
            "give a larger scale"
        )
    left = round(x * width - side / 2)
    top = round(y * height - side / 2)
    if left < 0 or top < 0 or left + side > width or top + side > height:
        lo_x, hi_x = side / 2 / width, 1 - side / 2 / width
        lo_y, hi_y = side / 2 / height, 1 - side / 2 / height
        raise InvalidArgumentError(
            f"the patch ({side} px square) centred at {x:g},{y:g} sticks out of the {width}x"
            f"{height} image; choose x in [{lo_x:.2f}, {hi_x:.2f}] and y in "
            f"[{lo_y:.2f}, {hi_y:.2f}], or a smaller scale"
        )
    return top, left, side


def apply_patch(
    patch: torch.Tensor,
    image: torch.Tensor,
    where: tuple[float, float, float] | None = None,
    *,
    size: float | None = None,
    meta: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Paste ``patch`` on a full-size photo, upright, at ``where``; on the 8-bit grid.

    This is ``trompe apply patch.png photo.jpg --where x,y,scale``: the patch is resized
    (antialiased bilinear) to ``round(scale * min(H, W))`` pixels and replaces the photo's
    pixels in that square.

    Args:
        patch: (3, P, P) in [0, 1] (``patch.png``).
        image: (3, H, W) in [0, 1].
        where: ``(x, y, scale)``: the patch centre as fractions of the photo's width and height
            (0,0 top left; 0.5,0.5 the middle), and the patch side as a fraction of the photo's
            shorter side, in (0, 1]. ``None``: the middle, at the patch's learnt size
            (``scale = sqrt(size)``).
        size: the patch's learnt area fraction, used when ``where`` is None.
        meta: the patch's PNG metadata (``trompe apply`` passes it): its ``size`` is used when
            ``size`` is not given.

    Returns:
        (3, H, W), the photo with the patch, quantized to 8 bits.

    Raises:
        InvalidArgumentError: the shapes are wrong, ``where`` is out of range, the patch is
            larger than the photo or sticks out of it.

    Example:
        >>> photo = torch.rand(3, 300, 400)
        >>> apply_patch(torch.rand(3, 256, 256), photo, (0.5, 0.5, 0.3), size=0.1).shape
        torch.Size([3, 300, 400])
    """
    if patch.dim() != 3 or patch.shape[0] != 3 or patch.shape[1] != patch.shape[2]:
        raise InvalidArgumentError(
            f"a patch is a square (3, P, P) image, got shape {tuple(patch.shape)}"
        )
    if image.dim() != 3 or image.shape[0] != 3:
        raise InvalidArgumentError(f"apply_patch takes a (3, H, W) image, got {tuple(image.shape)}")
    checked = check_where(where)
    if checked is None:
        if size is None and meta is not None:
            size = meta.get("size")
        if size is None:
            raise InvalidArgumentError(
                "the patch's size is unknown (no metadata): give where=(x, y, scale), "
                "e.g. --where 0.5,0.5,0.3"
            )
        checked = (0.5, 0.5, side_of(check_size(size)))
    height, width = int(image.shape[-2]), int(image.shape[-1])
    top, left, side = patch_box(height, width, checked)
    resized = resize_patch(patch.to(image.device, torch.float32), side).to(image.dtype)
    out = image.clone()
    out[:, top : top + side, left : left + side] = resized
    return quantize(out)
