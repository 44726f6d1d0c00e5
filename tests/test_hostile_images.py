"""Hostile image files: formats outside the allow-list, a fake Ghostscript, leaking warnings.

Every file is written at test time, with Pillow where it can write the format and as a minimal
header where it cannot. No mock: the real Pillow opens the real files.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, TiffImagePlugin, features

from trompe.errors import ImageError, InvalidArgumentError
from trompe.images import IMAGE_FORMATS, load_image

ACCEPTED = "JPEG, PNG, WebP, GIF, TIFF or BMP"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def picture() -> Image.Image:
    return Image.new("RGB", (16, 12), (200, 30, 40))


def fake_ghostscript(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose PATH starts with a `gs` that only creates a marker file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gs-was-run"
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
    gs.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env, marker


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for gs")
def test_postscript_named_png_never_reaches_ghostscript(tmp_path: Path) -> None:
    evil = tmp_path / "holiday.png"
    picture().save(evil, format="EPS")
    env, marker = fake_ghostscript(tmp_path)

    # The trap works: Pillow left to itself runs the fake gs on this very file.
    control = run_python(
        f"""
        from PIL import Image
        try:
            Image.open({str(evil)!r}).load()
        except Exception:
            pass
        """,
        env,
    )
    assert control.returncode == 0, control.stderr
    assert marker.exists(), "the fake gs was not run: this test would prove nothing"
    marker.unlink()

    result = run_python(
        f"""
        from trompe.errors import ImageError
        from trompe.images import load_image
        try:
            load_image({str(evil)!r})
        except ImageError as error:
            print(error)
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    message = result.stdout.strip()
    assert "holiday.png' looks like EPS data" in message
    assert ACCEPTED in message
    assert not marker.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for gs")
def test_postscript_through_the_cli(tmp_path: Path) -> None:
    evil = tmp_path / "cat.png"
    picture().save(evil, format="EPS")
    env, marker = fake_ghostscript(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "trompe", "classify", str(evil)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "looks like EPS data" in lines[0] and ACCEPTED in lines[0]
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def written_by_pillow(fmt: str) -> bytes:
    buffer = io.BytesIO()
    picture().save(buffer, format=fmt)
    return buffer.getvalue()


def psd_header() -> bytes:
    # Signature, version 1, reserved, 3 channels, 12 x 16, depth 8, RGB; three empty sections;
    # then raw (uncompressed) planes.
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 12, 16, 8, 3) + bytes(12)
    return header + struct.pack(">H", 0) + bytes(3 * 12 * 16)


def fits_header() -> bytes:
    cards = [b"SIMPLE  =                    T", b"BITPIX  =                    8"]
    cards += [b"NAXIS   =                    2", b"NAXIS1  =                   16"]
    cards += [b"NAXIS2  =                   12", b"END"]
    header = b"".join(card.ljust(80) for card in cards)
    return header.ljust(2880) + bytes(16 * 12).ljust(2880, b"\0")


REFUSED = {
    "EPS": lambda: written_by_pillow("EPS"),
    "JPEG2000": lambda: written_by_pillow("JPEG2000"),
    "PSD": psd_header,
    "FITS": fits_header,
    "ICO": lambda: written_by_pillow("ICO"),
    "PCX": lambda: written_by_pillow("PCX"),
    "PPM": lambda: written_by_pillow("PPM"),
    "SGI": lambda: written_by_pillow("SGI"),
    "DDS": lambda: written_by_pillow("DDS"),
    "QOI": lambda: written_by_pillow("QOI"),
    "ICNS": lambda: written_by_pillow("ICNS"),
}


@pytest.mark.parametrize("fmt", sorted(REFUSED))
def test_other_formats_named_png_are_refused(tmp_path: Path, fmt: str) -> None:
    if fmt == "JPEG2000" and not features.check("jpg_2000"):
        pytest.skip("this Pillow cannot write JPEG 2000")
    path = tmp_path / "photo.png"
    path.write_bytes(REFUSED[fmt]())
    with Image.open(path) as unrestricted:  # Pillow alone would decode it as that format
        assert unrestricted.format == fmt
    with pytest.raises(ImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert f"photo.png' looks like {fmt} data, which trompe does not decode" in message
    assert ACCEPTED in message
    assert "\n" not in message


def test_unknown_bytes_name_the_accepted_formats(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(written_by_pillow("TGA"))  # TGA has no signature to recognise
    with pytest.raises(ImageError, match=r"scan\.png' (is not an image|looks like)") as caught:
        load_image(path)
    assert ACCEPTED in str(caught.value)


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_each_accepted_format_still_loads(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "photo.png"  # named .png whatever it holds: the content decides
    path.write_bytes(written_by_pillow(fmt))
    image = load_image(path)
    assert image.shape == (3, 12, 16)
    if fmt not in ("JPEG", "WEBP"):  # lossy
        red = (image[:, 0, 0] * 255).round().tolist()
        assert red == [200.0, 30.0, 40.0]


def test_a_multi_picture_jpeg_loads(tmp_path: Path) -> None:
    path = tmp_path / "camera.jpg"
    picture().save(path, format="MPO")
    assert load_image(path).shape == (3, 12, 16)


def test_pil_image_of_a_refused_format(tmp_path: Path) -> None:
    path = tmp_path / "poster.png"
    path.write_bytes(psd_header())
    with Image.open(path) as opened, pytest.raises(InvalidArgumentError) as caught:
        load_image(opened)
    assert "is a PSD image" in str(caught.value) and ACCEPTED in str(caught.value)
    # Converted by the caller, it is plain pixels.
    assert load_image(Image.new("RGB", (4, 4))).shape == (3, 4, 4)


def test_bytes_and_file_objects_are_not_sources(tmp_path: Path) -> None:
    data = written_by_pillow("EPS")
    for source in (data, io.BytesIO(data)):
        with pytest.raises(InvalidArgumentError, match="takes a path, a PIL image"):
            load_image(source)  # type: ignore[arg-type]


def broken_apng() -> bytes:
    """A PNG whose acTL chunk claims zero frames: Pillow warns, then reads the plain PNG."""
    data = written_by_pillow("PNG")
    body = b"acTL" + struct.pack(">II", 0, 0)
    chunk = struct.pack(">I", 8) + body + struct.pack(">I", zlib.crc32(body))
    at = data.index(b"IDAT") - 4
    return data[:at] + chunk + data[at:]


def test_pillow_warnings_become_one_line_of_ours(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "animated.png"
    path.write_bytes(broken_apng())
    with pytest.warns(UserWarning, match="Invalid APNG"):  # the trap: Pillow does warn
        Image.open(io.BytesIO(path.read_bytes())).load()
    with caplog.at_level(logging.WARNING, logger="trompe.images"), warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping load_image fails the test
        image = load_image(path)
    assert image.shape == (3, 12, 16)
    records = [r for r in caplog.records if r.name == "trompe.images"]
    assert len(records) == 1
    assert (
        records[0].getMessage() == f"'{path}': Invalid APNG, will use default PNG image if possible"
    )
    assert capfd.readouterr().err == ""


def test_broken_apng_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "animated.png"
    path.write_bytes(broken_apng())
    result = subprocess.run(
        [sys.executable, "-m", "trompe", "classify", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "PngImagePlugin" not in result.stderr and "site-packages" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Invalid APNG" in lines[0], result.stderr


def test_libtiff_writes_nothing_to_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # A compressed TIFF goes through libtiff, whose C code prints warnings itself unless Pillow
    # routes them; here with an unknown tag whose text lacks its terminating NUL.
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[50000] = "hello"
    path = tmp_path / "scan.tif"
    picture().save(path, compression="tiff_lzw", tiffinfo=tags)
    data = path.read_bytes()
    assert data.count(b"hello\0") == 1
    path.write_bytes(data.replace(b"hello\0", b"helloX"))
    capfd.readouterr()
    assert load_image(path).shape == (3, 12, 16)
    assert capfd.readouterr().err == ""


def test_every_image_open_in_trompe_has_the_allow_list() -> None:
    sources = Path(SRC, "trompe").rglob("*.py")
    calls = [
        (path.name, line.strip())
        for path in sources
        for line in path.read_text().splitlines()
        if "Image.open(" in line and not line.lstrip().startswith("#")
    ]
    assert calls, "load_image no longer opens files with Image.open: update this test"
    # The allow-list itself, or a narrower one (trompe's own PNG and JPEG bytes, read back).
    allowed = re.compile(r'formats=(IMAGE_FORMATS|\(("(PNG|JPEG)",\s*)+\))')
    assert all(len(allowed.findall(line)) == line.count("Image.open(") for _, line in calls), calls


def test_only_pillows_warnings_are_turned_into_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from trompe import images

    pillow_file = images.Image.__file__
    with (
        caplog.at_level(logging.WARNING, logger="trompe.images"),
        pytest.warns(UserWarning, match="not Pillow's") as passed,
        images._pillow_warnings("'x.png'"),
    ):
        warnings.warn_explicit("Pillow speaks", UserWarning, pillow_file, 1)
        warnings.warn("not Pillow's", UserWarning, stacklevel=1)
    assert [str(w.message) for w in passed] == ["not Pillow's"]
    assert [r.getMessage() for r in caplog.records] == ["'x.png': Pillow speaks"]
