"""The model options of the command line (--model, --arch, --labels, the preprocessing overrides),
`trompe models` with the other sources and --info, and the model's description in result.json.

Run as a user runs trompe: in a subprocess, reading stdout, stderr and the exit code. Only the
built-in models are used, except in the state-dict tests, which need the file source's loader.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import trompe
from _helpers import one_line_error, run_cli
from trompe.errors import InvalidArgumentError, UnknownModelError
from trompe.models import Classifier, get_spec
from trompe.report import result_summary

CATS = {281, 282, 285}
SOURCES = {"torchvision", "timm", "hf", "keras", "onnx", "file"}
HAS_CHECKPOINT = importlib.util.find_spec("trompe.models.sources._checkpoint") is not None
needs_checkpoint = pytest.mark.skipif(
    not HAS_CHECKPOINT, reason="the file source's loader (sources/_checkpoint.py) is not here"
)


run = run_cli


@pytest.fixture(scope="module")
def names_txt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A label file that renames the 1000 ImageNet classes cls0 ... cls999."""
    path = tmp_path_factory.mktemp("labels") / "names.txt"
    path.write_text("\n".join(f"cls{i}" for i in range(1000)) + "\n", encoding="utf-8")
    return path


# -- trompe models ------------------------------------------------------------------------------


def test_models_lists_the_built_ins_and_the_other_sources() -> None:
    listing = run("models", "--json")
    assert listing.returncode == 0, listing.stderr
    data = json.loads(listing.stdout)
    assert {m["name"] for m in data["models"]} >= {"efficientnet_lite0", "efficientnet_lite2"}
    sources = {s["source"]: s for s in data["sources"]}
    assert set(sources) == SOURCES
    assert sources["timm"]["install"] == "pip install 'trompe[timm]'"
    assert sources["hf"]["example"].startswith("hf:")
    assert all(isinstance(s["installed"], bool) for s in sources.values())
    table = run("models")
    assert table.returncode == 0, table.stderr
    assert "efficientnet_lite0" in table.stdout and "other sources" in table.stdout
    for prefix in SOURCES:
        assert f"{prefix}:" in table.stdout


def test_models_listing_imports_no_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trompe", "models", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    modules = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines}
    assert "trompe" in modules and not modules & {"torch", "numpy"}, sorted(modules)


def test_models_info_shows_the_builtin_preprocessing() -> None:
    result = run("models", "--info", "efficientnet-lite0", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["id"] == "efficientnet_lite0" and info["source"] == "builtin"
    assert info["num_classes"] == 1000 and len(info["labels"]) == 1000
    assert info["labels"][951] == "lemon"
    assert info["access"] == "gradients" and info["arch"] is None
    assert info["num_params"] == get_spec("efficientnet_lite0").num_params
    pre = info["preprocessing"]
    assert pre["input_size"] == [224, 224]
    assert pre["crop_fraction"] == pytest.approx(224 / 256)
    assert pre["interpolation"] == "bicubic"
    assert pre["mean"] == pytest.approx([127 / 255] * 3, abs=1e-6)
    assert pre["std"] == pytest.approx([128 / 255] * 3, abs=1e-6)
    assert info["overrides"] == {}
    table = run("models", "--info", "efficientnet_lite0")
    assert table.returncode == 0, table.stderr
    for word in ("builtin", "1000", "bicubic", "224 x 224", "0.875", "4,652,008", "gradients"):
        assert word in table.stdout, word
    assert "overridden" not in table.stdout


def test_preprocessing_overrides_reach_the_classifier() -> None:
    result = run(
        "models",
        "--info",
        "efficientnet_lite0",
        "--mean",
        "0.4,0.5,0.6",
        "--std",
        "0.25",
        "--input-size",
        "200,240",
        "--crop",
        "224/256",
        "--interpolation",
        "bilinear",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["preprocessing"] == {
        "mean": pytest.approx([0.4, 0.5, 0.6]),
        "std": pytest.approx([0.25, 0.25, 0.25]),
        "input_size": [200, 240],
        "crop_fraction": pytest.approx(0.875),
        "interpolation": "bilinear",
    }
    assert set(info["overrides"]) == {"mean", "std", "input_size", "crop_fraction", "interpolation"}
    assert info["overrides"]["input_size"] == [200, 240]
    table = run("models", "--info", "efficientnet_lite0", "--interpolation", "area")
    assert table.returncode == 0, table.stderr
    line = next(row for row in table.stdout.splitlines() if "interpolation" in row)
    assert "area" in line and "overridden" in line


@pytest.mark.parametrize(
    ("flag", "value", "word"),
    [
        ("--mean", "abc", "R,G,B"),
        ("--mean", "0.1,0.2", "1 or 3"),
        ("--mean", "123.7,116.3,103.5", "divide"),
        ("--std", "0", "above 0"),
        ("--std", "nan", "finite"),
        ("--input-size", "0", "1 or 2 sides"),
        ("--input-size", "224,224,3", "1 or 2 sides"),
        ("--input-size", "big", "HEIGHT,WIDTH"),
        ("--crop", "0", "(0, 1]"),
        ("--crop", "1.5", "(0, 1]"),
        ("--crop", "1/0", "(0, 1]"),
        ("--interpolation", "lanczos", "invalid choice"),
    ],
)
def test_malformed_override_is_a_one_line_usage_error(flag: str, value: str, word: str) -> None:
    line = one_line_error(run("classify", flag, value), 2, flag, word)
    assert line.startswith("trompe classify: error:")


@pytest.mark.parametrize(
    "verb", [("attack",), ("demo",), ("classify",), ("labels",), ("models", "--info", "x")]
)
def test_every_model_verb_takes_the_model_options(verb: tuple[str, ...]) -> None:
    one_line_error(run(*verb, "--crop", "2"), 2, "--crop")
    assert "--interpolation" in run(verb[0], "--help").stdout


def test_overrides_without_a_model_to_change_are_refused() -> None:
    one_line_error(run("models", "--mean", "0.5"), 2, "--mean", "--info")


# -- unknown ids ------------------------------------------------------------------------------


def test_an_unknown_source_prefix_suggests_the_nearest() -> None:
    line = one_line_error(run("classify", "--model", "tim:resnet18"), 2, "'tim'", "timm")
    assert "sources: torchvision, timm, hf, keras, onnx, file" in line
    line = one_line_error(run("models", "--info", "efficientnet_lit0"), 2, "efficientnet_lite0")
    assert "SOURCE:REF" in line


def test_load_model_explains_unknown_ids() -> None:
    with pytest.raises(UnknownModelError, match=r"did you mean hf:\?"):
        trompe.load_model("hff:google/vit")
    with pytest.raises(UnknownModelError, match="sources: torchvision, timm"):
        trompe.load_model("nonsense")


# -- label files --------------------------------------------------------------------------------


def test_a_label_file_renames_the_classes_and_target_looks_up_in_it(
    names_txt: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run(
        "attack",
        "--target",
        "cls951",
        "--labels",
        str(names_txt),
        "--mean",
        "0.5",
        "--crop",
        "0.9",
        "--attack",
        "fgsm",
        "--eps",
        "4",
        "--resolution",
        "model",
        "--no-progress",
        "--out",
        str(out),
    )
    assert result.returncode in (0, 1), result.stderr  # 1: the goal not met, files written
    record = json.loads((out / "result.json").read_text())
    assert record["model"] == "efficientnet_lite0"
    assert record["goal"] == {
        "targeted": True,
        "class": 951,
        "class_name": "cls951",
        "confidence": 0.99,
    }
    assert all(p["label"] == f"cls{p['index']}" for p in record["before"]["top5"])
    assert record["before"]["top5"][0]["index"] in CATS
    assert record["verified_on_png"]["top1"]["label"].startswith("cls")
    info = record["model_info"]
    assert info["id"] == "efficientnet_lite0" and info["source"] == "builtin"
    assert info["num_classes"] == 1000 and info["access"] == "gradients"
    assert info["preprocessing"]["mean"] == pytest.approx([0.5] * 3)
    assert info["preprocessing"]["crop_fraction"] == pytest.approx(0.9)
    assert info["preprocessing"]["interpolation"] == "bicubic"  # the model's own
    assert info["overrides"] == {
        "mean": pytest.approx([0.5] * 3),
        "crop_fraction": pytest.approx(0.9),
        "labels": str(names_txt),
    }
    assert "cls951" in result.stdout  # the table names the target by the file's name


def test_a_json_label_file_names_the_top_classes(tmp_path: Path) -> None:
    path = tmp_path / "names.json"
    path.write_text(json.dumps({str(i): f"n{i}" for i in range(1000)}), encoding="utf-8")
    result = run("classify", "--labels", str(path), "--top", "2", "--json")
    assert result.returncode == 0, result.stderr
    top = json.loads(result.stdout)[0]["top"]
    assert top[0]["index"] in CATS and all(p["label"] == f"n{p['index']}" for p in top)


def test_a_label_file_of_the_wrong_length_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "ten.txt"
    path.write_text("\n".join(f"c{i}" for i in range(10)), encoding="utf-8")
    one_line_error(run("classify", "--labels", str(path)), 2, "1000 classes", "10 class names")
    one_line_error(
        run("classify", "--labels", str(tmp_path / "missing.txt")), 2, "cannot read the label"
    )


def test_labels_lists_a_models_own_classes(names_txt: Path) -> None:
    result = run("labels", "cls951", "--labels", str(names_txt), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0] == {"index": 951, "name": "cls951", "synonyms": []}
    table = run("labels", "--model", "efficientnet_lite1", "--limit", "3")
    assert table.returncode == 0, table.stderr
    assert "classes of efficientnet_lite1" in table.stdout and "goldfish" in table.stdout


# -- the Python side -----------------------------------------------------------------------------


def test_the_cli_knows_every_interpolation_of_the_sources() -> None:
    from trompe.cli._model_options import INTERPOLATIONS
    from trompe.models.sources import INTERPOLATIONS as SOURCE_INTERPOLATIONS

    assert INTERPOLATIONS == SOURCE_INTERPOLATIONS


def test_load_model_records_its_source_and_overrides() -> None:
    clf = trompe.load_model("efficientnet_lite0", mean=[0.5], input_size=200, labels=None)
    info = clf.describe()
    assert info["source"] == "builtin" and info["num_classes"] == 1000
    assert info["preprocessing"]["input_size"] == [200, 200]  # type: ignore[index]
    assert info["overrides"] == {"mean": [0.5, 0.5, 0.5], "input_size": [200, 200]}
    with pytest.raises(InvalidArgumentError, match="built-in"):
        trompe.load_model("efficientnet_lite0", arch="timm:resnet18")


def test_a_ten_class_model_takes_targets_by_its_own_names(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    clf = Classifier(
        digits_clf.model,
        mean=digits_clf.mean.flatten().tolist(),
        std=digits_clf.std.flatten().tolist(),
        labels=names,
        input_size=digits_clf.input_size,
        name="digits",
    )
    images, labels = digits_batch
    index = int((labels != 7).nonzero()[0])
    result = trompe.attack(
        images[index], "seven", model=clf, attack="pgd", eps=0.5, steps=20, confidence=None
    )
    assert int(result.goal.classes[0]) == 7
    summary = result_summary(result)
    assert summary["goal"]["class_name"] == "seven"
    assert summary["model"] == "digits"
    assert summary["model_info"]["num_classes"] == 10
    assert summary["model_info"]["source"] == "custom"
    assert {p["label"] for p in summary["after"]["top5"]} <= set(names)


# -- state dicts (the file source) ---------------------------------------------------------------


@needs_checkpoint
def test_a_state_dict_with_arch_classifies_as_the_builtin() -> None:
    weights = str(get_spec("efficientnet_lite0").weights_path())
    builtin = run("classify", "--top", "1", "--json")
    loaded = run("classify", "--model", weights, "--arch", "efficientnet_lite0", "--top", "1")
    assert builtin.returncode == 0 and loaded.returncode == 0, loaded.stderr
    as_json = run(
        "classify", "--model", weights, "--arch", "efficientnet_lite0", "--top", "1", "--json"
    )
    assert as_json.returncode == 0, as_json.stderr
    want, got = json.loads(builtin.stdout)[0]["top"][0], json.loads(as_json.stdout)[0]["top"][0]
    assert got["index"] == want["index"] and got["label"] == want["label"]
    assert got["prob"] == pytest.approx(want["prob"], abs=1e-4)


@needs_checkpoint
def test_models_info_of_a_state_dict_names_its_source_and_arch() -> None:
    weights = str(get_spec("efficientnet_lite0").weights_path())
    result = run("models", "--info", weights, "--arch", "efficientnet_lite0", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["source"] == "file" and info["arch"] == "efficientnet_lite0"
    assert info["num_classes"] == 1000
    assert info["preprocessing"]["input_size"] == [224, 224]
    assert info["preprocessing"]["interpolation"] == "bicubic"


@needs_checkpoint
def test_a_missing_state_dict_is_one_line() -> None:
    result = run("classify", "--model", "no-such-file.pth", "--arch", "efficientnet_lite0")
    assert result.returncode in (1, 2), result.stderr
    one_line_error(result, result.returncode, "no-such-file.pth")


# -- a non-ImageNet model of another source: ONNX, 10 classes --------------------------------------

HAS_ONNX = all(
    importlib.util.find_spec(name) is not None
    for name in ("onnx", "onnxruntime", "trompe.models.sources._onnx")
)
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.mark.skipif(not HAS_ONNX, reason="onnx, onnxruntime or the ONNX source is not here")
def test_a_ten_class_onnx_model_with_a_label_file(tmp_path: Path) -> None:
    import warnings

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    )
    model = tmp_path / "ten.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.rand(1, 3, 32, 32),),
            str(model),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
            dynamo=False,
        )
    names = tmp_path / "digits.json"
    names.write_text(json.dumps(DIGIT_NAMES), encoding="utf-8")
    common = ("--model", str(model), "--labels", str(names), "--input-size", "32")

    info = run("models", "--info", str(model), *common[2:], "--json")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["source"] == "onnx" and described["access"] == "scores"
    assert described["num_classes"] == 10 and described["labels"] == DIGIT_NAMES
    assert set(described["overrides"]) == {"input_size", "labels"}

    out = tmp_path / "out"
    attack = run(
        "attack",
        *common,
        "--target",
        "seven",
        "--attack",
        "square",
        "--queries",
        "50",
        "--eps",
        "32",
        "--resolution",
        "model",
        "--out",
        str(out),
    )
    assert attack.returncode in (0, 1), attack.stderr
    record = json.loads((out / "result.json").read_text())
    assert record["goal"]["class"] == 7 and record["goal"]["class_name"] == "seven"
    assert record["model_info"]["num_classes"] == 10
    assert record["model_info"]["source"] == "onnx"
    assert {p["label"] for p in record["after"]["top5"]} <= set(DIGIT_NAMES)
    spare = ("--out", str(tmp_path / "spare"))
    one_line_error(run("attack", *common, *spare, "--target", "lemon"), 2, "unknown class 'lemon'")
    one_line_error(run("attack", *common, *spare, "--target", "seven"), 2, "scores only")
    assert not (tmp_path / "spare").exists()
