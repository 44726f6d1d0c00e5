"""Surviving real transforms (issue 13, part 1): the spec grammar, the differentiable views
(EOT), the real Pillow grid, the survival check, ``trompe check`` and ``attack --survive``."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter

import trompe
from _helpers import one_line_error, run_cli
from trompe.attacks import PGD, Targeted, Untargeted
from trompe.attacks.gradient import GradientOptions
from trompe.errors import InvalidArgumentError
from trompe.evaluation.survival import check_survival
from trompe.images import load_image, quantize, to_pil
from trompe.models import Classifier, load_model
from trompe.report import save_result
from trompe.transforms import parse_transforms


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``trompe ARGS`` run by :func:`trompe.cli.main` in this process (no start-up cost), as
    :func:`run_cli` gives it: the exit code, stdout and stderr."""
    from trompe.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


ALL = "jpeg:50-95,resize:0.5-1.0,crop:0.9,blur,light,rotate,perspective,noise"


@pytest.fixture(scope="module")
def robust() -> Classifier:
    return load_model("digits_robust")


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A 96 x 120 crop of the bundled cat, on the 8-bit grid."""
    return quantize(load_image(trompe.example_path("chelsea"))[:, 100:196, 100:220])


# -- the spec grammar ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("jpeg", "jpeg:50-95"),
        ("jpeg:75", "jpeg:75"),
        (" JPEG:50-95 , resize:0.5 ", "jpeg:50-95,resize:0.5"),
        ("crop", "crop:0.9"),
        ("blur", "blur:0-1.5"),
        ("rotate:10", "rotate:0-10"),  # a strength: one value is the largest
        ("light:0.1-0.3,noise:2", "light:0.1-0.3,noise:0-2"),
        (ALL, "jpeg:50-95,resize:0.5-1,crop:0.9,blur:0-1.5,light:0-0.2,rotate:0-5,"
         "perspective:0-0.1,noise:0-4"),
    ],
)  # fmt: skip
def test_spec_canonical_text(spec: str, canonical: str) -> None:
    chain = parse_transforms(spec)
    assert str(chain) == canonical
    assert parse_transforms(str(chain)) == chain  # the text reads back as the same chain


def test_spec_list_and_chain() -> None:
    chain = parse_transforms(["jpeg:75", "blur:1,crop:0.8"])
    assert chain.names == ["jpeg", "blur", "crop"] and len(chain) == 3
    assert parse_transforms(chain) is chain
    assert GradientOptions(transforms=["jpeg:75"]).transforms == parse_transforms("jpeg:75")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("jpg:75", ["unknown transform 'jpg'", "did you mean jpeg", "known: jpeg, resize"]),
        ("scale:0.5", ["unknown transform 'scale'", "known:"]),
        ("jpeg:95-50", ["out of order", "jpeg:50-95"]),
        ("jpeg:0-50", ["1 to 100"]),
        ("jpeg:101", ["1 to 100"]),
        ("jpeg:50.5", ["whole number"]),
        ("resize:0", ["(0, 1]"]),
        ("resize:0.5-1.5", ["(0, 1]"]),
        ("crop:1.2", ["(0, 1]"]),
        ("blur:x", ["a number or a range"]),
        ("rotate:-5", ["a number or a range"]),
        ("jpeg:75,", ["an empty transform"]),
        ("", ["no transform"]),
    ],
)
def test_spec_errors_are_one_line(spec: str, words: list[str]) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_transforms(spec)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_spec_of_wrong_type() -> None:
    with pytest.raises(InvalidArgumentError, match="spec text"):
        parse_transforms(75)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="texts such as"):
        parse_transforms(["jpeg", 75])


# -- the differentiable views ----------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL.split(","))
def test_draw_is_differentiable(spec: str, photo: torch.Tensor) -> None:
    chain = parse_transforms(spec)
    x = photo[None].repeat(2, 1, 1, 1).requires_grad_(True)
    view = chain.draw(x, torch.Generator().manual_seed(0))
    assert view.dim() == 4 and view.shape[:2] == (2, 3)
    assert float(view.detach().min()) >= 0 and float(view.detach().max()) <= 1
    (view * torch.rand_like(view)).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    again = chain.draw(x.detach(), torch.Generator().manual_seed(0))
    assert torch.equal(view.detach(), again)  # the generator decides every draw


def test_draw_sizes_and_per_image_draws(photo: torch.Tensor) -> None:
    x = photo[None].repeat(3, 1, 1, 1)
    generator = torch.Generator().manual_seed(1)
    small = parse_transforms("resize:0.5").draw(x, generator)
    assert small.shape[-2:] == (48, 60)
    crops = parse_transforms("crop:0.5").draw(x, generator)
    assert crops.shape[-2:] == (48, 60)
    assert not torch.equal(crops[0], crops[1]) or not torch.equal(crops[1], crops[2])
    jpeg = parse_transforms("jpeg:10-95").draw(x, generator)
    assert not torch.equal(jpeg[0], jpeg[1])  # a quality per image


def test_views_are_the_hardest_settings(photo: torch.Tensor) -> None:
    chain = parse_transforms("jpeg:50-95,resize:0.5-1,crop:0.8")
    views = chain.views()
    assert len(views) == 3
    x = photo[None]
    assert views[1](x).shape[-2:] == (48, 60)
    assert views[2](x).shape[-2:] == (77, 96)
    low = parse_transforms("jpeg:50").draw(x, torch.Generator())
    assert torch.allclose(views[0](x), low)
    assert parse_transforms("resize:1,crop:1").views() == []


def test_stand_ins_match_pillow(photo: torch.Tensor) -> None:
    """The differentiable view at a grid point is what Pillow makes of the 8-bit image, within
    about a level on average (the EOT gradient models the real transforms)."""
    x = photo[None]
    picture = to_pil(photo)
    darker = ImageEnhance.Brightness(picture).enhance(0.7)
    darker_flatter = ImageEnhance.Contrast(darker).enhance(0.7)  # the light view: both down
    settings = {
        "jpeg:50": "quality 50",
        "blur:1.5": "sigma 1.5",
        "rotate:8": "8 degrees",
        "perspective:0.2": "0.2 top narrower",
    }
    for spec in ("jpeg:50", "blur:1.5", "light:0.3", "rotate:8", "perspective:0.2"):
        chain = parse_transforms(spec)
        if spec == "light:0.3":
            real = load_image(darker_flatter)[None]
        else:
            (point,) = [p for p in chain.grid() if p.setting == settings[spec]]
            real = load_image(point.apply(picture))[None]
        (view,) = chain.views()
        difference = float((view(x) - real).abs().mean()) * 255
        change = float((x - real).abs().mean()) * 255
        assert difference < 2.0 and difference < change / 2, (spec, difference, change)


# -- the real grid -----------------------------------------------------------------------------


def test_jpeg_grid_qualities() -> None:
    settings = [p.setting for p in parse_transforms("jpeg:50-95").grid()]
    assert settings == [f"quality {q}" for q in (95, 90, 80, 75, 70, 60, 50)]
    settings = [p.setting for p in parse_transforms("jpeg:72-88").grid()]
    assert settings == [f"quality {q}" for q in (88, 80, 75, 72)]
    assert [p.setting for p in parse_transforms("jpeg:75").grid()] == ["quality 75"]


def test_grid_is_real_pillow(photo: torch.Tensor) -> None:
    picture = to_pil(photo)
    grid = {(p.name, p.setting): p for p in parse_transforms(ALL).grid()}
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=50)
    by_hand = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    assert grid["jpeg", "quality 50"].apply(picture).tobytes() == by_hand.tobytes()
    assert grid["resize", "scale 0.5"].apply(picture).size == (60, 48)
    corner = grid["crop", "0.9 bottom right"].apply(picture)
    assert corner.tobytes() == picture.crop((12, 10, 120, 96)).tobytes()
    blurred = picture.filter(ImageFilter.GaussianBlur(1.5))
    assert grid["blur", "sigma 1.5"].apply(picture).tobytes() == blurred.tobytes()
    names = {name for name, _ in grid}
    assert names == set(parse_transforms(ALL).names)
    for point in grid.values():
        out = point.apply(picture)
        assert out.mode == "RGB" and out.tobytes() != picture.tobytes(), point.setting


# -- the survival check ------------------------------------------------------------------------


def _digits(robust: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
    from trompe.models.digits import load_digits

    data = load_digits()
    images, labels = data.test_images[:24], data.test_labels[:24]
    with torch.no_grad():
        right = robust(images).argmax(dim=1) == labels
    return images[right][:12], labels[right][:12]


def test_check_survival_rows_are_real(robust: Classifier) -> None:
    images, labels = _digits(robust)
    survival = check_survival(robust, images[:3], Targeted(labels[:3]), "jpeg:60-90,resize:0.5")
    assert len(survival) == 3
    record = survival.to_json(1)
    assert record["transforms"] == "jpeg:60-90,resize:0.5"
    assert record["goal"] == {
        "targeted": True,
        "class": int(labels[1]),
        "class_name": str(int(labels[1])),
    }
    rows = record["rows"]
    assert [(r["name"], r["setting"]) for r in rows] == [
        ("png", "as saved"),
        ("jpeg", "quality 90"),
        ("jpeg", "quality 80"),
        ("jpeg", "quality 75"),
        ("jpeg", "quality 70"),
        ("jpeg", "quality 60"),
        ("resize", "scale 0.5"),
    ]
    assert rows[0]["met"]  # a correctly classified digit keeps its class as saved
    # Every row is the model on the real file: redo one by hand.
    buffer = io.BytesIO()
    to_pil(images[1]).save(buffer, format="JPEG", quality=70)
    decoded = load_image(Image.open(io.BytesIO(buffer.getvalue())))
    probs = robust.probs(decoded[None])[0]
    assert rows[4]["goal_prob"] == pytest.approx(float(probs[int(labels[1])]), abs=1e-6)
    assert rows[4]["met"] == (int(probs.argmax()) == int(labels[1]))
    assert rows[4]["top1"]["index"] == int(probs.argmax())
    assert record["survived"] == all(r["met"] for r in rows)
    assert record["rate"] == pytest.approx(sum(r["met"] for r in rows) / len(rows))
    json.dumps(record, allow_nan=False)
    # The untargeted check of the same digits: the true class is top-1, nothing is met.
    away = check_survival(robust, images[:1], Untargeted(labels[:1]), "jpeg:90")
    assert not away.survived(0) and away.rate(0) == 0
    with pytest.raises(InvalidArgumentError, match="index"):
        away.to_json(1)
    with pytest.raises(InvalidArgumentError, match="goal is for"):
        check_survival(robust, images[:2], Targeted(labels[:1]), "jpeg")


@pytest.mark.slow
def test_eot_survives_jpeg_better_than_plain_pgd(robust: Classifier) -> None:
    """EOT over the differentiable JPEG: more digits stay adversarial after Pillow's JPEG 75
    than with plain PGD, at the same budget and steps."""
    images, labels = _digits(robust)
    goal = Untargeted(labels)
    survived = []
    for gradient in (None, GradientOptions(transforms="jpeg:75", samples=4)):
        extra = {} if gradient is None else {"gradient": gradient}
        result = PGD(eps=48 / 255, steps=20, seed=0, **extra)(robust, images, goal)
        check = check_survival(robust, result.adversarial, goal, "jpeg:75")
        survived.append(sum(check.to_json(i)["rows"][1]["met"] for i in range(len(check))))
    plain, eot = survived
    assert eot > plain, survived


# -- trompe.check and trompe check -------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory: pytest.TempPathFactory, robust: Classifier) -> tuple[Path, int]:
    images, labels = _digits(robust)
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    to_pil(images[0]).save(path)
    return path, int(labels[0])


def test_api_check(digit_png: tuple[Path, int], robust: Classifier) -> None:
    path, label = digit_png
    survival = trompe.check(path, label, model=robust, survive="jpeg:90-95")
    assert survival.to_json()["rows"][0]["met"] and len(survival.to_json()["rows"]) == 3
    untargeted = trompe.check(path, model=robust, survive="jpeg:95", original=path)
    assert not untargeted.survived()  # the image is the original: its class stays
    with pytest.raises(InvalidArgumentError, match="target class that should survive"):
        trompe.check(path, model=robust)
    with pytest.raises(InvalidArgumentError, match="not both"):
        trompe.check(path, label, model=robust, original=path)
    with pytest.raises(InvalidArgumentError, match="unknown transform"):
        trompe.check(path, label, model=robust, survive="jepg")


def test_cli_check(digit_png: tuple[Path, int], capsys: pytest.CaptureFixture[str]) -> None:
    path, label = digit_png
    done = in_process(
        capsys,
        "check",
        str(path),
        "-m",
        "digits_robust",
        "-t",
        str(label),
        "--survive",
        "jpeg:90-95,blur:0.3",
    )
    assert done.returncode in (0, 1), done.stderr
    assert "png" in done.stdout and "quality 95" in done.stdout and "sigma 0.3" in done.stdout
    as_json = in_process(
        capsys,
        "check",
        str(path),
        "-m",
        "digits_robust",
        "-t",
        str(label),
        "--survive",
        "jpeg:90-95,blur:0.3",
        "--json",
    )
    record = json.loads(as_json.stdout)
    assert as_json.returncode == (0 if record["survived"] else 1) == done.returncode
    assert record["image"] == str(path) and record["model"] == "digits_robust"
    away = in_process(
        capsys,
        "check",
        str(path),
        "-m",
        "digits_robust",
        "--original",
        str(path),
        "--survive",
        "jpeg:95",
    )
    assert away.returncode == 1 and "✗" in away.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--survive", "jpg:75", "-t", "3"], ["unknown transform 'jpg'", "did you mean jpeg"]),
        (["--survive", "jpeg:95-50", "-t", "3"], ["out of order"]),
        ([], ["give --target"]),
        (["-t", "3", "--original", "x.png"], ["not both"]),
        (["-t", "eleven"], []),
    ],
)
def test_cli_check_bad_input(
    digit_png: tuple[Path, int],
    args: list[str],
    words: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = digit_png
    done = in_process(capsys, "check", str(path), "-m", "digits_robust", *args)
    one_line_error(done, 2, *words)


def test_cli_check_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = in_process(capsys, "check", str(tmp_path / "none.png"), "-m", "digits_robust", "-t", "3")
    assert done.returncode in (1, 2) and "none.png" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- trompe attack --survive ---------------------------------------------------------------------


def test_attack_survive_writes_survival(
    tmp_path: Path, robust: Classifier, digit_png: tuple[Path, int]
) -> None:
    path, label = digit_png
    result = trompe.attack(
        path, (label + 1) % 10, model=robust, eps=64 / 255, steps=5, survive="jpeg:90", samples=2
    )
    assert result.survival is not None
    record = result.survival.to_json()
    assert [r["setting"] for r in record["rows"]] == ["as saved", "quality 90"]
    # The check is of the saved PNG: its first row is what the saved file's re-check says.
    paths = save_result(result, tmp_path / "out", model=robust)
    summary = json.loads(paths["json"].read_text())
    assert summary["survival"] == record
    assert summary["params"]["survive"] == "jpeg:90"
    with Image.open(paths["report"]) as report:
        assert report.height > 1000  # the survival panel under the report


def test_attack_bad_spec_writes_nothing(
    tmp_path: Path, digit_png: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = digit_png
    out = tmp_path / "out"
    done = in_process(
        capsys,
        "attack",
        str(path),
        "-m",
        "digits_robust",
        "-t",
        "3",
        "--survive",
        "jpeg:0-50",
        "--out",
        str(out),
    )
    one_line_error(done, 2, "jpeg:0-50", "1 to 100")
    assert not out.exists()
    done = in_process(
        capsys,
        "attack",
        str(path),
        "-m",
        "digits_robust",
        "-t",
        "3",
        "--attack",
        "cw",
        "--survive",
        "jpeg",
        "--out",
        str(out),
    )
    one_line_error(done, 2, "no gradient hook")
    assert not out.exists()


@pytest.mark.slow
def test_cli_attack_survive_end_to_end(tmp_path: Path) -> None:
    """A real photo model: the table, result.json's survival and the exit code agree."""
    out = tmp_path / "out"
    done = run_cli(
        "attack", "-m", "efficientnet_lite0", "-t", "pelican", "--eps", "16", "--steps", "8",
        "--resolution", "model", "--survive", "jpeg:75", "--samples", "2", "--out", str(out),
        "--no-progress",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    summary = json.loads((out / "result.json").read_text())
    survival = summary["survival"]
    assert [r["setting"] for r in survival["rows"]] == ["as saved", "quality 75"]
    expected = 0 if survival["survived"] and summary["verified_on_png"]["success"] else 1
    assert done.returncode == expected
    assert "survival of the saved PNG" in done.stdout and "quality 75" in done.stdout
    check = run_cli(
        "check", str(out / "adversarial.png"), "-m", "efficientnet_lite0", "-t", "pelican",
        "--survive", "jpeg:75", "--json",
    )  # fmt: skip
    assert json.loads(check.stdout)["rows"] == survival["rows"]


def test_transfer_table_from_json() -> None:
    """attack --transfer-to shows the held-out models' record (Transfer.to_json) as a table."""
    from rich.console import Console

    from trompe.cli._tables import transfer_table

    record = {
        "models": [
            {
                "model": "efficientnet_lite2",
                "met": False,
                "goal_prob": 0.25,
                "top1": {"index": 282, "label": "tiger cat", "prob": 0.5},
                "clean_top1": {"index": 282, "label": "tiger cat"},
            }
        ],
        "rate": 0.0,
    }
    console = Console(width=160, record=True)
    console.print(transfer_table(record, "held-out models"))
    text = console.export_text()
    assert "efficientnet_lite2" in text and "✗" in text and "25.0 %" in text
    assert "tiger cat 50.0 %" in text and "0 % of the held-out models" in text


def test_cli_check_out(
    tmp_path: Path, digit_png: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    path, label = digit_png
    out = tmp_path / "check"
    args = ["check", str(path), "-m", "digits_robust", "-t", str(label), "--survive", "jpeg:95"]
    done = in_process(capsys, *args, "--out", str(out))
    assert done.returncode in (0, 1), done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["check.json", "survival.png"]
    record = json.loads((out / "check.json").read_text())
    assert [r["setting"] for r in record["rows"]] == ["as saved", "quality 95"]
    with Image.open(out / "survival.png") as figure:
        assert figure.width == 1500
    before = (out / "check.json").stat().st_mtime_ns
    again = in_process(capsys, *args, "--out", str(out))
    one_line_error(again, 2, "exists already", "--force")
    assert (out / "check.json").stat().st_mtime_ns == before
    assert in_process(capsys, *args, "--out", str(out), "--force").returncode == done.returncode
