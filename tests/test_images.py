"""Tests of trompe.images: real files written to tmp_path, no mocks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, features

from trompe.errors import ImageError, InvalidArgumentError, OutputExistsError
from trompe.images import (
    DEFAULT_MAX_PIXELS,
    EXAMPLES,
    center_crop_resize,
    example_path,
    load_image,
    load_images,
    quantize,
    save_png,
    to_pil,
    to_uint8,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def quadrants(width: int = 32, height: int = 24) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    image = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    image.paste(RED, (0, 0, half_w, half_h))
    image.paste(GREEN, (half_w, 0, width, half_h))
    image.paste(BLUE, (0, half_h, half_w, height))
    image.paste(WHITE, (half_w, half_h, width, height))
    return image


def pixel(image: torch.Tensor, row: int, column: int) -> list[float]:
    return [float(v) for v in image[:, row, column]]


def assert_colour(image: torch.Tensor, row: int, column: int, rgb: tuple[float, ...], tol: float):
    got = image[:, row, column]
    want = torch.tensor(rgb, dtype=torch.float32)
    assert torch.allclose(got, want, atol=tol), f"pixel ({row}, {column}): {got} != {want}"


# -- formats -----------------------------------------------------------------------------------

FORMATS = [
    ("png", {}, 0.0),
    ("bmp", {}, 0.0),
    ("tiff", {}, 0.0),
    ("gif", {}, 0.0),
    ("jpg", {"quality": 95}, 0.12),
    pytest.param(
        "webp",
        {"quality": 90},
        0.12,
        marks=pytest.mark.skipif(not features.check("webp"), reason="Pillow without WebP"),
    ),
]


@pytest.mark.parametrize(("suffix", "options", "tol"), FORMATS)
def test_each_format_loads_with_shape_and_colours(
    tmp_path: Path, suffix: str, options: dict[str, int], tol: float
) -> None:
    path = tmp_path / f"quadrants.{suffix}"
    quadrants().save(path, **options)
    image = load_image(path)
    assert image.shape == (3, 24, 32)
    assert image.dtype == torch.float32
    assert image.is_contiguous()
    assert image.device.type == "cpu"
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert_colour(image, 5, 5, (1, 0, 0), tol)
    assert_colour(image, 5, 26, (0, 1, 0), tol)
    assert_colour(image, 18, 5, (0, 0, 1), tol)
    assert_colour(image, 18, 26, (1, 1, 1), tol)


def test_str_and_pathlike_sources_agree(tmp_path: Path) -> None:
    path = tmp_path / "q.png"
    quadrants().save(path)
    assert torch.equal(load_image(str(path)), load_image(path))


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "animated.gif"
    frames = [Image.new("RGB", (10, 8), RED), Image.new("RGB", (10, 8), BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 2
    image = load_image(path)
    assert image.shape == (3, 8, 10)
    assert_colour(image, 4, 4, (1, 0, 0), 0.0)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, left half red and right half blue. Orientation 6 means "rotate
    # 90 degrees clockwise to display": upright, it is 20 wide x 40 high, red on top.
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif)
    image = load_image(path)
    assert image.shape == (3, 40, 20)
    assert_colour(image, 5, 10, (1, 0, 0), 0.1)
    assert_colour(image, 35, 10, (0, 0, 1), 0.1)


# -- modes -------------------------------------------------------------------------------------


def saved(tmp_path: Path, image: Image.Image, name: str) -> Path:
    path = tmp_path / name
    image.save(path)
    return path


def test_grayscale_L(tmp_path: Path) -> None:
    gray = Image.new("L", (4, 3), 51)
    image = load_image(saved(tmp_path, gray, "l.png"))
    assert image.shape == (3, 3, 4)
    assert torch.equal(image, torch.full((3, 3, 4), 51 / 255))


def test_grayscale_with_alpha_LA_goes_over_white(tmp_path: Path) -> None:
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (50, 255))
    la.putpixel((1, 0), (50, 0))
    image = load_image(saved(tmp_path, la, "la.png"))
    assert pixel(image, 0, 0) == pytest.approx([50 / 255] * 3)
    assert pixel(image, 0, 1) == [1.0, 1.0, 1.0]


def test_palette_P(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([*RED, *BLUE])
    palette.putpixel((1, 0), 1)
    image = load_image(saved(tmp_path, palette, "p.png"))
    assert pixel(image, 0, 0) == [1.0, 0.0, 0.0]
    assert pixel(image, 0, 1) == [0.0, 0.0, 1.0]


def test_palette_with_transparency_goes_over_white(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([*RED, *BLUE])
    palette.putpixel((1, 0), 1)
    path = tmp_path / "pt.png"
    palette.save(path, transparency=1)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(path)
    assert pixel(image, 0, 0) == [1.0, 0.0, 0.0]
    assert pixel(image, 0, 1) == [1.0, 1.0, 1.0]


def test_rgba_composited_over_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (3, 1))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 0))
    rgba.putpixel((2, 0), (255, 0, 0, 128))
    image = load_image(saved(tmp_path, rgba, "rgba.png"))
    assert image.shape == (3, 1, 3)
    assert pixel(image, 0, 0) == [np.float32(10 / 255), np.float32(20 / 255), np.float32(30 / 255)]
    assert pixel(image, 0, 1) == [1.0, 1.0, 1.0]
    half = 1 - 128 / 255
    assert pixel(image, 0, 2) == pytest.approx([1.0, half, half], abs=1e-6)


def test_cmyk(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putpixel((0, 0), (0, 0, 0, 0))
    cmyk.putpixel((1, 0), (255, 0, 0, 0))
    cmyk.putpixel((2, 0), (0, 0, 0, 255))
    for name in ("cmyk.tiff", "cmyk.jpg"):
        image = load_image(saved(tmp_path, cmyk, name))
        tol = 0.0 if name.endswith("tiff") else 0.1
        assert_colour(image, 0, 0, (1, 1, 1), tol)
        assert_colour(image, 0, 1, (0, 1, 1), tol)
        assert_colour(image, 0, 2, (0, 0, 0), tol)


def test_ycbcr_in_memory() -> None:
    ycbcr = quadrants().convert("YCbCr")
    image = load_image(ycbcr)
    assert image.shape == (3, 24, 32)
    assert_colour(image, 5, 5, (1, 0, 0), 0.02)


def test_16_bit_grayscale_png_is_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535, 255]], dtype=np.uint16)
    path = saved(tmp_path, Image.fromarray(values), "gray16.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    image = load_image(path)
    assert image.shape == (3, 1, 4)
    assert pixel(image, 0, 0) == [0.0] * 3
    assert pixel(image, 0, 1) == pytest.approx([32768 / 65535] * 3)
    assert pixel(image, 0, 2) == [1.0] * 3
    assert pixel(image, 0, 3) == pytest.approx([255 / 65535] * 3)  # not 1.0: not clipped


def test_16_bit_big_endian_in_memory() -> None:
    big_endian = Image.new("I;16B", (2, 1))
    big_endian.putpixel((0, 0), 65535)
    big_endian.putpixel((1, 0), 256)
    image = load_image(big_endian)
    assert pixel(image, 0, 0) == [1.0] * 3
    assert pixel(image, 0, 1) == pytest.approx([256 / 65535] * 3)


def test_32_bit_integer_I(tmp_path: Path) -> None:
    ok = Image.new("I", (2, 1))
    ok.putpixel((0, 0), 65535)
    assert pixel(load_image(saved(tmp_path, ok, "i.tiff")), 0, 0) == [1.0] * 3
    ok.putpixel((1, 0), 70000)
    with pytest.raises(
        ImageError, match=r"i2\.tiff' holds 32-bit integer pixels from 65535 to 70000"
    ):
        load_image(saved(tmp_path, ok, "i2.tiff"))


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.25, 1.0], [0.25, 1.0]), ([0.0, 127.5], [0.0, 0.5]), ([255.0, 51.0], [1.0, 0.2])],
)
def test_float_F_range_rule(tmp_path: Path, values: list[float], expected: list[float]) -> None:
    floats = Image.fromarray(np.array([values], dtype=np.float32))
    assert floats.mode == "F"
    image = load_image(saved(tmp_path, floats, "f.tiff"))
    assert image[0, 0].tolist() == pytest.approx(expected)


@pytest.mark.parametrize("values", [[-0.5, 0.5], [0.0, 300.0], [float("nan"), 0.0]])
def test_float_F_outside_known_ranges_is_refused(tmp_path: Path, values: list[float]) -> None:
    floats = Image.fromarray(np.array([values], dtype=np.float32))
    with pytest.raises(ImageError, match=r"f\.tiff' holds"):
        load_image(saved(tmp_path, floats, "f.tiff"))


def test_bilevel_1(tmp_path: Path) -> None:
    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    image = load_image(saved(tmp_path, bilevel, "bilevel.png"))
    assert pixel(image, 0, 0) == [0.0] * 3
    assert pixel(image, 0, 1) == [1.0] * 3


# -- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "x.jpg"
    with pytest.raises(ImageError, match=r"^no such file: '.*x\.jpg'$") as caught:
        load_image(missing)
    assert isinstance(caught.value, OSError)


def test_directory(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    with pytest.raises(ImageError, match=r"photos' is a directory; give an image file$"):
        load_image(photos)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("buy milk\n")
    with pytest.raises(
        ImageError, match=r"notes\.jpg' is not an image in a format that trompe reads \(JPEG, PNG"
    ):
        load_image(notes)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png' is empty"):
        load_image(empty)


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / f"whole.{suffix}"
    Image.fromarray(noise).save(whole)
    cut = tmp_path / f"x.{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ImageError, match=rf"^'.*x\.{suffix}' is truncated or corrupt: \S"
    ) as caught:
        load_image(cut)
    assert "\n" not in str(caught.value)


def test_huge_image_is_refused_before_decoding(huge_png: Path) -> None:
    big = huge_png
    assert big.stat().st_size < 1_000_000
    limit_before = Image.MAX_IMAGE_PIXELS
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may escape
        with pytest.raises(ImageError) as caught:
            load_image(big)
    elapsed = time.perf_counter() - start
    assert str(caught.value) == (
        f"'{big}' is 20000 x 20000 = 400,000,000 pixels, over the limit of 64,000,000; "
        "pass max_pixels (CLI: --max-pixels) if you trust it"
    )
    assert elapsed < 1.0
    assert limit_before == Image.MAX_IMAGE_PIXELS
    assert DEFAULT_MAX_PIXELS == 64_000_000


def test_max_pixels_is_a_strict_bound(tmp_path: Path) -> None:
    path = saved(tmp_path, Image.new("RGB", (10, 10)), "ten.png")
    assert load_image(path, max_pixels=100).shape == (3, 10, 10)
    with pytest.raises(ImageError, match="10 x 10 = 100 pixels, over the limit of 99;"):
        load_image(path, max_pixels=99)
    with pytest.raises(ImageError, match="over the limit of 99"):
        load_image(Image.new("RGB", (10, 10)), max_pixels=99)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="max_pixels must be a positive integer"):
            load_image(path, max_pixels=bad)  # type: ignore[arg-type]


def test_pillow_limit_neither_leaks_nor_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller who set Pillow's own limit very low: our max_pixels decides, Pillow's
    # DecompressionBombError / -Warning never escapes, and the caller's setting is kept.
    path = saved(tmp_path, quadrants(100, 100), "hundred.gif")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(path)
    assert image.shape == (3, 100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(ImageError, match="over the limit of 9,999"):
        load_image(path, max_pixels=9_999)
    assert Image.MAX_IMAGE_PIXELS == 1000


@pytest.mark.skipif(IS_ROOT or os.name != "posix", reason="root can read any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = saved(tmp_path, quadrants(), "secret.png")
    path.chmod(0)
    try:
        with pytest.raises(ImageError, match=r"secret\.png': permission denied"):
            load_image(path)
    finally:
        path.chmod(0o644)


# -- in-memory inputs --------------------------------------------------------------------------


def test_pil_image_is_converted_and_left_open() -> None:
    rgba = Image.new("RGBA", (4, 2), (0, 0, 255, 0))
    image = load_image(rgba)
    assert torch.equal(image, torch.ones(3, 2, 4))
    assert rgba.mode == "RGBA"


def test_numpy_arrays() -> None:
    gray = np.full((2, 3), 255, dtype=np.uint8)
    assert torch.equal(load_image(gray), torch.ones(3, 2, 3))
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0] = 51
    assert load_image(rgb)[0].unique().tolist() == [pytest.approx(0.2)]
    rgba = np.zeros((1, 1, 4), dtype=np.uint8)  # transparent black
    assert load_image(rgba).flatten().tolist() == [1.0, 1.0, 1.0]
    deep = np.full((1, 1), 65535, dtype=np.uint16)
    assert load_image(deep).flatten().tolist() == [1.0, 1.0, 1.0]
    floats = np.full((1, 1, 3), 0.25, dtype=np.float64)
    assert load_image(floats).flatten().tolist() == [0.25, 0.25, 0.25]
    assert load_image(np.ones((1, 1), dtype=bool)).flatten().tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 2, 2), dtype=np.uint8), r"shape \(H, W\), \(H, W, 3\)"),
        (np.zeros((1, 2, 2, 3), dtype=np.uint8), "shape"),
        (np.zeros((2, 2), dtype=np.int64), "got dtype int64"),
        (np.full((2, 2), 1.5), r"values in \[0, 1\], got values from 1.5 to 1.5"),
        (np.full((2, 2), np.nan), "NaN"),
        (np.zeros((0, 2), dtype=np.uint8), "empty"),
    ],
)
def test_bad_numpy_arrays(array: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        load_image(array)


def test_tensors() -> None:
    x = torch.rand(3, 4, 5, dtype=torch.float64, requires_grad=True)
    image = load_image(x)
    assert image.dtype == torch.float32 and not image.requires_grad
    assert torch.equal(image, x.detach().float())
    batch_of_one = torch.rand(1, 3, 4, 5)
    loaded = load_image(batch_of_one)
    assert loaded.shape == (3, 4, 5)
    assert loaded.data_ptr() != batch_of_one.data_ptr()  # a copy, never an alias
    eights = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1)
    assert load_image(eights).flatten().tolist() == [0.0, pytest.approx(0.2), 1.0]
    assert load_image(torch.rand(3, 4, 5)[:, :, ::2]).is_contiguous()


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (torch.rand(4, 5, 3), r"got \(4, 5, 3\); for \(H, W, 3\) use tensor.permute"),
        (torch.rand(2, 3, 4, 5), "for a batch use load_images"),
        (torch.rand(1, 4, 5), r"\(3, H, W\)"),
        (torch.full((3, 2, 2), 2.0), r"values in \[0, 1\]"),
        (torch.full((3, 2, 2), -0.1), r"values in \[0, 1\]"),
        (torch.full((3, 2, 2), float("inf")), "NaN or infinite"),
        (torch.zeros(3, 2, 2, dtype=torch.int64), "got dtype torch.int64"),
    ],
)
def test_bad_tensors(tensor: torch.Tensor, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        load_image(tensor)


def test_unsupported_source_type() -> None:
    with pytest.raises(InvalidArgumentError, match="got int"):
        load_image(42)  # type: ignore[arg-type]


def test_load_images(tmp_path: Path) -> None:
    path = saved(tmp_path, quadrants(), "q.png")
    images = load_images([path, str(path), torch.rand(3, 2, 2), np.zeros((5, 6), np.uint8)])
    assert [tuple(i.shape) for i in images] == [(3, 24, 32), (3, 24, 32), (3, 2, 2), (3, 5, 6)]
    assert load_images(p for p in [path])[0].shape == (3, 24, 32)
    with pytest.raises(InvalidArgumentError, match="use load_image for one image"):
        load_images(str(path))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="list"):
        load_images(torch.rand(2, 3, 4, 4))  # type: ignore[arg-type]


# -- 8-bit grid --------------------------------------------------------------------------------

unit_floats = st.lists(st.floats(0.0, 1.0, allow_nan=False, width=32), min_size=1, max_size=64)
any_floats = st.lists(st.floats(-2.0, 3.0, allow_nan=False, width=32), min_size=1, max_size=64)


@given(unit_floats)
def test_quantize_properties(values: list[float]) -> None:
    x = torch.tensor(values, dtype=torch.float32)
    q = quantize(x)
    assert q.dtype == x.dtype and q.shape == x.shape
    levels = (q.double() * 255).round()
    assert float((q.double() * 255 - levels).abs().max()) < 1e-4
    # On the grid: exactly the float32 nearest to k / 255.
    assert torch.equal(q, torch.from_numpy(levels.numpy().astype(np.float32) / np.float32(255)))
    assert torch.equal(quantize(q), q)  # idempotent
    assert float((q - x).abs().max()) <= 0.5 / 255 + 1e-7
    assert torch.equal(to_uint8(x).float() / 255, q)


@given(any_floats)
def test_quantize_and_to_uint8_clamp(values: list[float]) -> None:
    x = torch.tensor(values)
    q = quantize(x)
    assert float(q.min()) >= 0.0 and float(q.max()) <= 1.0
    u = to_uint8(x)
    assert u.dtype == torch.uint8
    assert torch.equal(u, (x * 255).round().clamp(0, 255).to(torch.uint8))
    assert torch.equal(to_uint8(q), u)


@settings(max_examples=30)
@given(unit_floats, st.sampled_from([torch.float64, torch.float16, torch.bfloat16]))
def test_quantize_keeps_other_dtypes(values: list[float], dtype: torch.dtype) -> None:
    x = torch.tensor(values).to(dtype)
    q = quantize(x)
    assert q.dtype == dtype and q.shape == x.shape
    expected = torch.from_numpy(to_uint8(x).numpy().astype(np.float64) / 255).to(dtype)
    assert torch.equal(q, expected)
    assert torch.equal(quantize(q), q)


def test_quantize_and_to_uint8_on_batches_and_errors() -> None:
    batch = torch.rand(2, 3, 5, 4, requires_grad=True)
    assert quantize(batch).shape == batch.shape and not quantize(batch).requires_grad
    assert to_uint8(batch).shape == batch.shape
    eights = torch.arange(6, dtype=torch.uint8)
    assert torch.equal(to_uint8(eights), eights)
    with pytest.raises(InvalidArgumentError, match="float tensor"):
        quantize(eights)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        quantize(torch.tensor([float("nan")]))
    with pytest.raises(InvalidArgumentError, match="NaN"):
        to_uint8(torch.tensor([0.5, float("inf")]))


def test_to_pil() -> None:
    x = torch.zeros(3, 2, 5)
    x[0] = 1.0
    picture = to_pil(x)
    assert picture.mode == "RGB" and picture.size == (5, 2)
    assert picture.getpixel((4, 1)) == (255, 0, 0)
    assert to_pil(x.unsqueeze(0)).size == (5, 2)
    with pytest.raises(InvalidArgumentError, match=r"got \(2, 3, 2, 5\)"):
        to_pil(torch.zeros(2, 3, 2, 5))


# -- saving ------------------------------------------------------------------------------------


def test_round_trip_is_exact(tmp_path: Path) -> None:
    x = torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(0))
    q = quantize(x)
    path = save_png(q, tmp_path / "q.png")
    assert path == tmp_path / "q.png"
    loaded = load_image(path)
    assert torch.equal(loaded, q)
    # Unquantized input is saved as its quantization.
    assert torch.equal(load_image(save_png(x, tmp_path / "x.png")), q)
    with Image.open(path) as check:
        assert (check.format, check.mode, check.size) == ("PNG", "RGB", (23, 17))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, seed: int) -> None:
    x = torch.rand(3, 3, 4, generator=torch.Generator().manual_seed(seed))
    directory = tmp_path_factory.mktemp("round")
    q = quantize(x)
    assert torch.equal(load_image(save_png(q, directory / "q.png")), q)


def test_save_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    save_png(torch.zeros(3, 2, 2), path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match=r"out\.png' exists already; pass force=True") as e:
        save_png(torch.ones(3, 2, 2), path)
    assert isinstance(e.value, FileExistsError)
    assert "--force" in str(e.value)
    assert path.read_bytes() == before
    save_png(torch.ones(3, 2, 2), path, force=True)
    assert torch.equal(load_image(path), torch.ones(3, 2, 2))
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    for index in range(3):
        save_png(torch.rand(3, 4, 4), tmp_path / f"{index}.png")
    save_png(torch.rand(3, 4, 4), tmp_path / "0.png", force=True)
    assert sorted(os.listdir(tmp_path)) == ["0.png", "1.png", "2.png"]


def test_save_creates_parents_and_gives_normal_permissions(tmp_path: Path) -> None:
    path = save_png(torch.rand(3, 4, 4), tmp_path / "a" / "b" / "c.png")
    assert path.is_file()
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_pil_images(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (3, 2), (255, 0, 0, 0))
    path = save_png(rgba, tmp_path / "rgba.png")
    with Image.open(path) as check:
        assert check.mode == "RGB"
    assert torch.equal(load_image(path), torch.ones(3, 2, 3))
    rgb = quadrants()
    assert torch.equal(load_image(save_png(rgb, tmp_path / "rgb.png")), load_image(rgb))


def test_save_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"ending in \.png"):
        save_png(torch.rand(3, 2, 2), tmp_path / "out.jpg")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match=r"dir\.png' is a directory"):
        save_png(torch.rand(3, 2, 2), tmp_path / "dir.png", force=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ImageError, match="cannot create the directory"):
        save_png(torch.rand(3, 2, 2), tmp_path / "file" / "sub" / "out.png")
    with pytest.raises(InvalidArgumentError, match=r"got \(2, 2\)"):
        save_png(torch.rand(2, 2), tmp_path / "flat.png")
    with pytest.raises(InvalidArgumentError, match="got ndarray"):
        save_png(np.zeros((2, 2, 3)), tmp_path / "array.png")  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == ["dir.png", "file"]


@pytest.mark.skipif(IS_ROOT or os.name != "posix", reason="root can write anywhere")
def test_save_into_read_only_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ImageError, match=r"locked'.*permission denied"):
            save_png(torch.rand(3, 2, 2), locked / "out.png")
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_FSIZE and SIGXFSZ")
def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    # A real write failure half-way through: a child process whose files may not grow beyond
    # 4 kB saves a 197 kB image. The save must fail cleanly and remove its temporary file.
    script = textwrap.dedent(
        """
        import resource, signal, sys
        import torch
        from trompe.errors import ImageError
        from trompe.images import save_png

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        noise = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0))
        try:
            save_png(noise, sys.argv[1])
        except ImageError as error:
            print("ImageError:", error)
        else:
            print("saved")
        """
    )
    out = tmp_path / "out"
    out.mkdir()
    target = out / "noise.png"
    done = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.startswith(f"ImageError: cannot write '{target}':"), done.stdout
    assert os.listdir(out) == []


# -- preprocessing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "size", "fraction", "expected"),
    [
        ((2, 3, 300, 451), 224, 224 / 256, (2, 3, 224, 224)),
        ((3, 300, 451), 224, 1.0, (3, 224, 224)),
        ((1, 3, 40, 60), (20, 30), 0.5, (1, 3, 20, 30)),
        ((1, 3, 60, 40), (16, 32), 1.0, (1, 3, 16, 32)),
        ((1, 3, 10, 10), 32, 1.0, (1, 3, 32, 32)),
    ],
)
def test_center_crop_resize_shape(
    shape: tuple[int, ...], size: int | tuple[int, int], fraction: float, expected: tuple[int, ...]
) -> None:
    images = torch.rand(*shape)
    out = center_crop_resize(images, size, crop_fraction=fraction)
    assert out.shape == expected and out.dtype == images.dtype


@pytest.mark.parametrize(
    "interpolation", ["bicubic", "bilinear", "area", "nearest", "nearest-exact"]
)
def test_center_crop_resize_modes(interpolation: str) -> None:
    out = center_crop_resize(torch.rand(1, 3, 30, 40), 12, interpolation=interpolation)
    assert out.shape == (1, 3, 12, 12)


def test_center_crop_resize_gradient_stays_in_the_crop() -> None:
    # 20 x 30 image, crop_fraction 0.5: a 10 x 10 square at rows 5..14, columns 10..19.
    images = torch.rand(1, 3, 20, 30, dtype=torch.float64, requires_grad=True)
    out = center_crop_resize(images, 7, crop_fraction=0.5)
    weights = torch.rand(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    grad = images.grad
    assert grad is not None
    inside = torch.zeros_like(grad, dtype=torch.bool)
    inside[..., 5:15, 10:20] = True
    assert bool((grad[inside] != 0).all())
    assert bool((grad[~inside] == 0).all())


def test_center_crop_resize_gradcheck() -> None:
    images = torch.rand(1, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: center_crop_resize(x, 5, crop_fraction=0.8), (images,)
    )


def test_center_crop_resize_identity_and_pure_crop() -> None:
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(center_crop_resize(images, 16), images)
    wide = torch.rand(3, 16, 24)
    assert torch.equal(center_crop_resize(wide, 16), wide[:, :, 4:20])
    assert torch.equal(center_crop_resize(wide, 8, crop_fraction=0.5), wide[:, 4:12, 8:16])


def test_center_crop_resize_matches_tf_crop_size() -> None:
    # EfficientNet convention: crop_fraction = S / (S + 32); 300 x 451 photo, S = 224.
    # The crop is round(0.875 * 300) = 262.5 -> 263 (half up), offset (300 - 263) // 2 = 18.
    images = torch.rand(1, 3, 300, 451)
    expected = torch.nn.functional.interpolate(
        images[..., 18:281, 94:357], size=(224, 224), mode="bicubic", antialias=True
    )
    out = center_crop_resize(images, 224, crop_fraction=224 / 256)
    assert torch.equal(out, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "positive"),
        ({"size": (10, -1)}, "positive"),
        ({"size": (1, 2, 3)}, r"int or \(height, width\)"),
        ({"size": 10, "crop_fraction": 0.0}, r"crop_fraction must be in \(0, 1\]"),
        ({"size": 10, "crop_fraction": 1.5}, r"crop_fraction must be in \(0, 1\]"),
        ({"size": 10, "crop_fraction": float("nan")}, "crop_fraction"),
        ({"size": 10, "interpolation": "lanczos"}, "unknown interpolation 'lanczos'"),
    ],
)
def test_center_crop_resize_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        center_crop_resize(torch.rand(1, 3, 8, 8), **kwargs)  # type: ignore[arg-type]


def test_center_crop_resize_bad_images() -> None:
    with pytest.raises(InvalidArgumentError, match="float images"):
        center_crop_resize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 4)
    with pytest.raises(InvalidArgumentError, match="float images"):
        center_crop_resize(torch.zeros(8, 8), 4)


# -- examples ----------------------------------------------------------------------------------


def test_examples_exist_and_load() -> None:
    assert set(EXAMPLES) == {"chelsea", "coffee"}
    for name in EXAMPLES:
        assert example_path(name).is_file()
    chelsea = load_image(example_path())
    assert chelsea.shape == (3, 300, 451)
    assert load_image(example_path("coffee")).shape == (3, 400, 600)
    assert example_path("cat") == example_path("chelsea") == example_path("Chelsea")


def test_unknown_example() -> None:
    with pytest.raises(
        InvalidArgumentError, match="unknown example 'dog'; known examples: chelsea"
    ):
        example_path("dog")


def test_in_memory_png_bytes_not_needed() -> None:
    # A PIL image opened by the caller from bytes is accepted like a file.
    buffer = io.BytesIO()
    quadrants().save(buffer, format="PNG")
    buffer.seek(0)
    with Image.open(buffer) as opened:
        image = load_image(opened)
    assert_colour(image, 5, 5, (1, 0, 0), 0.0)
