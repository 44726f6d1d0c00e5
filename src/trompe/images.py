"""Images in and out: reading photos, the differentiable evaluation crop, 8-bit saving.

Every image inside trompe is a float32 tensor of shape (3, H, W) (or a batch (B, 3, H, W)) holding
RGB values in [0, 1]. This module is the border with the outside world:

- :func:`load_image` reads JPEG, PNG, WebP, GIF, TIFF and BMP files (:data:`IMAGE_FORMATS`, an
  allow-list: no other Pillow decoder and no external program is ever reached), or takes a PIL
  image, a numpy array or a tensor, and always returns that canonical form. It refuses
  decompression bombs before decoding, honours EXIF orientation, and turns every failure into an
  :class:`~trompe.errors.ImageError` with a one-line message.
- :func:`quantize` and :func:`to_uint8` put images on the 8-bit grid that a PNG can hold, so that
  what an attack reports is exactly what a saved file contains.
- :func:`save_png` writes a lossless 8-bit RGB PNG, atomically, without overwriting by accident.
- :func:`center_crop_resize` is a classifier's evaluation preprocessing written with torch
  operations only, so that attacks backpropagate through it to the full-size photo.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import io
import logging
import math
import os
import pathlib
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from trompe._files import (
    all_or_nothing,
    exists_error,
    move_into_place,
    remove_stale_temporaries,
    short_reason,
    stage,
)
from trompe.errors import ImageError, InvalidArgumentError, TrompeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EXAMPLES",
    "IMAGE_FORMATS",
    "ImageSource",
    "center_crop_resize",
    "example_path",
    "load_image",
    "load_images",
    "load_photos",
    "png_bytes",
    "quantize",
    "read_png_text",
    "save_png",
    "to_pil",
    "to_uint8",
]

#: Images with more pixels than this are refused before decoding (a decompression-bomb guard):
#: 64 megapixels, more than any camera photo that a classifier needs, and about 768 MB as float32.
DEFAULT_MAX_PIXELS: int = 64_000_000

#: The only formats that :func:`load_image` decodes, as Pillow names them. Pillow is never asked
#: to try another plugin, so PostScript (which Pillow hands to Ghostscript), JPEG 2000, PSD, FITS
#: and the rest are refused whatever the file is called.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")

#: The bundled example photos: name -> file name in ``trompe/data``.
EXAMPLES: dict[str, str] = {"chelsea": "chelsea.png", "coffee": "coffee.png"}

_EXAMPLE_ALIASES: dict[str, str] = {"cat": "chelsea"}

#: Anything :func:`load_image` accepts.
ImageSource: TypeAlias = str | os.PathLike[str] | Image.Image | np.ndarray[Any, Any] | torch.Tensor

_ACCEPTED = "JPEG, PNG, WebP, GIF, TIFF or BMP"
_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
_SMOOTH_INTERPOLATIONS = ("bilinear", "bicubic")  # the modes with align_corners and antialias
_EXIF_ORIENTATION = 0x0112

# Pillow's own bomb check reads the global Image.MAX_IMAGE_PIXELS. We switch it off only around
# the calls that need it (under this lock, restoring the value afterwards) and apply our own
# limit instead, so that callers' settings and other threads see Pillow's limit otherwise.
_PILLOW_LIMIT_LOCK = threading.Lock()

# warnings.catch_warnings swaps process-wide state; two threads inside it at once can leave the
# other's recorder installed for good, so captures are serialised.
_WARNINGS_LOCK = threading.Lock()

logger = logging.getLogger(__name__)

FloatArray: TypeAlias = npt.NDArray[np.float32]


# -- bundled examples --------------------------------------------------------------------------


def example_path(name: str = "chelsea") -> pathlib.Path:
    """Return the path of a bundled example photo.

    Args:
        name: one of :data:`EXAMPLES` (``"chelsea"``, ``"coffee"``) or the alias ``"cat"``;
            case does not matter.

    Returns:
        The path of the PNG file inside the installed package.

    Raises:
        InvalidArgumentError: the name is not a bundled example.

    Example:
        >>> load_image(example_path("chelsea")).shape
        torch.Size([3, 300, 451])
    """
    key = str(name).strip().lower()
    key = _EXAMPLE_ALIASES.get(key, key)
    if key not in EXAMPLES:
        known = ", ".join(
            f"{n} (alias {', '.join(a for a, t in _EXAMPLE_ALIASES.items() if t == n)})"
            if n in _EXAMPLE_ALIASES.values()
            else n
            for n in EXAMPLES
        )
        raise InvalidArgumentError(f"unknown example {name!r}; known examples: {known}")
    resource = importlib.resources.files("trompe") / "data" / EXAMPLES[key]
    return pathlib.Path(str(resource))


# -- reading -----------------------------------------------------------------------------------


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Read an image into a float RGB tensor in [0, 1].

    Files are opened with Pillow, restricted to :data:`IMAGE_FORMATS`: JPEG, PNG, WebP, GIF (the
    first frame), TIFF and BMP, whatever the file name says. Other formats (PostScript, JPEG 2000,
    PSD, FITS, ICO...) are refused without being decoded. Pillow's warnings about a file become
    one line on the ``trompe.images`` logger. The pixel count is read from the header and checked
    against ``max_pixels`` before anything is decoded; then the whole file is decoded, so a
    truncated file fails here and not later. EXIF orientation is applied, so the tensor is
    upright as a photo viewer shows it.

    Every mode becomes RGB:

    - grayscale (``1``, ``L``), palette (``P``), ``CMYK``, ``YCbCr``...: Pillow's conversion.
    - 16-bit grayscale (``I;16``, ``I;16B``, ``I``): divided by 65535, so no precision is lost
      and nothing is clipped; ``I`` values outside 0..65535 are refused.
    - floating point (``F``): taken as [0, 1] if all values lie in [0, 1], else as [0, 255] if
      they lie there, else refused (the range cannot be guessed).
    - transparency (``RGBA``, ``LA``, ``PA``, palette or grayscale with a transparent colour):
      composited over white, as a viewer shows the image on a white page.

    In-memory inputs:

    - a PIL image: converted as a file is (EXIF orientation included); it is not closed. One
      read from a file in another format than :data:`IMAGE_FORMATS` is refused (its lazy
      decoding would run that format's decoder); ``image.convert("RGB")`` passes.
    - a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (RGBA, composited over white),
      of dtype uint8 (0-255), uint16 (0-65535), bool, or float with values in [0, 1].
    - a tensor (3, H, W) or (1, 3, H, W), uint8 or float with values in [0, 1], on any device.

    The result is always a new tensor, detached from any autograd graph.

    Args:
        source: a path, a PIL image, a numpy array or a tensor.
        max_pixels: refuse files and PIL images with more pixels than this (width x height).

    Returns:
        The image, float32, contiguous, on the CPU.

    Raises:
        ImageError: the file is missing, a directory, unreadable, not an image in an accepted
            format, truncated or corrupt, too large, or holds values whose range is unknown.
        InvalidArgumentError: an in-memory input has the wrong type, shape, dtype or range, or
            ``max_pixels`` is not a positive integer.

    Shape:
        - Output: (3, H, W).

    Example:
        >>> image = load_image(example_path("coffee"))
        >>> image.shape, image.dtype
        (torch.Size([3, 400, 600]), torch.float32)
    """
    _check_max_pixels(max_pixels)
    if isinstance(source, torch.Tensor):
        return _tensor_to_image(source)
    if isinstance(source, np.ndarray):
        return _array_to_image(source)
    if isinstance(source, Image.Image):
        name = str(getattr(source, "filename", "") or "the PIL image")
        found = source.format
        if found is not None and found not in IMAGE_FORMATS:
            raise InvalidArgumentError(
                f"'{name}' is a {found} image; trompe decodes only {_ACCEPTED} files; "
                'pass image.convert("RGB") if you trust it'
            )
        with _pillow_warnings(f"'{name}'"):
            return _pil_to_tensor(source, name, max_pixels, InvalidArgumentError)
    if isinstance(source, str | os.PathLike):
        return _load_file(os.fspath(source), max_pixels)
    raise InvalidArgumentError(
        "load_image takes a path, a PIL image, a numpy array or a tensor, "
        f"got {type(source).__name__}"
    )


def load_images(
    sources: Iterable[ImageSource], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[torch.Tensor]:
    """Read several images with :func:`load_image`; sizes may differ.

    Args:
        sources: paths, PIL images, arrays or tensors.
        max_pixels: as for :func:`load_image`, applied to each image.

    Returns:
        One (3, H, W) float32 tensor per source, in order.

    Raises:
        ImageError: as for :func:`load_image`, for the first source that fails.
        InvalidArgumentError: ``sources`` is a single image rather than a collection of them,
            or as for :func:`load_image`.
    """
    if isinstance(sources, str | os.PathLike | Image.Image | np.ndarray | torch.Tensor):
        raise InvalidArgumentError(
            "load_images takes a list of images, got a single "
            f"{type(sources).__name__}; use load_image for one image, or list(batch) for a batch"
        )
    _check_max_pixels(max_pixels)
    return [load_image(source, max_pixels=max_pixels) for source in sources]


def _check_max_pixels(max_pixels: int) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise InvalidArgumentError(f"max_pixels must be a positive integer, got {max_pixels!r}")


@contextlib.contextmanager
def _pillow_limit_off() -> Iterator[None]:
    """Switch off Pillow's decompression-bomb check for the duration; we apply our own."""
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _load_file(path: str, max_pixels: int) -> torch.Tensor:
    shown = f"'{path}'"
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(f"no such file: {shown}") from None
    except PermissionError:
        raise ImageError(
            f"cannot read {shown}: permission denied; check the permissions of its directories"
        ) from None
    except OSError as error:
        raise ImageError(f"cannot read {shown}: {short_reason(error)}") from None
    if os.path.isdir(path):
        raise ImageError(f"{shown} is a directory; give an image file")
    if stat.st_size == 0:
        raise ImageError(f"{shown} is empty (0 bytes); give an image file")

    with _pillow_warnings(shown):
        return _open_and_convert(path, shown, max_pixels)


def _open_and_convert(path: str, shown: str, max_pixels: int) -> torch.Tensor:
    try:
        # Image.open only parses the header, so switching Pillow's check off here is brief.
        # formats= keeps every other plugin out, even for a file whose content claims one.
        with _pillow_limit_off():
            opened = Image.open(path, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(_unaccepted_message(path, shown)) from None
    except PermissionError:
        raise ImageError(f"cannot read {shown}: permission denied; check its permissions") from None
    except IsADirectoryError:
        raise ImageError(f"{shown} is a directory; give an image file") from None
    except FileNotFoundError:
        raise ImageError(f"no such file: {shown}") from None
    except Exception as error:  # a plugin choking on a corrupt header
        raise ImageError(f"{shown} is truncated or corrupt: {short_reason(error)}") from None
    with opened:
        return _pil_to_tensor(opened, path, max_pixels, ImageError)


def _unaccepted_message(path: str, shown: str) -> str:
    """Why a file that Pillow may not open was refused, naming its format when it is known."""
    try:
        with open(path, "rb") as file:
            prefix = file.read(16)  # what Pillow's format checks look at
    except OSError:
        prefix = b""
    found = _sniff(prefix)
    if found is None:
        return f"{shown} is not an image in a format that trompe reads ({_ACCEPTED})"
    return (
        f"{shown} looks like {found} data, which trompe does not decode; it reads {_ACCEPTED} "
        "files: convert it to PNG first"
    )


def _sniff(prefix: bytes) -> str | None:
    """The format whose signature ``prefix`` carries, among the formats Pillow knows.

    Only the plugins' signature checks run (comparisons of the first bytes), never a plugin's
    parser or decoder. Formats without a signature (TGA, ...) stay unnamed.
    """
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if name in IMAGE_FORMATS or accept is None:
            continue
        try:
            if accept(prefix):
                return name
        except Exception:  # a signature check that chokes on a short prefix
            continue
    return None


@contextlib.contextmanager
def _pillow_warnings(shown: str) -> Iterator[None]:
    """Turn Pillow's warnings while reading an image into one log line of ours.

    Pillow warns about broken files (an invalid APNG, corrupt EXIF, odd TIFF tags); printed by
    Python, such a warning names a file inside Pillow's install. Here it becomes one line on the
    ``trompe.images`` logger that names the user's file instead. Other warnings are passed on
    unchanged, through the caller's filters.
    """
    caught: list[warnings.WarningMessage] = []
    with _WARNINGS_LOCK:
        try:
            with warnings.catch_warnings(record=True) as recorded:
                warnings.simplefilter("always")
                caught = recorded
                yield
        finally:
            ours = [w for w in caught if _from_pillow(w.filename)]
            for w in caught:
                if not _from_pillow(w.filename):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            messages = list(dict.fromkeys(short_reason(Warning(str(w.message))) for w in ours))
            if messages:
                more = f" (and {len(messages) - 1} more warnings)" if len(messages) > 1 else ""
                logger.warning("%s: %s%s", shown, messages[0], more)


def _from_pillow(filename: str) -> bool:
    pillow = os.path.dirname(os.path.abspath(Image.__file__))
    return os.path.abspath(filename).startswith(pillow + os.sep)


def _pil_to_tensor(
    image: Image.Image,
    path: str,
    max_pixels: int,
    error: Callable[[str], TrompeError],
) -> torch.Tensor:
    """Check the size, decode, orient and convert a PIL image; errors name ``path``."""
    shown = f"'{path}'"
    width, height = image.size
    pixels = width * height
    if pixels > max_pixels:
        raise ImageError(
            f"{shown} is {width} x {height} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,}; pass max_pixels (CLI: --max-pixels) if you trust it"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{shown} is empty ({width} x {height} pixels)")

    pillow_limit = Image.MAX_IMAGE_PIXELS
    # Decoding may run Pillow's bomb check again (GIF frames, TIFF tiles). Within Pillow's own
    # limit it cannot fire for an image of this size; above it, the caller has raised
    # max_pixels on purpose, and only then do we hold Pillow's check off while decoding.
    scope = (
        _pillow_limit_off()
        if pillow_limit is not None and pixels > pillow_limit
        else contextlib.nullcontext()
    )
    try:
        with scope:
            image.load()
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation in range(2, 9):
                image = ImageOps.exif_transpose(image)
            array = _pil_to_array(image, shown, error)
    except TrompeError:
        raise
    except Image.DecompressionBombError as bomb:
        raise ImageError(
            f"{shown} holds a frame larger than the image itself ({short_reason(bomb)}); "
            "it looks like a decompression bomb"
        ) from None
    except MemoryError:
        raise ImageError(
            f"not enough memory to decode {shown} ({width} x {height}); "
            "lower max_pixels or free memory"
        ) from None
    except Exception as failure:  # Pillow reports corrupt data with many exception types
        raise ImageError(f"{shown} is truncated or corrupt: {short_reason(failure)}") from None
    return _hwc_to_tensor(array)


def _pil_to_array(
    image: Image.Image, shown: str, error: Callable[[str], TrompeError]
) -> FloatArray:
    """A decoded PIL image as float32 (H, W, C) in [0, 1], C in (1, 3, 4)."""
    mode = image.mode
    if mode.startswith("I;16"):
        return _scale(np.asarray(image), 65535.0)[..., None]
    if mode == "I":
        values = np.asarray(image)
        least, most = int(values.min()), int(values.max())
        if least < 0 or most > 65535:
            raise error(
                f"{shown} holds 32-bit integer pixels from {least} to {most}, outside the 16-bit "
                "range 0..65535; convert it to 8 or 16 bits per channel"
            )
        return _scale(values, 65535.0)[..., None]
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise error(f"{shown} holds NaN or infinite pixel values")
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            return np.array(values, dtype=np.float32)[..., None]
        if low >= 0.0 and high <= 255.0:
            return _scale(values, 255.0)[..., None]
        raise error(
            f"{shown} holds floating-point pixels from {low:g} to {high:g}; expected [0, 1] or "
            "[0, 255]; rescale it"
        )
    if image.has_transparency_data:
        try:
            rgba = image.convert("RGBA")
        except ValueError:  # modes such as La convert only through their plain sibling
            rgba = image.convert("LA").convert("RGBA")
        return _scale(np.asarray(rgba), 255.0)
    if mode == "L":
        return _scale(np.asarray(image), 255.0)[..., None]
    try:
        rgb = image if mode == "RGB" else image.convert("RGB")
    except ValueError:
        raise error(
            f"{shown} has pixel mode {mode}, which Pillow cannot convert to RGB; "
            "convert it to RGB first"
        ) from None
    return _scale(np.asarray(rgb), 255.0)


def _scale(values: npt.NDArray[Any], full: float) -> FloatArray:
    """Integer or float values on [0, full] -> float32 on [0, 1], with one correctly rounded
    float32 division, so 8-bit value k becomes exactly float32(k / 255) as in :func:`quantize`."""
    scaled: FloatArray = np.divide(values, np.float32(full), dtype=np.float32)
    return scaled


def _hwc_to_tensor(array: FloatArray) -> torch.Tensor:
    """float32 (H, W, C) in [0, 1] with C in (1, 3, 4) -> contiguous (3, H, W) RGB tensor."""
    channels = array.shape[2]
    if channels == 4:
        rgb, alpha = array[..., :3], array[..., 3:]
        # Over white: c * a + 1 * (1 - a). Opaque pixels stay bit-exact (c * 1 + 0).
        array = rgb * alpha + (np.float32(1.0) - alpha)
    elif channels == 1:
        array = np.broadcast_to(array, (*array.shape[:2], 3))
    chw = np.ascontiguousarray(np.moveaxis(array, 2, 0), dtype=np.float32)
    return torch.from_numpy(chw)


def _array_to_image(array: npt.NDArray[Any]) -> torch.Tensor:
    shape = tuple(array.shape)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidArgumentError(
            f"a numpy image must have shape (H, W), (H, W, 3) or (H, W, 4), got {shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidArgumentError(f"a numpy image must not be empty, got shape {shape}")
    if array.dtype == np.uint8:
        values = _scale(array, 255.0)
    elif array.dtype == np.uint16:
        values = _scale(array, 65535.0)
    elif array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        values = np.asarray(array, dtype=np.float32)
        _check_unit_range(torch.from_numpy(values), "a float numpy image")
    else:
        raise InvalidArgumentError(
            f"a numpy image must be uint8 (0-255), uint16 (0-65535), bool or float in [0, 1], "
            f"got dtype {array.dtype}"
        )
    return _hwc_to_tensor(values)


def _tensor_to_image(tensor: torch.Tensor) -> torch.Tensor:
    shape = tuple(tensor.shape)
    if tensor.dim() == 4 and shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        hint = ""
        if tensor.dim() == 3 and tensor.shape[-1] == 3:
            hint = "; for (H, W, 3) use tensor.permute(2, 0, 1)"
        elif tensor.dim() == 4:
            hint = "; for a batch use load_images(list(batch))"
        raise InvalidArgumentError(
            f"an image tensor must have shape (3, H, W) or (1, 3, H, W), got {shape}{hint}"
        )
    if tensor.shape[1] == 0 or tensor.shape[2] == 0:
        raise InvalidArgumentError(f"an image tensor must not be empty, got shape {shape}")
    tensor = tensor.detach()
    if tensor.dtype == torch.uint8:
        return torch.from_numpy(_scale(tensor.cpu().numpy(), 255.0))
    if not tensor.is_floating_point():
        raise InvalidArgumentError(
            f"an image tensor must be float in [0, 1] or uint8, got dtype {tensor.dtype}"
        )
    _check_unit_range(tensor, "a float image tensor")
    return tensor.to(
        device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format, copy=True
    )


def _check_unit_range(values: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(values).all()):
        raise InvalidArgumentError(f"{what} holds NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise InvalidArgumentError(
            f"{what} must hold values in [0, 1], got values from {low:g} to {high:g}; "
            "divide 8-bit values by 255"
        )


# -- 8-bit rounding ----------------------------------------------------------------------------


@functools.cache
def _grid(dtype: torch.dtype) -> torch.Tensor:
    """The 256 values k / 255 in ``dtype`` on the CPU, each correctly rounded.

    A table rather than a division: on CUDA, ``x / 255`` is computed as ``x * (1 / 255)``, which
    differs in the last bit for some k, and then a quantized image would not equal its PNG.
    """
    if dtype == torch.float32:
        return torch.from_numpy(np.arange(256, dtype=np.float32) / np.float32(255.0))
    return torch.from_numpy(np.arange(256, dtype=np.float64) / 255.0).to(dtype)


def _check_float_images(images: torch.Tensor, function: str) -> None:
    if not isinstance(images, torch.Tensor):
        raise InvalidArgumentError(f"{function} takes a tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise InvalidArgumentError(
            f"{function} takes a float tensor with values in [0, 1], got dtype {images.dtype}"
        )


def _levels(images: torch.Tensor, function: str) -> torch.Tensor:
    """Round float images to the integers 0..255 (as float) in at least float32 precision."""
    images = images.detach()
    if not bool(torch.isfinite(images).all()):
        raise InvalidArgumentError(f"{function} got NaN or infinite values")
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()
    return (work * 255).round_().clamp_(0, 255)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Round images to 8 bits: ``(images * 255).round().clamp(0, 255)`` as uint8.

    Values outside [0, 1] are clamped; exact ties (k + 0.5) / 255 round to even, as
    :func:`torch.round` does. ``uint8`` input is returned as a copy.

    Args:
        images: float images in [0, 1], of any shape; usually (3, H, W) or (B, 3, H, W).

    Returns:
        The 8-bit values, on the same device.

    Raises:
        InvalidArgumentError: not a float or uint8 tensor, or NaN / infinite values.

    Shape:
        - Input: any, typically (3, H, W) or (B, 3, H, W).
        - Output: same as the input.

    Example:
        >>> to_uint8(torch.tensor([0.0, 0.5, 1.0]))
        tensor([  0, 128, 255], dtype=torch.uint8)
    """
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        return images.detach().clone()
    _check_float_images(images, "to_uint8")
    return _levels(images, "to_uint8").to(torch.uint8)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Snap float images to the 8-bit grid k / 255, the values an 8-bit PNG can hold.

    ``quantize(x)`` equals ``to_uint8(x) / 255`` and, bit for bit, what :func:`load_image` returns
    for the PNG that :func:`save_png` writes from ``x``. Each value moves by at most half a step,
    0.5 / 255, and values outside [0, 1] are clamped. The rounding has no useful gradient: the
    result is detached.

    Args:
        images: float images, of any shape; usually (3, H, W) or (B, 3, H, W).

    Returns:
        The rounded images, with the dtype, device and shape of the input.

    Raises:
        InvalidArgumentError: not a float tensor, or NaN / infinite values.

    Shape:
        - Input: any, typically (3, H, W) or (B, 3, H, W).
        - Output: same as the input.

    Example:
        >>> quantize(torch.tensor([0.101, 0.499])) == torch.tensor([26, 127]) / 255
        tensor([True, True])
    """
    _check_float_images(images, "quantize")
    levels = _levels(images, "quantize").long()
    return _grid(images.dtype).to(images.device)[levels]


def to_pil(image: torch.Tensor) -> Image.Image:
    """Turn an image tensor into an 8-bit RGB PIL image (values are rounded and clamped).

    Args:
        image: a float image in [0, 1] or a uint8 image, on any device.

    Returns:
        An RGB PIL image of size (W, H).

    Raises:
        InvalidArgumentError: not a tensor, or the wrong shape or dtype.

    Shape:
        - Input: (3, H, W) or (1, 3, H, W).
    """
    if not isinstance(image, torch.Tensor):
        raise InvalidArgumentError(f"to_pil takes a tensor, got {type(image).__name__}")
    shape = tuple(image.shape)
    if image.dim() == 4 and shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        raise InvalidArgumentError(
            f"to_pil takes one image of shape (3, H, W) or (1, 3, H, W), got {shape}"
        )
    pixels = to_uint8(image).permute(1, 2, 0).contiguous().cpu().numpy()
    return Image.fromarray(pixels)


# -- writing -----------------------------------------------------------------------------------


def save_png(
    image: torch.Tensor | Image.Image, path: str | os.PathLike[str], *, force: bool = False
) -> pathlib.Path:
    """Write an image as a lossless 8-bit RGB PNG, atomically.

    The image is written to a hidden temporary file in the target directory, then renamed over
    the target, so a reader never sees half a file and a failed save leaves nothing behind.
    Missing parent directories are created. Float tensors are rounded as by :func:`to_uint8`;
    PIL images in other modes are converted as :func:`load_image` does (transparency over white).

    Args:
        image: a (3, H, W) or (1, 3, H, W) tensor, or a PIL image.
        path: where to write; must end in ``.png``.
        force: overwrite an existing file.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        OutputExistsError: the file exists and ``force`` is false.
        ImageError: the path is a directory, or the directory cannot be created or written.
        InvalidArgumentError: the path does not end in ``.png``, or the image has the wrong type
            or shape.

    Example:
        >>> save_png(quantize(image), "out/adversarial.png", force=True)  # doctest: +SKIP
        PosixPath('out/adversarial.png')
    """
    target = pathlib.Path(path)
    if target.suffix.lower() != ".png":
        raise InvalidArgumentError(
            f"save_png writes PNG files; give a path ending in .png, got '{target}'"
        )
    if target.is_dir():
        raise ImageError(f"'{target}' is a directory; give a file name ending in .png")
    if target.exists() and not force:
        raise exists_error(target)

    if isinstance(image, Image.Image):
        picture = image if image.mode == "RGB" else to_pil(load_image(image))
    elif isinstance(image, torch.Tensor):
        picture = to_pil(image)
    else:
        raise InvalidArgumentError(
            f"save_png takes a tensor or a PIL image, got {type(image).__name__}"
        )

    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImageError(
            f"cannot create the directory '{directory}': {short_reason(error)}"
        ) from None

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    remove_stale_temporaries(directory)
    # After a successful move the temporary name is gone (or is a second hard link); the undo
    # removes it in every case, and an interruption at any point leaves no temporary behind.
    with all_or_nothing([]) as (staged, _):
        temporary = stage(directory, target, buffer.getvalue(), staged)
        move_into_place(temporary, target, force)
    return target


# -- preprocessing -----------------------------------------------------------------------------


def _target_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        pair: tuple[Any, ...] = (size, size)
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        pair = tuple(size)
    else:
        raise InvalidArgumentError(f"size must be an int or (height, width), got {size!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise InvalidArgumentError(f"size must hold positive integers, got {size!r}")
    return int(pair[0]), int(pair[1])


def _round_half_up(value: float) -> int:
    # Not round(): banker's rounding would make 262.5 -> 262 but 263.5 -> 264.
    return math.floor(value + 0.5)


def center_crop_resize(
    images: torch.Tensor,
    size: int | Sequence[int],
    *,
    crop_fraction: float = 1.0,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """A classifier's evaluation preprocessing: a centred crop, then a resize, differentiably.

    The crop is the largest centred region with the aspect ratio of ``size``, shrunk by
    ``crop_fraction``; for a square ``size`` that is a square of side
    ``round(crop_fraction * min(H, W))`` (rounding half up). With ``crop_fraction = S / (S + 32)``
    this is the convention of TensorFlow's EfficientNet evaluation. The crop offset is
    ``(H - h) // 2``. The crop is then resized with :func:`torch.nn.functional.interpolate`
    (``align_corners=False``, antialiased when downscaling if ``antialias`` and the mode supports
    it), unless it has the target size already.

    Only slicing and ``interpolate`` are used, so gradients flow back to the full-size input:
    pixels inside the crop get gradient, pixels outside get zero. The result is not clamped
    (a clamp would cut the gradient), so bicubic interpolation may overshoot [0, 1] slightly
    near sharp edges. When no resize is needed the result may share memory with the input.

    Args:
        images: float images.
        size: the output size, an int for a square or (height, width).
        crop_fraction: the part of the largest centred region kept, in (0, 1].
        interpolation: ``"bicubic"``, ``"bilinear"``, ``"area"``, ``"nearest"`` or
            ``"nearest-exact"``.
        antialias: low-pass filter when downscaling (bilinear and bicubic only).

    Returns:
        The preprocessed images, with the input's dtype and device.

    Raises:
        InvalidArgumentError: the images are not a float (C, H, W) or (B, C, H, W) tensor, or
            ``size``, ``crop_fraction`` or ``interpolation`` is invalid.

    Shape:
        - Input: (B, 3, H, W) or (3, H, W).
        - Output: (B, 3, h, w) or (3, h, w), with (h, w) = ``size``.

    Example:
        >>> x = torch.rand(2, 3, 300, 451)
        >>> center_crop_resize(x, 224, crop_fraction=224 / 256).shape
        torch.Size([2, 3, 224, 224])
    """
    if not isinstance(images, torch.Tensor):
        raise InvalidArgumentError(
            f"center_crop_resize takes a tensor, got {type(images).__name__}"
        )
    if images.dim() not in (3, 4) or not images.is_floating_point():
        raise InvalidArgumentError(
            "center_crop_resize takes float images of shape (3, H, W) or (B, 3, H, W), "
            f"got {tuple(images.shape)} {images.dtype}"
        )
    out_h, out_w = _target_size(size)
    if isinstance(crop_fraction, bool) or not isinstance(crop_fraction, int | float):
        raise InvalidArgumentError(f"crop_fraction must be a number, got {crop_fraction!r}")
    if not 0.0 < crop_fraction <= 1.0:  # also refuses NaN
        raise InvalidArgumentError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    if interpolation not in _INTERPOLATIONS:
        raise InvalidArgumentError(
            f"unknown interpolation {interpolation!r}; choose one of {', '.join(_INTERPOLATIONS)}"
        )
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if height == 0 or width == 0:
        raise InvalidArgumentError(f"cannot crop an empty image of shape {tuple(images.shape)}")

    # The largest centred region with the aspect ratio out_h : out_w.
    if height * out_w >= width * out_h:
        region_h, region_w = width * out_h / out_w, float(width)
    else:
        region_h, region_w = float(height), height * out_w / out_h
    crop_h = min(height, max(1, _round_half_up(region_h * crop_fraction)))
    crop_w = min(width, max(1, _round_half_up(region_w * crop_fraction)))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = images[..., top : top + crop_h, left : left + crop_w]
    if (crop_h, crop_w) == (out_h, out_w):
        return crop

    batch = crop if crop.dim() == 4 else crop.unsqueeze(0)
    options: dict[str, Any] = {}
    if interpolation in _SMOOTH_INTERPOLATIONS:
        options = {"align_corners": False, "antialias": antialias}
    resized = F.interpolate(batch, size=(out_h, out_w), mode=interpolation, **options)
    return resized if images.dim() == 4 else resized.squeeze(0)


#: File extensions read as photos in a folder (:func:`load_photos`), compared without case.
PHOTO_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".gif",
    ".tif",
    ".tiff",
    ".bmp",
)


def load_photos(
    folder: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    limit: int | None = None,
    what: str = "folder",
) -> list[tuple[str, torch.Tensor]]:
    """The photos lying directly in ``folder``, read with :func:`load_image`, by sorted name.

    Hidden files and files whose extension is not an image's (:data:`PHOTO_EXTENSIONS`) are
    left out; sub-folders are not entered.

    Args:
        folder: the folder.
        max_pixels: refuse larger images.
        limit: read at most this many (the first by name).
        what: what the caller's user calls the folder, for the messages (``"--holdout"``).

    Returns:
        ``(file name, (3, H, W) tensor in [0, 1])`` pairs.

    Raises:
        InvalidArgumentError: ``folder`` is missing, not a folder, or holds no image file; one
            line that names it.
        ImageError: an image file that cannot be read (named).
    """
    path = pathlib.Path(folder)
    shown = str(path)
    if not path.exists():
        raise InvalidArgumentError(f"no such {what}: '{shown}'; give a folder of photos")
    if not path.is_dir():
        raise InvalidArgumentError(f"the {what} '{shown}' is not a folder; give a folder of photos")
    try:
        names = sorted(
            entry.name
            for entry in path.iterdir()
            if not entry.name.startswith(".")
            and entry.name.lower().endswith(PHOTO_EXTENSIONS)
            and entry.is_file()
        )
    except OSError as error:
        raise InvalidArgumentError(f"cannot read the {what} '{shown}': {error.strerror}") from None
    if not names:
        raise InvalidArgumentError(
            f"the {what} '{shown}' holds no photos ({', '.join(PHOTO_EXTENSIONS)} files)"
        )
    if limit is not None:
        names = names[:limit]
    return [(name, load_image(path / name, max_pixels=max_pixels)) for name in names]


def png_bytes(image: torch.Tensor, text: dict[str, str] | None = None) -> bytes:
    """A lossless 8-bit RGB PNG of a (3, H, W) image in [0, 1], with ``text`` as tEXt chunks
    (the metadata by which ``trompe apply`` recognises a perturbation or a patch)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """The tEXt chunks of a PNG file (``{}`` for another format or none). Call it after
    :func:`load_image` has checked the file: this reads the whole file again."""
    try:
        with Image.open(path, formats=("PNG",)) as opened:
            opened.load()
            return {str(k): str(v) for k, v in getattr(opened, "text", {}).items()}
    except (UnidentifiedImageError, OSError):
        return {}
