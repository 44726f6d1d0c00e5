"""Transformations an adversarial image should survive: parsed from specs, differentiable for
the attack (EOT), and real (Pillow) for the honest check.

A spec list such as ``"jpeg:50-95,resize:0.5-1.0,crop:0.9,blur,light"`` becomes a
:class:`TransformChain`. The chain has three faces:

- :meth:`TransformChain.draw`: a random, differentiable view of a batch (kornia's
  differentiable JPEG, resize, crop, blur, brightness/contrast...), for the attack's gradient
  (expectation over transformation, EOT: Athalye, Engstrom, Ilyas & Kwok, "Synthesizing Robust
  Adversarial Examples", ICML 2018, arXiv:1707.07397);
- :meth:`TransformChain.views`: a few fixed, differentiable views at the hardest settings
  (lowest JPEG quality, smallest size...), for early stopping;
- :meth:`TransformChain.grid`: the real transforms on a grid of settings (Pillow's JPEG encoder
  at each quality, Pillow resizes, crops), for the survival check of the saved 8-bit image.

The spec grammar: comma-separated ``name[:value]`` or ``name[:low-high]``:

==============  ==========================================  ====================  ==========
name            value                                       bounds                default
==============  ==========================================  ====================  ==========
``jpeg``        JPEG quality                                1 to 100              50-95
``resize``      scale of each side (the image gets smaller)  (0, 1]                0.5-1
``crop``        kept fraction of each side, random place    (0, 1]                0.9
``blur``        Gaussian sigma in pixels                    0 to 20               0-1.5
``light``       brightness and contrast change, +- fraction  0 to 0.9              0-0.2
``rotate``      rotation in degrees, either way             0 to 180              0-5
``perspective`` corners pulled in, fraction of half a side  0 to 0.9              0-0.1
``noise``       Gaussian noise std in 0-255 levels           0 to 64               0-4
==============  ==========================================  ====================  ==========

For ``jpeg``, ``resize`` and ``crop`` one value is that value (``jpeg:75`` is quality 75); for
the strengths (``blur`` ... ``noise``), where 0 changes nothing, one value is the largest one
(``rotate:10`` is 0 to 10 degrees, either way).

Random draws: JPEG quality, blur sigma, lighting, rotation, perspective and noise are drawn per
image; the resize scale and the crop fraction per batch (the views of a batch share one size),
the crop's place per image.

Resizing is one way, as a messenger does: the recipient gets the smaller image, and the
classifier's own resize brings it to its input size (the real check classifies the smaller
Pillow image the same way).

kornia is imported only when a differentiable view is made (the ``survive`` extra).
"""

from __future__ import annotations

import difflib
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trompe.errors import InvalidArgumentError, MissingDependencyError

__all__ = ["KNOWN_TRANSFORMS", "RealTransform", "TransformChain", "parse_transforms"]

View = Callable[[torch.Tensor], torch.Tensor]


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


def _kornia() -> Any:
    """kornia, or one line on how to install it."""
    try:
        import kornia
    except ImportError:  # pragma: no cover (installed with the test extra)
        raise MissingDependencyError(
            'differentiable transforms (--survive) need kornia: pip install "trompe[survive]"'
        ) from None
    return kornia


def _fmt(value: float) -> str:
    return f"{value:g}"


def _uniform(low: float, high: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` draws from U[low, high], on the generator's device."""
    draw = torch.rand(count, generator=generator, device=generator.device)
    return low + (high - low) * draw


def _signs(count: int, generator: torch.Generator) -> torch.Tensor:
    draw = torch.rand(count, generator=generator, device=generator.device)
    return torch.where(draw < 0.5, -1.0, 1.0)


def _on(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return values.to(images.device, images.dtype)


@dataclass(frozen=True)
class _Kind:
    """What a transform name accepts: bounds, default, whether one value means ``0-value``."""

    low: float
    high: float
    default: tuple[float, float]
    strength: bool  # 0 changes nothing; one value v means 0-v
    low_open: bool = False  # the low bound itself is refused (a scale of 0)
    whole: bool = False  # whole numbers only (JPEG quality)
    what: str = ""


_KINDS: dict[str, _Kind] = {
    "jpeg": _Kind(1, 100, (50, 95), False, whole=True, what="a JPEG quality"),
    "resize": _Kind(0, 1, (0.5, 1.0), False, low_open=True, what="a scale of each side"),
    "crop": _Kind(0, 1, (0.9, 0.9), False, low_open=True, what="the kept fraction of each side"),
    "blur": _Kind(0, 20, (0, 1.5), True, what="a blur sigma in pixels"),
    "light": _Kind(0, 0.9, (0, 0.2), True, what="a brightness/contrast change (fraction)"),
    "rotate": _Kind(0, 180, (0, 5), True, what="a rotation in degrees"),
    "perspective": _Kind(0, 0.9, (0, 0.1), True, what="a perspective distortion (fraction)"),
    "noise": _Kind(0, 64, (0, 4), True, what="a noise std in 0-255 levels"),
}

#: The transform names a spec may use.
KNOWN_TRANSFORMS = tuple(_KINDS)

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE = re.compile(rf"^({_NUMBER})(?:-({_NUMBER}))?$")


class _Transform:
    """One transform of a chain, with its range ``[low, high]``."""

    name = ""

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high

    def __str__(self) -> str:
        if self.low == self.high:
            return f"{self.name}:{_fmt(self.low)}"
        return f"{self.name}:{_fmt(self.low)}-{_fmt(self.high)}"

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def views(self) -> list[View]:
        raise NotImplementedError

    def grid(self) -> list[RealTransform]:
        raise NotImplementedError

    def _strengths(self) -> list[float]:
        """The grid of a strength: half the largest and the largest (0 changes nothing)."""
        points = [self.high / 2, self.high] if self.low < self.high / 2 else [self.high]
        if self.low > 0 and self.low not in points:
            points.insert(0, self.low)
        return sorted({p for p in points if p > 0})


# -- JPEG --------------------------------------------------------------------------------------

#: The qualities the survival grid tries, clipped to the asked range (its ends always in).
JPEG_GRID = (50, 60, 70, 75, 80, 90, 95)


def _jpeg_differentiable(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """kornia's differentiable JPEG (Reich et al. 2024), per-image quality; kornia pads to a
    multiple of 16 (the 4:2:0 macroblock) and crops back itself."""
    kornia = _kornia()
    out: torch.Tensor = kornia.enhance.jpeg_codec_differentiable(images, _on(quality, images))
    return out.clamp(0, 1)


def _jpeg_real(quality: int) -> Callable[[Any], Any]:
    def apply(picture: Any) -> Any:
        from PIL import Image

        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer, formats=("JPEG",)) as decoded:
            return decoded.convert("RGB")

    return apply


class _Jpeg(_Transform):
    name = "jpeg"

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        quality = _uniform(self.low, self.high, len(images), generator)
        return _jpeg_differentiable(images, quality)

    def views(self) -> list[View]:
        low = torch.tensor([self.low])
        return [lambda x: _jpeg_differentiable(x, low.expand(len(x)))]

    def grid(self) -> list[RealTransform]:
        qualities = {q for q in JPEG_GRID if self.low <= q <= self.high}
        qualities |= {int(self.low), int(self.high)}
        return [
            RealTransform("jpeg", f"quality {q}", _jpeg_real(q))
            for q in sorted(qualities, reverse=True)
        ]


# -- resize ------------------------------------------------------------------------------------


def _scaled(size: int, scale: float) -> int:
    return max(1, round(size * scale))


def _resize_differentiable(images: torch.Tensor, scale: float) -> torch.Tensor:
    height, width = images.shape[-2:]
    size = (_scaled(int(height), scale), _scaled(int(width), scale))
    if size == (height, width):
        return images
    out = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.clamp(0, 1)


def _resize_real(scale: float) -> Callable[[Any], Any]:
    def apply(picture: Any) -> Any:
        from PIL import Image

        width, height = picture.size
        size = (_scaled(width, scale), _scaled(height, scale))
        return picture.resize(size, resample=Image.Resampling.BICUBIC)

    return apply


class _Resize(_Transform):
    name = "resize"

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        scale = float(_uniform(self.low, self.high, 1, generator)[0])
        return _resize_differentiable(images, scale)

    def views(self) -> list[View]:
        if self.low >= 1:
            return []
        return [lambda x: _resize_differentiable(x, self.low)]

    def grid(self) -> list[RealTransform]:
        points = {self.low, self.high, (self.low + self.high) / 2}
        return [
            RealTransform("resize", f"scale {_fmt(round(s, 3))}", _resize_real(round(s, 3)))
            for s in sorted(points)
            if s < 1
        ]


# -- crop --------------------------------------------------------------------------------------

_PLACES = {
    "centre": (0.5, 0.5),
    "top left": (0.0, 0.0),
    "top right": (0.0, 1.0),
    "bottom left": (1.0, 0.0),
    "bottom right": (1.0, 1.0),
}


def _crop_box(height: int, width: int, fraction: float, top: float, left: float) -> tuple[int, ...]:
    """``(y, x, h, w)``: the kept ``fraction`` of each side, placed at relative ``(top, left)``
    (0: first pixel, 1: flush with the far side)."""
    h, w = _scaled(height, fraction), _scaled(width, fraction)
    y, x = round((height - h) * top), round((width - w) * left)
    return y, x, h, w


def _crop_real(fraction: float, place: tuple[float, float]) -> Callable[[Any], Any]:
    def apply(picture: Any) -> Any:
        width, height = picture.size
        y, x, h, w = _crop_box(height, width, fraction, *place)
        return picture.crop((x, y, x + w, y + h))

    return apply


class _Crop(_Transform):
    name = "crop"

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        fraction = float(_uniform(self.low, self.high, 1, generator)[0])
        height, width = (int(s) for s in images.shape[-2:])
        places = torch.rand(len(images), 2, generator=generator, device=generator.device)
        crops = []
        for image, (top, left) in zip(images, places.tolist(), strict=True):
            y, x, h, w = _crop_box(height, width, fraction, top, left)
            crops.append(image[:, y : y + h, x : x + w])
        return torch.stack(crops)

    def views(self) -> list[View]:
        if self.low >= 1:
            return []

        def centre(x: torch.Tensor) -> torch.Tensor:
            y0, x0, h, w = _crop_box(int(x.shape[-2]), int(x.shape[-1]), self.low, 0.5, 0.5)
            return x[..., y0 : y0 + h, x0 : x0 + w]

        return [centre]

    def grid(self) -> list[RealTransform]:
        if self.low >= 1:
            return []
        return [
            RealTransform("crop", f"{_fmt(self.low)} {where}", _crop_real(self.low, place))
            for where, place in _PLACES.items()
        ]


# -- blur --------------------------------------------------------------------------------------


def _blur_differentiable(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with one sigma per image (kornia; reflect padding)."""
    kornia = _kornia()
    sigma = _on(sigma, images).clamp_min(1e-3)
    largest = float(sigma.max())
    size = 2 * math.ceil(3 * largest) + 1
    size = min(size, 2 * ((min(images.shape[-2:]) - 1) // 2) + 1)
    if size < 3:
        return images
    sigmas = sigma[:, None].expand(len(images), 2)
    out: torch.Tensor = kornia.filters.gaussian_blur2d(
        images, (size, size), sigmas, border_type="reflect"
    )
    return out


def _blur_real(sigma: float) -> Callable[[Any], Any]:
    def apply(picture: Any) -> Any:
        from PIL import ImageFilter

        return picture.filter(ImageFilter.GaussianBlur(radius=sigma))  # radius: the std

    return apply


class _Blur(_Transform):
    name = "blur"

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _blur_differentiable(images, _uniform(self.low, self.high, len(images), generator))

    def views(self) -> list[View]:
        if self.high <= 0:
            return []
        high = torch.tensor([self.high])
        return [lambda x: _blur_differentiable(x, high.expand(len(x)))]

    def grid(self) -> list[RealTransform]:
        return [RealTransform("blur", f"sigma {_fmt(s)}", _blur_real(s)) for s in self._strengths()]


# -- brightness and contrast -------------------------------------------------------------------


def _grey(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean luminance (ITU-R 601-2, as Pillow's ``L``), shape (B, 1, 1, 1)."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
    luminance = (images * weights.view(1, 3, 1, 1)).sum(dim=1)
    return luminance.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def _light_differentiable(
    images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor
) -> torch.Tensor:
    """Pillow's ImageEnhance, differentiable: brightness scales the image (a blend with black),
    contrast blends with the mean grey; each factor is ``1 + change``."""
    b = _on(1 + brightness, images).view(-1, 1, 1, 1)
    c = _on(1 + contrast, images).view(-1, 1, 1, 1)
    out = (images * b).clamp(0, 1)
    mean = _grey(out)
    return (mean + c * (out - mean)).clamp(0, 1)


def _light_real(kind: str, factor: float) -> Callable[[Any], Any]:
    def apply(picture: Any) -> Any:
        from PIL import ImageEnhance

        enhancer = ImageEnhance.Brightness if kind == "brightness" else ImageEnhance.Contrast
        return enhancer(picture).enhance(factor)

    return apply


class _Light(_Transform):
    name = "light"

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count = len(images)
        brightness = _uniform(self.low, self.high, count, generator) * _signs(count, generator)
        contrast = _uniform(self.low, self.high, count, generator) * _signs(count, generator)
        return _light_differentiable(images, brightness, contrast)

    def views(self) -> list[View]:
        if self.high <= 0:
            return []
        change = torch.tensor([-self.high])
        # Darker and flatter: the perturbation shrinks with the image's range.
        return [lambda x: _light_differentiable(x, change.expand(len(x)), change.expand(len(x)))]

    def grid(self) -> list[RealTransform]:
        out: list[RealTransform] = []
        if self.high <= 0:
            return out
        for kind in ("brightness", "contrast"):
            for factor in (1 - self.high, 1 + self.high):
                out.append(
                    RealTransform("light", f"{kind} x{_fmt(factor)}", _light_real(kind, factor))
                )
        return out


# -- rotation ----------------------------------------------------------------------------------


def _rotate_differentiable(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate about the centre, counter-clockwise for positive angles, black corners (as
    Pillow's ``Image.rotate``)."""
    kornia = _kornia()
    out: torch.Tensor = kornia.geometry.transform.rotate(
        images, _on(degrees, images), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out.clamp(0, 1)


def _rotate_real(degrees: float) -> Callable[[Any], Any]:
    def apply(picture: Any) -> Any:
        from PIL import Image

        return picture.rotate(degrees, resample=Image.Resampling.BILINEAR)

    return apply


class _Rotate(_Transform):
    name = "rotate"

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count = len(images)
        degrees = _uniform(self.low, self.high, count, generator) * _signs(count, generator)
        return _rotate_differentiable(images, degrees)

    def views(self) -> list[View]:
        if self.high <= 0:
            return []
        high = torch.tensor([self.high])
        return [lambda x: _rotate_differentiable(x, high.expand(len(x)))]

    def grid(self) -> list[RealTransform]:
        return [
            RealTransform("rotate", f"{_fmt(sign * s)} degrees", _rotate_real(sign * s))
            for s in self._strengths()
            for sign in (1, -1)
        ]


# -- perspective -------------------------------------------------------------------------------

#: The fixed tilts of the grid: which corners (top-left, top-right, bottom-right, bottom-left)
#: are pulled in, along which axis.
_TILTS = {
    "top narrower": ((1, 0), (-1, 0), (0, 0), (0, 0)),
    "bottom narrower": ((0, 0), (0, 0), (-1, 0), (1, 0)),
    "left shorter": ((0, 1), (0, 0), (0, 0), (0, -1)),
    "right shorter": ((0, 0), (0, 1), (0, -1), (0, 0)),
}


def _corners(height: int, width: int) -> np.ndarray[Any, Any]:
    """The image corners, ``(x, y)`` from the top left, clockwise."""
    return np.array(
        [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64
    )


def _moved(height: int, width: int, shifts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Corners moved by ``shifts`` (4, 2) in fractions of half a side (x of width, y of height)."""
    half = np.array([(width - 1) / 2, (height - 1) / 2])
    result: np.ndarray[Any, Any] = _corners(height, width) + shifts * half
    return result


def _perspective_differentiable(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Warp each image so that its corners land at the shifted places (B, 4, 2); black outside."""
    kornia = _kornia()
    height, width = (int(s) for s in images.shape[-2:])
    source = torch.tensor(_corners(height, width), dtype=images.dtype, device=images.device)
    source = source.expand(len(images), 4, 2)
    half = torch.tensor(
        [(width - 1) / 2, (height - 1) / 2], dtype=images.dtype, device=images.device
    )
    target = source + _on(shifts, images) * half
    matrix = kornia.geometry.transform.get_perspective_transform(source, target)
    out: torch.Tensor = kornia.geometry.transform.warp_perspective(
        images, matrix, (height, width), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out.clamp(0, 1)


def _perspective_real(distortion: float, tilt: str) -> Callable[[Any], Any]:
    def apply(picture: Any) -> Any:
        from PIL import Image

        width, height = picture.size
        shifts = np.array(_TILTS[tilt], dtype=np.float64) * distortion
        target = _moved(height, width, shifts)
        source = _corners(height, width)
        # Pillow maps each output pixel (x, y) to an input point: solve for the 8 coefficients
        # of the homography from the moved corners (output) to the image corners (input).
        rows, values = [], []
        for (x, y), (u, v) in zip(target, source, strict=True):
            rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
            rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
            values += [u, v]
        coefficients = np.linalg.solve(np.array(rows), np.array(values))
        return picture.transform(
            picture.size,
            Image.Transform.PERSPECTIVE,
            tuple(float(c) for c in coefficients),
            resample=Image.Resampling.BILINEAR,
        )

    return apply


class _Perspective(_Transform):
    name = "perspective"

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count = len(images)
        amount = _uniform(self.low, self.high, count, generator)
        # Each corner moves inwards by up to ``amount`` of half a side, along each axis.
        pulls = torch.rand(count, 4, 2, generator=generator, device=generator.device)
        inwards = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], device=generator.device)
        return _perspective_differentiable(images, pulls * inwards * amount.view(-1, 1, 1))

    def views(self) -> list[View]:
        if self.high <= 0:
            return []
        shifts = torch.tensor(_TILTS["top narrower"], dtype=torch.float32) * self.high
        return [lambda x: _perspective_differentiable(x, shifts.expand(len(x), 4, 2))]

    def grid(self) -> list[RealTransform]:
        return [
            RealTransform(
                "perspective", f"{_fmt(self.high)} {tilt}", _perspective_real(self.high, tilt)
            )
            for tilt in _TILTS
            if self.high > 0
        ]


# -- noise -------------------------------------------------------------------------------------


def _noise_real(std: float) -> Callable[[Any], Any]:
    def apply(picture: Any) -> Any:
        from PIL import Image

        pixels = np.asarray(picture, dtype=np.float64)
        rng = np.random.default_rng(0)  # a fixed draw: the check is reproducible
        noisy = pixels + rng.normal(0, std, pixels.shape)
        return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))

    return apply


class _Noise(_Transform):
    name = "noise"

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        std = _uniform(self.low, self.high, len(images), generator) / 255
        noise = torch.randn(images.shape, generator=generator, device=generator.device)
        return (images + _on(noise, images) * _on(std, images).view(-1, 1, 1, 1)).clamp(0, 1)

    def views(self) -> list[View]:
        if self.high <= 0:
            return []
        std = self.high / 255

        def noisy(x: torch.Tensor) -> torch.Tensor:
            generator = torch.Generator(device=x.device).manual_seed(0)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return (x + noise * std).clamp(0, 1)

        return [noisy]

    def grid(self) -> list[RealTransform]:
        return [
            RealTransform("noise", f"std {_fmt(s)} levels", _noise_real(s))
            for s in self._strengths()
        ]


_CLASSES: dict[str, type[_Transform]] = {
    "jpeg": _Jpeg,
    "resize": _Resize,
    "crop": _Crop,
    "blur": _Blur,
    "light": _Light,
    "rotate": _Rotate,
    "perspective": _Perspective,
    "noise": _Noise,
}


class TransformChain:
    """The transforms of a spec list, applied in order. See :func:`parse_transforms`."""

    def __init__(self, transforms: Sequence[_Transform] = ()) -> None:
        self._transforms = tuple(transforms)

    def __len__(self) -> int:
        return len(self._transforms)

    def __str__(self) -> str:
        """The canonical spec text (``"jpeg:50-95,resize:0.5-1"``)."""
        return ",".join(str(t) for t in self._transforms)

    def __repr__(self) -> str:
        return f"parse_transforms({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransformChain) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def names(self) -> list[str]:
        """The transforms' names, in order."""
        return [t.name for t in self._transforms]

    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random differentiable view of each image of (B, 3, H, W) ``images`` (the size may
        change: the model's own crop and resize follow).

        With one transform, it is always applied; with several, each view applies a random
        non-empty subset of them (each with probability 1/2, per batch), in the chain's order,
        so that the views hold each transform alone (as the survival grid tries them) as well
        as their combinations. Each applied transform draws its random setting from
        ``generator`` (per image, except the resize scale and the crop fraction: per batch).
        """
        chosen = [True] * len(self._transforms)
        if len(self._transforms) > 1:
            device = generator.device
            drawn = torch.rand(len(self._transforms), generator=generator, device=device) < 0.5
            if not bool(drawn.any()):
                one = torch.randint(len(self._transforms), (1,), generator=generator, device=device)
                drawn[one] = True
            chosen = drawn.tolist()
        for transform, on in zip(self._transforms, chosen, strict=True):
            if on:
                images = transform.draw(images, generator)
        return images

    def views(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """Fixed differentiable views at the hardest settings, for early stopping: one per
        transform, alone (the lowest JPEG quality, the smallest scale, the centre crop of the
        smallest fraction, the strongest blur, the darker and flatter light, the largest
        rotation and tilt, the strongest noise)."""
        return [view for transform in self._transforms for view in transform.views()]

    def grid(self) -> list[RealTransform]:
        """The real transforms over a grid of settings, for the survival check: each transform
        alone, with Pillow: JPEG at each quality of :data:`JPEG_GRID` within the range (the
        ends always in), resizes at the smallest, middle and largest scale below 1, crops at the
        centre and the four corners, blurs, brightness and contrast down and up at the largest
        change, rotations both ways at half the largest angle and the largest, four perspective
        tilts at the largest distortion, noise at half the largest std and the largest."""
        return [point for transform in self._transforms for point in transform.grid()]


def _unknown(name: str) -> InvalidArgumentError:
    near = difflib.get_close_matches(name, KNOWN_TRANSFORMS, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(near)}? " if near else ""
    return InvalidArgumentError(
        f"unknown transform {name!r}; {hint}known: {', '.join(KNOWN_TRANSFORMS)}"
    )


def _parse_one(text: str) -> _Transform:
    name, _, args = text.strip().partition(":")
    name = name.strip().lower()
    if not name:
        raise InvalidArgumentError(
            f"an empty transform in the spec; give e.g. jpeg:50-95 (known: "
            f"{', '.join(KNOWN_TRANSFORMS)})"
        )
    kind = _KINDS.get(name)
    if kind is None:
        raise _unknown(name)
    args = args.strip()
    if not args:
        low, high = kind.default
    else:
        match = _RANGE.match(args)
        if match is None:
            raise InvalidArgumentError(
                f"{name}:{args}: give {kind.what} as a number or a range low-high, e.g. "
                f"{name}:{_fmt(kind.default[1])} or {name}:{_fmt(kind.default[0])}-"
                f"{_fmt(kind.default[1])}"
            )
        low = float(match.group(1))
        high = float(match.group(2)) if match.group(2) is not None else low
        if match.group(2) is None and kind.strength:
            low = 0.0
        if low > high:
            raise InvalidArgumentError(
                f"{name}:{args}: the range is out of order; give the low end first "
                f"({name}:{_fmt(high)}-{_fmt(low)})"
            )
        if kind.whole and not (low.is_integer() and high.is_integer()):
            raise InvalidArgumentError(f"{name}:{args}: {kind.what} is a whole number")
        too_low = low <= kind.low if kind.low_open else low < kind.low
        if too_low or high > kind.high:
            bounds = (
                f"({_fmt(kind.low)}, {_fmt(kind.high)}]"
                if kind.low_open
                else (f"{_fmt(kind.low)} to {_fmt(kind.high)}")
            )
            raise InvalidArgumentError(f"{name}:{args}: {kind.what} must be in {bounds}")
    return _CLASSES[name](low, high)


def parse_transforms(spec: str | Sequence[Any] | TransformChain) -> TransformChain:
    """A :class:`TransformChain` from a spec text, a list of specs, or a chain (returned).

    Args:
        spec: ``"jpeg:50-95,resize:0.5-1.0,crop:0.9,blur,light"`` (see the module's table), a
            list of such texts (``["jpeg:75", "blur"]``), or a chain.

    Raises:
        InvalidArgumentError: an unknown transform, a bad or out-of-order range; one line.

    Example:
        >>> str(parse_transforms("jpeg:50-95,resize:0.5,blur"))
        'jpeg:50-95,resize:0.5,blur:0-1.5'
    """
    if isinstance(spec, TransformChain):
        return spec
    if isinstance(spec, str):
        texts = [spec]
    elif isinstance(spec, Sequence):
        texts = []
        for item in spec:
            if isinstance(item, TransformChain):
                texts.append(str(item))
            elif isinstance(item, str):
                texts.append(item)
            else:
                raise InvalidArgumentError(
                    f"transform specs are texts such as 'jpeg:50-95', got {type(item).__name__}"
                )
    else:
        raise InvalidArgumentError(
            f"transforms are a spec text such as 'jpeg:50-95,resize:0.5-1', a list of them or a "
            f"TransformChain, got {type(spec).__name__}"
        )
    parts = [part for text in texts for part in text.split(",")]
    if not any(part.strip() for part in parts):
        raise InvalidArgumentError(
            f"no transform in the spec; give e.g. jpeg:50-95 (known: {', '.join(KNOWN_TRANSFORMS)})"
        )
    return TransformChain([_parse_one(part) for part in parts])
