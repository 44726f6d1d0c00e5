"""Tests of trompe.report: a real AttackResult of the bundled cat and the real default model.

The result is built without an attack engine: the cat plus a fixed random +-3/255 perturbation,
quantized, with the probabilities, norms and success that the real classifier gives.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from pathlib import Path

import matplotlib
import pytest
import torch
from PIL import Image

import trompe
from trompe.attacks.goal import Targeted, Untargeted
from trompe.attacks.result import AttackResult, measure
from trompe.errors import ImageError, InvalidArgumentError, OutputExistsError
from trompe.images import example_path, load_image, quantize, to_pil, to_uint8
from trompe.models.digits import DigitsData
from trompe.report import (
    perturbation_image,
    render_report,
    report_png_bytes,
    result_summary,
    save_result,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPS = 10 / 255
SINGLE_FILES = {"adversarial.png", "perturbation.png", "report.png", "result.json"}


@pytest.fixture(scope="module")
def clf(imagenet_clf: trompe.Classifier) -> trompe.Classifier:
    return imagenet_clf


def make_result(clf: trompe.Classifier) -> AttackResult:
    """The cat, plus +-3/255 noise from a fixed seed, as an attack would return it."""
    original = load_image(example_path("chelsea"))[None]
    generator = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, original.shape, generator=generator).float() * 2 - 1
    adversarial = quantize((original + signs * 3 / 255).clamp(0, 1))
    goal = Targeted(951, 0.99)
    with torch.no_grad():
        logits = clf(adversarial)
    return AttackResult(
        original=original,
        adversarial=adversarial,
        goal=goal,
        success=goal.met(logits),
        probs_before=clf.probs(original),
        probs_after=logits.softmax(dim=-1),
        norms=measure(original, adversarial),
        steps=torch.tensor([40]),
        forwards=torch.tensor([41]),
        queries=torch.tensor([39]),
        gradients=torch.tensor([40]),
        seconds=1.25,
        attack="pgd",
        params={"eps": EPS, "norm": "linf", "steps": 40, "step_size": 1 / 255, "seed": 0},
        model=clf.name,
        labels=clf.labels,
    )


@pytest.fixture(scope="module")
def result(clf: trompe.Classifier) -> AttackResult:
    return make_result(clf)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry of a directory, hidden ones included, with its bytes and mtime."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in directory.iterdir()}


# -- perturbation_image ------------------------------------------------------------------------


def test_perturbation_image_of_no_change_is_mid_grey() -> None:
    image = torch.rand(3, 5, 7)
    assert torch.equal(perturbation_image(image, image), torch.full((3, 5, 7), 0.5))


def test_perturbation_image_amplifies_one_level_ten_times() -> None:
    original = torch.full((2, 3, 4, 4), 100 / 255)
    out = perturbation_image(original, original + 1 / 255)
    assert out.shape == (2, 3, 4, 4)
    assert torch.allclose(out, torch.full_like(out, 0.5 + 10 / 255), atol=1e-6)
    down = perturbation_image(original, original - 2 / 255, amplify=5.0)
    assert torch.allclose(down, torch.full_like(down, 0.5 - 10 / 255), atol=1e-6)


def test_perturbation_image_clamps_to_unit_range() -> None:
    original = torch.zeros(3, 2, 2)
    assert torch.equal(perturbation_image(original, original + 0.2), torch.ones(3, 2, 2))
    assert torch.equal(perturbation_image(original + 0.2, original), torch.zeros(3, 2, 2))


@pytest.mark.parametrize(
    ("original", "adversarial", "amplify"),
    [
        (torch.zeros(3, 4, 4), torch.zeros(3, 4, 5), 10.0),
        (torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), 10.0),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), torch.zeros(3, 4, 4, dtype=torch.uint8), 10.0),
        (torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), 0.0),
        (torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), math.inf),
    ],
)
def test_perturbation_image_refuses_bad_input(
    original: torch.Tensor, adversarial: torch.Tensor, amplify: float
) -> None:
    with pytest.raises(InvalidArgumentError):
        perturbation_image(original, adversarial, amplify)


# -- result_summary ----------------------------------------------------------------------------


def test_summary_is_strict_json_with_units(result: AttackResult) -> None:
    summary = result_summary(result, extra={"source": Path("cat.png"), "seed": 0})
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary
    assert set(summary["versions"]) >= {"trompe", "torch", "numpy", "pillow", "python"}
    assert summary["versions"]["trompe"] == trompe.__version__
    # Named from the installed metadata, so that the record need not import matplotlib.
    assert summary["versions"]["matplotlib"] == matplotlib.__version__
    assert summary["model"] == "efficientnet_lite0"
    assert summary["attack"] == "pgd"
    assert summary["params"]["eps"] == pytest.approx(EPS)
    assert summary["params"]["eps_255"] == 10.0
    assert summary["params"]["step_size_255"] == 1.0
    assert summary["params"]["norm"] == "linf"
    assert summary["goal"] == {
        "targeted": True,
        "class": 951,
        "class_name": "lemon",
        "confidence": 0.99,
    }
    assert summary["success"] is bool(result.success[0])
    assert summary["size"] == [451, 300]
    assert summary["norms"]["linf_255"] == 3.0
    assert summary["norms"]["l2_255"] == pytest.approx(float(result.norms.l2[0]))
    assert summary["norms"]["psnr_db"] == pytest.approx(float(result.norms.psnr[0]))
    assert (summary["steps"], summary["forwards"], summary["gradients"]) == (40, 41, 40)
    assert summary["seconds"] == 1.25
    assert summary["source"] == "cat.png"
    assert summary["seed"] == 0
    for key, after in (("before", False), ("after", True)):
        top = summary[key]["top5"]
        assert [(row["index"], row["label"]) for row in top] == [
            (index, label) for index, label, _ in result.top(5, after=after)[0]
        ]
        assert top[0]["prob"] >= top[-1]["prob"]
        assert summary[key]["goal_prob"] == pytest.approx(result.class_prob(951, after=after))
    assert summary["before"]["top5"][0]["label"] == "tiger cat"


def test_summary_of_no_change_has_null_psnr(result: AttackResult) -> None:
    unchanged = dataclasses.replace(result, adversarial=result.original)
    summary = result_summary(unchanged)
    assert summary["norms"] == {
        "linf_255": 0.0,
        "l2_255": 0.0,
        "psnr_db": None,
        "l1_255": 0.0,
        "l0_pixels": 0,
    }
    json.dumps(summary, allow_nan=False)


def test_summary_refuses_extra_that_would_replace_measured_fields(result: AttackResult) -> None:
    for key in result_summary(result):
        with pytest.raises(InvalidArgumentError, match=key):
            result_summary(result, extra={key: 0})


def test_summary_index_out_of_range(result: AttackResult) -> None:
    with pytest.raises(InvalidArgumentError, match="out of range"):
        result_summary(result, 1)


# -- the report picture ------------------------------------------------------------------------


def test_render_report_is_a_wide_figure(result: AttackResult) -> None:
    figure = render_report(result)
    width, height = figure.get_size_inches() * figure.dpi
    assert width == pytest.approx(1500)
    assert 500 < height < 1200
    texts = " ".join(
        text.get_text() for text in figure.findobj(match=lambda a: hasattr(a, "get_text"))
    )
    assert "lemon (951)" in texts
    assert "L-inf eps 10/255" in texts
    with pytest.raises(InvalidArgumentError):
        render_report(result, 3)
    with pytest.raises(InvalidArgumentError):
        render_report(result, k=0)


def test_repr_png_returns_png_bytes(result: AttackResult) -> None:
    data = result._repr_png_()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.size[0] == 1500
    with pytest.raises(InvalidArgumentError, match="out of range"):
        report_png_bytes(result, 1)


# -- save_result -------------------------------------------------------------------------------


def test_save_result_writes_the_four_files(
    result: AttackResult, clf: trompe.Classifier, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "out"
    paths = save_result(result, out, model=clf, extra={"source": "chelsea.png"})
    assert paths == {
        "adversarial": out / "adversarial.png",
        "perturbation": out / "perturbation.png",
        "report": out / "report.png",
        "json": out / "result.json",
    }
    assert {p.name for p in out.iterdir()} == SINGLE_FILES  # no temporary file left

    with Image.open(paths["adversarial"]) as picture:
        assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (451, 300))
    with Image.open(paths["perturbation"]) as picture:
        assert (picture.format, picture.size) == ("PNG", (451, 300))
    with Image.open(paths["report"]) as picture:
        picture.verify()
    with Image.open(paths["report"]) as picture:
        assert picture.format == "PNG"
        assert picture.size[0] > 1000

    # The PNG holds exactly the adversarial image; the perturbation PNG is the x10 picture.
    read_back = load_image(paths["adversarial"])
    assert torch.equal(read_back, quantize(result.adversarial[0]))
    # A change of d levels is 128 + 10 d in perturbation.png: grey 128, +-3 levels 158 / 98.
    change = to_uint8(read_back).int() - to_uint8(result.original[0]).int()
    saved = to_uint8(load_image(paths["perturbation"])).int()
    assert torch.equal(saved, 128 + 10 * change)
    assert set(saved.unique().tolist()) <= {98, 108, 118, 128, 138, 148, 158}
    exact = to_uint8(perturbation_image(result.original[0], read_back)).int()
    assert (exact - saved).abs().max() <= 1  # the float picture, up to rounding at ties

    summary = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert summary["norms"]["linf_255"] == 3.0
    assert summary["norms"] == result_summary(result)["norms"]
    assert summary["params"]["eps_255"] == 10.0
    assert summary["source"] == "chelsea.png"
    verified = summary["verified_on_png"]
    top1 = int(result.probs_after[0].argmax())
    assert verified["top1"]["index"] == top1
    assert verified["top1"]["label"] == clf.labels[top1]
    assert verified["goal_prob"] == pytest.approx(result.class_prob(951), rel=1e-4, abs=1e-7)
    assert verified["success"] is bool(result.success[0])
    assert verified["agrees_with_result"] is True


def test_existing_output_is_refused_then_overwritten_with_force(
    result: AttackResult, tmp_path: Path
) -> None:
    paths = save_result(result, tmp_path)
    assert "verified_on_png" not in json.loads(paths["json"].read_text(encoding="utf-8"))
    before = snapshot(tmp_path)
    with pytest.raises(OutputExistsError) as raised:
        save_result(result, tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert "adversarial.png" in message
    assert "force" in message
    assert snapshot(tmp_path) == before  # nothing changed, no temporary file left

    paths["report"].write_bytes(b"not a picture")
    (tmp_path / "keep.txt").write_text("mine")
    again = result.save(tmp_path, force=True)  # AttackResult.save calls save_result
    assert again == paths
    assert paths["report"].read_bytes().startswith(PNG_SIGNATURE)
    assert {p.name for p in tmp_path.iterdir()} == SINGLE_FILES | {"keep.txt"}
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_one_existing_file_blocks_everything(result: AttackResult, tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text("{}")
    with pytest.raises(OutputExistsError, match=r"result\.json"):
        save_result(result, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
    assert (tmp_path / "result.json").read_text() == "{}"


def test_out_dir_that_is_a_file(result: AttackResult, tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file")
    with pytest.raises(ImageError, match="is a file") as raised:
        save_result(result, blocker)
    assert "\n" not in str(raised.value)
    with pytest.raises(ImageError, match="is a file"):
        save_result(result, blocker / "below")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert blocker.read_text() == "a file"


def test_bad_extra_or_model_is_refused_before_writing(result: AttackResult, tmp_path: Path) -> None:
    out = tmp_path / "fresh"
    with pytest.raises(InvalidArgumentError, match="success"):
        save_result(result, out, extra={"success": True})
    ten_classes = trompe.Classifier(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=8,
    )
    with pytest.raises(InvalidArgumentError, match="10 classes"):
        save_result(result, out, model=ten_classes)
    assert not out.exists()


def test_a_failure_midway_removes_what_was_written(tmp_path: Path) -> None:
    # Inside save_result, an error after some files were staged or moved into place.
    from trompe._files import all_or_nothing, prepare_directory, stage

    out = tmp_path / "a" / "b"
    created = prepare_directory(out)
    assert created == [out, out.parent]
    with pytest.raises(RuntimeError), all_or_nothing(created) as (staged, placed):
        staged.append(stage(out, out / "one.png", b"1"))
        staged.append(stage(out, out / "two.png", b"2"))
        os.link(staged[0], out / "one.png")
        placed.append(out / "one.png")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_untrustworthy_results_are_flagged(
    result: AttackResult, clf: trompe.Classifier, tmp_path: Path
) -> None:
    # Off the 8-bit grid by less than half a level (the PNG rounds it back), and a success flag
    # that the model contradicts on the saved PNG.
    doubtful = dataclasses.replace(
        result, adversarial=result.adversarial + 0.1 / 255, success=~result.success
    )
    with pytest.warns(UserWarning) as caught:
        paths = save_result(doubtful, tmp_path, model=clf)
    messages = " ".join(str(w.message) for w in caught)
    assert "8-bit grid" in messages
    assert "saved PNG" in messages
    assert torch.equal(load_image(paths["adversarial"]), quantize(doubtful.adversarial[0]))
    summary = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert summary["success"] is not bool(result.success[0])
    assert summary["verified_on_png"]["success"] is bool(result.success[0])
    assert summary["verified_on_png"]["agrees_with_result"] is False


def batch_of_two(result: AttackResult) -> AttackResult:
    """The same attacked cat twice, with an untargeted goal per copy (no new model call)."""
    goal = Untargeted([282, 285])
    probs_after = result.probs_after.repeat(2, 1)
    return dataclasses.replace(
        result,
        original=result.original.repeat(2, 1, 1, 1),
        adversarial=result.adversarial.repeat(2, 1, 1, 1),
        goal=goal,
        success=goal.met(probs_after.log()),
        probs_before=result.probs_before.repeat(2, 1),
        probs_after=probs_after,
        steps=torch.tensor([40, 12]),
        forwards=torch.tensor([41, 13]),
        gradients=torch.tensor([40, 12]),
        queries=torch.tensor([39, 11]),
    )


def test_batch_of_two(result: AttackResult, tmp_path: Path) -> None:
    batch = batch_of_two(result)
    paths = save_result(batch, tmp_path)
    names = {
        f"{kind}-{i}.png" for kind in ("adversarial", "perturbation", "report") for i in (0, 1)
    }
    assert {p.name for p in tmp_path.iterdir()} == names | {"result.json"}
    assert set(paths) == {
        f"{kind}-{i}" for kind in ("adversarial", "perturbation", "report") for i in (0, 1)
    } | {"json"}
    for i in (0, 1):
        assert torch.equal(load_image(paths[f"adversarial-{i}"]), batch.adversarial[i])
    summaries = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert isinstance(summaries, list)
    assert [s["index"] for s in summaries] == [0, 1]
    assert [s["goal"]["class"] for s in summaries] == [282, 285]
    assert all(s["goal"]["targeted"] is False for s in summaries)
    assert all(s["batch_size"] == 2 for s in summaries)
    assert [s["steps"] for s in summaries] == [40, 12]
    assert [s["success"] for s in summaries] == batch.success.tolist()


# -- an input is never an output, force or not ---------------------------------------------------


def _digit_file(digits: DigitsData, folder: Path, name: str) -> Path:
    image = digits.test_images[0]
    path = folder / name
    to_pil(image).save(path)
    return path


@pytest.mark.parametrize("sweep", [None, [4 / 255, 8 / 255]], ids=["attack", "sweep"])
def test_save_never_overwrites_the_image_the_result_was_made_from(
    digits: DigitsData, digits_clf: trompe.Classifier, tmp_path: Path, sweep: list[float] | None
) -> None:
    """The library knew no input path, so result.save(dir, force=True) could overwrite the
    user's photo when it was named like an output; now trompe.attack records it."""
    photo = _digit_file(digits, tmp_path, "adversarial.png")
    before = photo.read_bytes()
    budget = {"sweep": sweep} if sweep else {"eps": 8 / 255}
    outcome = trompe.attack(photo, model=digits_clf, attack="fgsm", **budget)
    result = outcome.results[-1] if isinstance(outcome, trompe.SweepResult) else outcome
    assert result.sources == (photo,)
    listing = snapshot(tmp_path)
    with pytest.raises(InvalidArgumentError) as raised:
        result.save(tmp_path, force=True)
    message = str(raised.value)
    assert "\n" not in message and "adversarial.png" in message and "out_dir" in message
    assert photo.read_bytes() == before
    assert snapshot(tmp_path) == listing  # refused before anything was written
    # another spelling of the same folder, and a link named like the output, are the same file
    with pytest.raises(InvalidArgumentError):
        result.save(tmp_path / "." / ".." / tmp_path.name, force=True)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "adversarial.png").symlink_to(photo)
    with pytest.raises(InvalidArgumentError):
        result.save(linked, force=True)
    assert photo.read_bytes() == before
    # anywhere else, the result saves as before
    paths = result.save(tmp_path / "out")
    assert paths["adversarial"].exists() and photo.read_bytes() == before


def test_a_result_of_a_tensor_has_no_source(
    digits: DigitsData, digits_clf: trompe.Classifier, tmp_path: Path
) -> None:
    photo = _digit_file(digits, tmp_path, "adversarial.png")
    result = trompe.attack(load_image(photo), model=digits_clf, attack="fgsm", eps=8 / 255)
    assert isinstance(result, AttackResult) and result.sources == ()
