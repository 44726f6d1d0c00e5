"""The universal perturbation (``trompe universal``, ``trompe apply``): the mechanics on the
robust digits model and scikit-learn digits saved as PNG files, and one run on a real photo
model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import trompe
from _helpers import one_line_error, run_cli
from trompe.api import NOT_AN_ARTIFACT, apply, read_artifact, universal
from trompe.attacks.universal import (
    MAX_EPS_255,
    UniversalProgress,
    apply_universal,
    check_universal_eps,
    clean_top1,
    fooling_rate,
    learn_universal,
    noise_perturbation,
    resize_delta,
)
from trompe.errors import InvalidArgumentError, OutputExistsError
from trompe.images import load_image, png_bytes, quantize, read_png_text, save_png
from trompe.models import load_model
from trompe.models.digits import load_digits

#: digits_robust was adversarially trained at 32/255: a universal change needs more.
EPS = 96 / 255


@pytest.fixture(scope="module")
def robust() -> trompe.Classifier:
    return load_model("digits_robust")


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 test digits of scikit-learn as 8x8 PNG files."""
    folder = tmp_path_factory.mktemp("digits")
    images = load_digits().test_images[:64]
    for index, image in enumerate(images):
        save_png(image, folder / f"digit-{index:03d}.png")
    return folder


@pytest.fixture(scope="module")
def learned(digit_folder: Path, robust: trompe.Classifier) -> trompe.api.UniversalResult:
    return universal(digit_folder, model=robust, eps=EPS, seed=0)


def test_the_perturbation_beats_noise_on_held_out_digits(
    learned: trompe.api.UniversalResult,
) -> None:
    # 16 of the 64 digits are held out (a quarter); the model never saw them in training.
    assert len(learned.holdout_names) == 16 and len(learned.train_names) == 48
    assert not set(learned.holdout_names) & set(learned.train_names)
    assert learned.train.rate >= 0.5
    assert learned.holdout.rate >= learned.noise_holdout.rate + 0.3
    assert learned.holdout.rate >= 0.5


def test_the_perturbation_is_whole_levels_within_eps(learned: trompe.api.UniversalResult) -> None:
    levels = learned.delta * 255
    assert torch.equal(levels, levels.round())
    assert float(levels.abs().max()) <= 96
    assert learned.delta.shape == (3, 8, 8)


def test_fooling_rates_are_those_of_the_8bit_photos(
    learned: trompe.api.UniversalResult, digit_folder: Path, robust: trompe.Classifier
) -> None:
    for name, before, after, fooled in zip(
        learned.holdout_names,
        learned.holdout.before,
        learned.holdout.after,
        learned.holdout.fooled,
        strict=True,
    ):
        photo = load_image(digit_folder / name)
        changed = apply_universal(learned.delta, photo)
        assert torch.equal(changed, quantize(changed))
        assert float((changed - photo).abs().max()) * 255 <= 96 + 1e-4
        top = int(robust.probs(changed).argmax())
        assert top == after
        assert int(robust.probs(photo).argmax()) == before
        assert fooled == (after != before)
    rates = learned.to_json()["fooling_rate"]
    assert rates["holdout"] == round(sum(learned.holdout.fooled) / 16, 4)


def test_targeted_moves_held_out_digits_to_the_target(
    digit_folder: Path, robust: trompe.Classifier
) -> None:
    result = universal(digit_folder, "0", model=robust, eps=EPS, epochs=10)
    assert result.target == 0 and result.target_label == "0"
    pairs = zip(result.holdout.fooled, result.holdout.after, strict=True)
    assert all(fooled == (after == 0) for fooled, after in pairs)
    assert result.holdout.rate >= result.noise_holdout.rate + 0.3
    assert result.to_json()["target"] == {"index": 0, "label": "0"}


def test_same_seed_same_perturbation_and_progress(robust: trompe.Classifier) -> None:
    photos = list(load_digits().test_images[:24])
    seen: list[UniversalProgress] = []
    one = learn_universal(robust, photos, eps=EPS, epochs=3, patience=0, progress=seen.append)
    two = learn_universal(robust, photos, eps=EPS, epochs=3, patience=0)
    assert torch.equal(one.delta, two.delta)
    assert [p.epoch for p in seen] == [1, 2, 3] and seen[-1].epochs == 3
    assert [p.fooling_rate for p in seen] == one.history
    assert seen[-1].best == max(one.history)


def test_noise_baseline_is_random_signs_of_eps() -> None:
    noise = noise_perturbation(10, (4, 5), seed=3)
    assert sorted((noise * 255).round().unique().tolist()) == [-10.0, 10.0]
    assert torch.equal(noise, noise_perturbation(10, (4, 5), seed=3))


def test_apply_resizes_the_perturbation_to_the_photo() -> None:
    delta = torch.zeros(3, 8, 8)
    delta[:, :, 4:] = 6 / 255  # right half raised
    photo = quantize(torch.rand(3, 30, 45, generator=torch.Generator().manual_seed(0)) * 0.5)
    changed = apply_universal(delta, photo)
    assert changed.shape == photo.shape
    moved = ((changed - photo) * 255).round()
    assert float(moved[..., :20].abs().max()) == 0  # the left part of the photo is untouched
    assert float(moved[..., 26:].min()) == 6  # the right part moved by the whole 6 levels
    assert float(moved.abs().max()) <= 6
    # Shrinking (an 8x8 change on a 4x4 photo) stays within eps too (antialiased bilinear).
    small = resize_delta(torch.full((3, 8, 8), 5 / 255) * torch.randn(3, 8, 8).sign(), (4, 4))
    assert float(small.abs().max()) * 255 <= 5 + 1e-4


def test_eps_out_of_range_is_refused() -> None:
    from trompe.cli import universal as cli_universal

    assert cli_universal.MAX_EPS_255 == MAX_EPS_255
    assert check_universal_eps(10 / 255) == 10
    assert check_universal_eps(10.5 / 255) == 10
    for bad in (0.0, 0.5 / 255, (MAX_EPS_255 + 1) / 255, float("nan"), -1.0):
        with pytest.raises(InvalidArgumentError, match="eps"):
            check_universal_eps(bad)


def test_save_round_trips_and_is_all_or_nothing(
    learned: trompe.api.UniversalResult, tmp_path: Path, digit_folder: Path
) -> None:
    out = tmp_path / "out"
    paths = learned.save(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "perturbation.png",
        "perturbation.pt",
        "report.png",
        "result.json",
    ]
    meta = json.loads(read_png_text(paths["perturbation.png"])["trompe"])
    assert meta["kind"] == "universal" and meta["eps_255"] == 96 and meta["offset"] == 128
    assert meta["model"] == "digits_robust" and meta["target"] is None
    kind, delta, _ = read_artifact(paths["perturbation.png"])
    assert kind == "universal" and torch.equal(delta, learned.delta)
    stored = torch.load(paths["perturbation.pt"], weights_only=True)
    assert torch.equal(stored["delta"], learned.delta) and stored["kind"] == "universal"
    summary = json.loads(paths["result.json"].read_text())
    assert summary["fooling_rate"]["holdout"] == round(learned.holdout.rate, 4)
    assert summary["photos"] == {"train": 48, "holdout": 16}
    with Image.open(paths["report.png"]) as report:
        assert report.format == "PNG" and report.width >= 1000

    # Without force nothing changes; with it, all four are written again.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(OutputExistsError):
        learned.save(out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    learned.save(out, force=True)
    # An input photo is never overwritten, force or not.
    # The photo folder itself is a fine place (no photo there has an output's name).
    assert Path(learned.sources[0]).parent == digit_folder


def test_save_refuses_when_an_input_photo_has_an_output_name(
    tmp_path: Path, robust: trompe.Classifier
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    digits = load_digits().test_images
    for index in range(3):
        save_png(digits[index], folder / f"d{index}.png")
    save_png(digits[3], folder / "perturbation.png")
    result = universal(folder, model=robust, eps=EPS, epochs=1)
    with pytest.raises(InvalidArgumentError, match="never overwritten"):
        result.save(folder, force=True)
    assert sorted(p.name for p in folder.iterdir()) == [
        "d0.png",
        "d1.png",
        "d2.png",
        "perturbation.png",
    ]


def test_apply_reads_png_and_pt_alike(
    learned: trompe.api.UniversalResult, tmp_path: Path, digit_folder: Path
) -> None:
    paths = learned.save(tmp_path / "out")
    photo = digit_folder / "digit-000.png"
    expected = apply_universal(learned.delta, load_image(photo))
    assert torch.equal(apply(paths["perturbation.png"], photo), expected)
    assert torch.equal(apply(paths["perturbation.pt"], photo), expected)
    with pytest.raises(InvalidArgumentError, match="patches only"):
        apply(paths["perturbation.png"], photo, where=(0.5, 0.5, 0.2))


def test_apply_refuses_what_is_not_a_perturbation(tmp_path: Path, digit_folder: Path) -> None:
    photo = digit_folder / "digit-000.png"
    with pytest.raises(InvalidArgumentError, match="not a trompe perturbation"):
        apply(photo, photo)
    odd = tmp_path / "odd.png"
    odd.write_bytes(png_bytes(torch.full((3, 4, 4), 0.5), {"trompe": "not json"}))
    with pytest.raises(InvalidArgumentError, match="not a trompe perturbation"):
        apply(odd, photo)
    # A PNG edited past its budget: 128 + 50 levels where eps says 10.
    edited = tmp_path / "edited.png"
    meta = {"kind": "universal", "eps_255": 10, "offset": 128, "model": "digits_robust"}
    edited.write_bytes(png_bytes(torch.full((3, 4, 4), 178 / 255), {"trompe": json.dumps(meta)}))
    with pytest.raises(InvalidArgumentError, match="more than its eps"):
        apply(edited, photo)
    tensor_file = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, tensor_file)
    with pytest.raises(InvalidArgumentError, match="not a trompe perturbation"):
        apply(tensor_file, photo)
    assert NOT_AN_ARTIFACT.startswith("not a trompe")


def test_bad_inputs_write_nothing(tmp_path: Path, robust: trompe.Classifier) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    with pytest.raises(InvalidArgumentError, match="holds no photos"):
        universal(empty, model=robust)
    one = tmp_path / "one"
    one.mkdir()
    save_png(load_digits().test_images[0], one / "a.png")
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        universal(one, model=robust, eps=EPS)
    with pytest.raises(InvalidArgumentError, match="fraction"):
        universal(one, model=robust, holdout=1.5)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "empty", "notes.txt", "one"]


def test_fooling_rate_counts_only_changes(robust: trompe.Classifier) -> None:
    photos = list(load_digits().test_images[:10])
    before = clean_top1(robust, photos)
    none = fooling_rate(robust, photos, torch.zeros(3, 8, 8), before)
    assert none.rate == 0.0 and none.after == before


# -- the command line --------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_universal_then_apply(tmp_path: Path, digit_folder: Path) -> None:
    out = tmp_path / "uap"
    made = run_cli(
        "universal",
        str(digit_folder),
        "-m",
        "digits_robust",
        "--eps",
        "96",
        "--out",
        str(out),
        "--epochs",
        "10",
    )
    assert made.returncode == 0, made.stderr
    assert "held out" in made.stdout and "random noise" in made.stdout
    summary = json.loads((out / "result.json").read_text())
    assert summary["eps_255"] == 96 and summary["params"]["epochs"] == 10
    assert summary["fooling_rate"]["holdout"] > summary["fooling_rate"]["noise_holdout"]

    again = run_cli("universal", str(digit_folder), "-m", "digits_robust", "--out", str(out))
    one_line_error(again, 2, "exists already", "--force")

    changed = tmp_path / "changed.png"
    applied = run_cli(
        "apply",
        str(out / "perturbation.png"),
        str(digit_folder / "digit-001.png"),
        "--out",
        str(changed),
        "--json",
    )
    assert applied.returncode == 0, applied.stderr
    record = json.loads(applied.stdout)
    saved = load_image(changed)
    robust = load_model("digits_robust")
    assert record["after"]["index"] == int(robust.probs(saved).argmax())
    assert record["model"] == "digits_robust" and record["linf_255"] <= 96

    # Never over the input, --force or not; nothing new in the folder.
    before = sorted(p.name for p in digit_folder.iterdir())
    onto_input = run_cli(
        "apply",
        str(out / "perturbation.png"),
        str(digit_folder / "digit-001.png"),
        "--out",
        str(digit_folder / "digit-001.png"),
        "--force",
    )
    one_line_error(onto_input, 2, "never overwritten")
    assert sorted(p.name for p in digit_folder.iterdir()) == before


@pytest.mark.slow
def test_cli_bad_inputs_are_one_line_and_write_nothing(tmp_path: Path, digit_folder: Path) -> None:
    out = tmp_path / "never"
    folder = str(digit_folder)
    for args, words in (
        (["--eps", "200"], ["eps", "127"]),
        (["--eps", "0.2"], ["eps", "1 to 127"]),
        (["--holdout-fraction", "2"], ["fraction"]),
        (["--target", "toaster"], ["toaster"]),
    ):
        result = run_cli("universal", folder, "-m", "digits_robust", "--out", str(out), *args)
        one_line_error(result, 2, *words)
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(
        run_cli("universal", str(empty), "-m", "digits_robust", "--out", str(out)),
        2,
        "holds no photos",
    )
    photo = str(digit_folder / "digit-000.png")
    written = tmp_path / "never.png"
    one_line_error(
        run_cli("apply", photo, photo, "--out", str(written)), 2, "not a trompe perturbation"
    )
    assert not out.exists() and not written.exists()


@pytest.mark.slow
def test_cli_on_a_real_photo_model(tmp_path: Path) -> None:
    """efficientnet_lite0, the two bundled photos (one to learn on, one held out): the
    perturbation is 224 x 224 and `trompe apply` resizes it to a full-size photo."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee"):
        (photos / f"{name}.png").write_bytes(trompe.example_path(name).read_bytes())
    out = tmp_path / "uap"
    made = run_cli("universal", str(photos), "--epochs", "2", "--out", str(out), "--json")
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    assert summary["perturbation"]["size"] == [224, 224]
    assert summary["photos"] == {"train": 1, "holdout": 1}
    changed = tmp_path / "cat.png"
    applied = run_cli(
        "apply",
        str(out / "perturbation.pt"),
        str(photos / "chelsea.png"),
        "--out",
        str(changed),
        "--json",
    )
    assert applied.returncode == 0, applied.stderr
    saved = load_image(changed)
    assert saved.shape == load_image(photos / "chelsea.png").shape == (3, 300, 451)
    assert json.loads(applied.stdout)["linf_255"] <= 10
