"""The adversarial patch (Brown et al. 2017): pasting geometry, apply_patch's bounds, a real
learning check against a noise patch, the saved files, and ``trompe patch`` end to end."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

import trompe
from _helpers import one_line_error, run_cli
from trompe.attacks.patch import (
    MAX_SIZE,
    Placements,
    apply_patch,
    draw_placements,
    learn_patch,
    paste,
    resize_patch,
)
from trompe.errors import InvalidArgumentError, OutputExistsError
from trompe.evaluation.patch import PatchResult, evaluate_patch
from trompe.images import example_path, load_image, quantize, read_png_text
from trompe.models import load_model
from trompe.models.digits import load_digits


def _placements(centres: list[list[float]], sides: list[float], angles: list[float]) -> Placements:
    n = len(sides)
    return Placements(
        centres=torch.tensor(centres),
        sides=torch.tensor(sides),
        angles=torch.tensor(angles),
        brightness=torch.zeros(n),
        contrast=torch.ones(n),
    )


def _moments(mask: torch.Tensor) -> tuple[float, float, float]:
    """Area in pixels and centre (x, y) as fractions of the width and height."""
    height, width = mask.shape
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    area = float(mask.sum())
    return area, float((mask * xs).sum()) / area / width, float((mask * ys).sum()) / area / height


# -- pasting geometry ------------------------------------------------------------------------


def test_paste_area_and_centre_are_as_asked() -> None:
    images = torch.zeros(3, 3, 90, 160)
    placements = _placements(
        [[0.5, 0.5], [0.3, 0.25], [0.75, 0.6]], [0.3, 0.2, 0.5], [0.0, 17.0, -40.0]
    )
    _, mask = paste(torch.rand(3, 32, 32), images, placements)
    for i, (side, centre) in enumerate(
        zip([0.3, 0.2, 0.5], [(0.5, 0.5), (0.3, 0.25), (0.75, 0.6)], strict=True)
    ):
        area, cx, cy = _moments(mask[i, 0])
        # The side is a fraction of the shorter side (90 px); rotation keeps the area.
        assert area == pytest.approx((side * 90) ** 2, rel=0.01)
        assert (cx, cy) == pytest.approx(centre, abs=0.003)


def test_paste_shows_the_patch_upright_and_leaves_the_rest() -> None:
    image = torch.full((1, 3, 40, 40), 0.25)
    patch = torch.zeros(3, 20, 20)
    patch[0, :10] = 1.0  # top half red
    pasted, mask = paste(patch, image, _placements([[0.5, 0.5]], [0.5], [0.0]))
    assert torch.allclose(pasted[0, :, :5], image[0, :, :5])  # outside: unchanged
    assert pasted[0, 0, 12, 20] == pytest.approx(1.0)  # the red half is on top
    assert pasted[0, 0, 27, 20] == pytest.approx(0.0)
    assert mask[0, 0, 20, 20] == pytest.approx(1.0)


def test_gradients_flow_to_the_patch_only_where_it_lands() -> None:
    patch = torch.rand(3, 16, 16, requires_grad=True)
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    generator = torch.Generator().manual_seed(0)
    pasted, _ = paste(patch, images, draw_placements(2, 0.1, generator))
    pasted.sum().backward()
    assert patch.grad is not None and bool((patch.grad != 0).any())
    assert images.grad is not None
    # Under the patch the photo gets no gradient (it is covered); elsewhere it gets all of it.
    assert bool((images.grad == 0).any()) and bool((images.grad == 1).any())


def test_draws_stay_in_the_ranges_and_in_the_image() -> None:
    generator = torch.Generator().manual_seed(3)
    drawn = draw_placements(500, 0.1, generator, aspect=2.0)
    sides = drawn.sides
    assert float(sides.min()) >= math.sqrt(0.07) - 1e-6
    assert float(sides.max()) <= math.sqrt(0.13) + 1e-6
    assert float(drawn.angles.abs().max()) <= 20.0
    # The unrotated square lies inside a 2:1 image: x within half a side (of the height) / 2.
    assert bool((drawn.centres[:, 0] - sides / 4 >= -1e-6).all())
    assert bool((drawn.centres[:, 1] + sides / 2 <= 1 + 1e-6).all())
    again = draw_placements(500, 0.1, torch.Generator().manual_seed(3), aspect=2.0)
    assert torch.equal(drawn.centres, again.centres)


# -- apply_patch -------------------------------------------------------------------------------


def test_apply_patch_puts_the_patch_where_asked() -> None:
    photo = quantize(torch.rand(3, 120, 200))
    patch = quantize(torch.rand(3, 64, 64))
    out = apply_patch(patch, photo, (0.25, 0.5, 0.4), size=0.1)
    side = 48  # 0.4 x 120
    top, left = 60 - 24, 50 - 24
    assert torch.equal(
        out[:, top : top + side, left : left + side], quantize(resize_patch(patch, side))
    )
    outside = torch.ones(120, 200, dtype=torch.bool)
    outside[top : top + side, left : left + side] = False
    assert torch.equal(out[:, outside], photo[:, outside])
    assert torch.equal(quantize(out), out)  # on the 8-bit grid


def test_apply_patch_without_where_is_centred_at_the_learnt_size() -> None:
    photo = torch.zeros(3, 100, 100)
    out = apply_patch(torch.ones(3, 32, 32), photo, None, size=0.09)
    covered = out[0] > 0.5
    assert int(covered.sum()) == 30 * 30  # sqrt(0.09) x 100
    assert bool(covered[50, 50])


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ((0.5, 0.5, 1.5), "larger than the image"),
        ((0.05, 0.5, 0.3), "sticks out"),
        ((1.2, 0.5, 0.3), "in [0, 1]"),
        ((0.5, 0.5, 0.0), "above 0"),
        ((0.5, 0.5, 0.001), "under one pixel"),
        ((0.5, 0.5), "(x, y, scale)"),
        ((0.5, "a", 0.3), "numbers"),
    ],
)
def test_apply_patch_refuses_bad_places(where: object, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(words)):
        apply_patch(torch.rand(3, 16, 16), torch.rand(3, 100, 120), where, size=0.1)  # type: ignore[arg-type]


def test_apply_patch_refuses_a_patch_that_is_not_square() -> None:
    with pytest.raises(InvalidArgumentError, match="square"):
        apply_patch(torch.rand(3, 16, 20), torch.rand(3, 100, 120), None, size=0.1)


# -- a real learning check: the patch beats a noise patch on held-out digits -----------------


@pytest.fixture(scope="module")
def digits_patch() -> PatchResult:
    data = load_digits()
    model = load_model("digits_robust")
    return trompe.patch(
        {f"train-{i}.png": data.train_images[i] for i in range(64)},
        3,
        model=model,
        size=0.4,
        holdout={f"test-{i}.png": data.test_images[i] for i in range(50)},
        steps=150,
        batch_size=32,
        step_size=0.05,
        side=16,
        placements=10,
        seed=0,
    )


def test_learnt_patch_beats_a_noise_patch_on_held_out_photos(digits_patch: PatchResult) -> None:
    # Measured: 48 % vs 2 % (a 5 x 5 px patch on 8 x 8 digits, robustly trained model).
    assert digits_patch.success_rate >= 0.3
    assert digits_patch.success_rate >= digits_patch.noise_success_rate + 0.25
    assert len(digits_patch.evaluation.photos) == 50
    assert digits_patch.patch.shape == (3, 16, 16)
    assert torch.equal(quantize(digits_patch.patch), digits_patch.patch)


def test_saved_files_hold_what_was_measured(digits_patch: PatchResult, tmp_path: Path) -> None:
    paths = digits_patch.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "patch.png",
        "report.png",
        "result.json",
    ]
    saved = load_image(paths["patch"])
    assert torch.equal(saved, digits_patch.patch)
    meta = json.loads(read_png_text(paths["patch"])["trompe"])
    assert meta == {
        "kind": "patch",
        "model": "digits_robust",
        "target": "3",
        "target_index": 3,
        "size": 0.4,
    }
    record = json.loads(paths["result"].read_text())
    assert record["holdout"]["success_rate"] == pytest.approx(digits_patch.success_rate)
    assert len(record["holdout"]["photos"]) == 50
    # Re-measured from the saved file alone, the success is the same.
    data = load_digits()
    again = evaluate_patch(
        load_model("digits_robust"),
        saved,
        data.test_images[:50],
        [f"test-{i}.png" for i in range(50)],
        3,
        size=0.4,
        placements=10,
        seed=0,
    )
    assert again.success_rate == digits_patch.success_rate
    # Never overwritten without force; with force, yes.
    with pytest.raises(OutputExistsError):
        digits_patch.save(tmp_path / "out")
    digits_patch.save(tmp_path / "out", force=True)


def test_same_seed_same_patch() -> None:
    model = load_model("digits_robust")
    images = load_digits().train_images[:8]
    first = learn_patch(model, images, 5, size=0.3, steps=3, batch_size=4, side=16, seed=7)
    second = learn_patch(model, images, 5, size=0.3, steps=3, batch_size=4, side=16, seed=7)
    third = learn_patch(model, images, 5, size=0.3, steps=3, batch_size=4, side=16, seed=8)
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"size": 0.7}, "size"),
        ({"size": 0.0}, "size"),
        ({"holdout": 1.5}, "fraction"),
        ({"steps": 0}, "steps"),
    ],
)
def test_api_refuses_bad_arguments(kwargs: dict[str, object], words: str) -> None:
    images = {"a.png": torch.rand(3, 8, 8), "b.png": torch.rand(3, 8, 8)}
    with pytest.raises(InvalidArgumentError, match=words):
        trompe.patch(images, 3, model="digits_robust", **kwargs)  # type: ignore[arg-type]


def test_api_refuses_one_photo_without_a_holdout() -> None:
    with pytest.raises(InvalidArgumentError, match="held out"):
        trompe.patch({"a.png": torch.rand(3, 8, 8)}, 3, model="digits_robust", steps=1)


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee"):
        (folder / f"{name}.png").write_bytes(example_path(name).read_bytes())
    return folder


@pytest.mark.slow
def test_cli_end_to_end(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "patch", str(photos), "--target", "toaster", "--steps", "2", "--batch-size", "2",
        "--placements", "3", "--holdout-fraction", "0.5", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["model"] == "efficientnet_lite0"
    assert summary["target"] == {"index": 859, "label": "toaster"}
    assert summary["holdout"]["placements_per_photo"] == 3
    assert len(summary["train"]) == 1 and len(summary["holdout"]["photos"]) == 1
    patch = load_image(out / "patch.png")
    assert patch.shape == (3, 256, 256)
    assert json.loads(read_png_text(out / "patch.png")["trompe"])["kind"] == "patch"
    # Again without --force: one line, exit 2, nothing changed.
    before = (out / "result.json").read_bytes()
    again = run_cli("patch", str(photos), "-t", "toaster", "--steps", "1", "--out", str(out))
    one_line_error(again, 2, "exists")
    assert (out / "result.json").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--size", "0.1"], 2, "--target"),
        (["-t", "toaster", "--size", "0.7"], 2, "size"),
        (["-t", "no-such-class", "-m", "digits_robust"], 2, "no-such-class"),
    ],
)
def test_cli_bad_inputs_write_nothing(
    photos: Path, tmp_path: Path, args: list[str], code: int, words: str
) -> None:
    out = tmp_path / "out"
    one_line_error(run_cli("patch", str(photos), *args, "--out", str(out)), code, words)
    assert not out.exists()


def test_cli_empty_or_non_image_folder_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a photo")
    out = tmp_path / "out"
    one_line_error(
        run_cli("patch", str(folder), "-t", "toaster", "--out", str(out)), 2, "no photos"
    )
    assert not out.exists()


def test_cli_size_limit_matches_the_library() -> None:
    from trompe.cli.patch import MAX_SIZE as CLI_MAX_SIZE

    assert CLI_MAX_SIZE == MAX_SIZE


def test_parse_where() -> None:
    from trompe.attacks.patch import parse_where

    assert parse_where(" 0.25, 0.5 ,0.3") == (0.25, 0.5, 0.3)
    for text, words in (("0.5,0.5", "x,y,scale"), ("a,b,c", "x,y,scale"), ("0.5,0.5,2", "larger")):
        with pytest.raises(InvalidArgumentError, match=words):
            parse_where(text)


def test_apply_patch_takes_the_size_from_the_metadata() -> None:
    photo = torch.zeros(3, 100, 100)
    out = apply_patch(torch.ones(3, 32, 32), photo, None, meta={"kind": "patch", "size": 0.16})
    assert int((out[0] > 0.5).sum()) == 40 * 40
    with pytest.raises(InvalidArgumentError, match="unknown"):
        apply_patch(torch.ones(3, 32, 32), photo, None)


@pytest.mark.slow
def test_trompe_apply_pastes_the_saved_patch(digits_patch: PatchResult, tmp_path: Path) -> None:
    from trompe.images import save_png

    paths = digits_patch.save(tmp_path / "made")
    photo = quantize(torch.rand(3, 40, 60, generator=torch.Generator().manual_seed(0)))
    save_png(photo, tmp_path / "photo.png")
    expected = apply_patch(digits_patch.patch, photo, (0.3, 0.5, 0.5))
    assert torch.equal(trompe.apply(paths["patch"], photo, where=(0.3, 0.5, 0.5)), expected)
    # Without where: the middle, at the learnt size (sqrt(0.4) of the shorter side).
    middle = apply_patch(digits_patch.patch, photo, None, size=0.4)
    assert torch.equal(trompe.apply(paths["patch"], photo), middle)
    out = tmp_path / "applied.png"
    result = run_cli(
        "apply", str(paths["patch"]), str(tmp_path / "photo.png"), "--where", "0.3,0.5,0.5",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert torch.equal(load_image(out), expected)
    # A patch that sticks out: one line, nothing written.
    bad = run_cli(
        "apply", str(paths["patch"]), str(tmp_path / "photo.png"), "--where", "0.05,0.5,0.5",
        "--out", str(tmp_path / "bad.png"),
    )  # fmt: skip
    one_line_error(bad, 2, "sticks out")
    assert not (tmp_path / "bad.png").exists()
