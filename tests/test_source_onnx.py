"""ONNX files as classifiers: onnxruntime for scores, onnx2torch for gradients, and the checks
that keep an untrusted file's external data inside its folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx
import onnxruntime
from onnx import TensorProto, helper

import trompe
from trompe.attacks import PGD, SimBA, Square, Untargeted
from trompe.errors import AccessError, ModelLoadError
from trompe.models import Classifier
from trompe.models.digits import DigitsData

HALF = (0.5, 0.5, 0.5)


def export(net: nn.Module, path: Path, shape: tuple[int, ...], *, dynamic: bool = True) -> Path:
    """``net`` as an ONNX file (the TorchScript exporter, opset 17), batch size free or fixed."""
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            net.eval(),
            (torch.zeros(shape),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=axes,
        )
    return path


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory: pytest.TempPathFactory, digits_clf: Classifier) -> Path:
    """The digits CNN (which takes images normalised with mean 0.5, std 0.5) as ONNX."""
    return export(digits_clf.model, tmp_path_factory.mktemp("onnx") / "digits.onnx", (1, 3, 8, 8))


@pytest.fixture(scope="module")
def onnx_clf(digits_onnx: Path) -> Classifier:
    return trompe.load_model(f"onnx:{digits_onnx}", mean=HALF, std=HALF)


class Sessions:
    """Records each onnxruntime.InferenceSession made (an observation: it still makes them)."""

    def __init__(self) -> None:
        self.made: list[str] = []


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sessions]:
    record = Sessions()
    real = onnxruntime.InferenceSession

    def counting(path: object, *args: object, **kwargs: object) -> onnxruntime.InferenceSession:
        record.made.append(str(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(onnxruntime, "InferenceSession", counting)
    yield record


def one_line_error(model_id: str, **options: object) -> str:
    with pytest.raises(ModelLoadError) as caught:
        trompe.load_model(model_id, **options)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- scores through onnxruntime ----------------------------------------------------------------


def test_onnx_logits_equal_torch_with_prefix_and_bare_path(
    digits_onnx: Path, digits: DigitsData, digits_clf: Classifier, sessions: Sessions
) -> None:
    images = digits.test_images[:50]
    with torch.no_grad():
        expected = digits_clf(images)
    for model_id in (f"onnx:{digits_onnx}", str(digits_onnx)):
        clf = trompe.load_model(model_id, mean=HALF, std=HALF)
        assert clf.access == "scores"
        assert clf.input_size == (8, 8)
        assert clf.num_classes == 10
        assert clf.labels[3] == "class 3"  # no labels in the file, none given
        with torch.no_grad():
            torch.testing.assert_close(clf(images), expected, atol=1e-4, rtol=1e-4)
    assert len(sessions.made) == 2


def test_score_based_attacks_succeed_on_onnx(
    onnx_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:8], digits_batch[1][:8]
    square = Square(eps=0.3, norm="linf", queries=200, seed=0)(onnx_clf, images, Untargeted(labels))
    assert square.success.any()
    simba = SimBA(eps=3.0, queries=300, seed=0)(onnx_clf, images, Untargeted(labels))
    assert simba.success.any()
    with torch.no_grad():
        again = onnx_clf(square.adversarial).argmax(dim=1)
    assert torch.equal(again != labels, square.success)


def test_gradient_attack_on_onnx_is_refused_with_the_conversion_option(
    onnx_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:4], digits_batch[1][:4]
    with pytest.raises(AccessError, match="onnx_gradients=True") as caught:
        PGD(eps=0.3, steps=5)(onnx_clf, images, Untargeted(labels))
    assert "needs gradients" in str(caught.value)
    # Forced past the attack's check, the session still has no gradient to give.
    forced = onnx_clf.with_access("gradients")
    with pytest.raises(AccessError, match="onnx_gradients=True"):
        forced(images.clone().requires_grad_(True))


def test_onnx_gradients_converts_to_torch_and_pgd_runs(
    digits_onnx: Path,
    digits_clf: Classifier,
    digits_batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    pytest.importorskip("onnx2torch")
    clf = trompe.load_model(str(digits_onnx), mean=HALF, std=HALF, onnx_gradients=True)
    assert clf.access == "gradients"
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    with torch.no_grad():
        torch.testing.assert_close(clf(images), digits_clf(images), atol=1e-4, rtol=1e-4)
    result = PGD(eps=0.3, steps=10, seed=0)(clf, images, Untargeted(labels))
    assert result.success.float().mean() > 0.5


def test_shared_folded_weights_convert(tmp_path: Path) -> None:
    """torch's exporter folds batch norms into the convolutions and writes equal folded tensors
    once, naming them again through Identity nodes (every exported torchvision ResNet has
    them); onnx2torch alone fails on such graphs, trompe's conversion does not."""
    pytest.importorskip("onnx2torch")
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()
    path = export(net, tmp_path / "folded.onnx", (1, 3, 8, 8))
    assert any(node.op_type == "Identity" for node in onnx.load(str(path)).graph.node)
    clf = trompe.load_model(str(path), onnx_gradients=True)
    images = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(clf(images), net(images), atol=1e-5, rtol=1e-5)


def test_unconvertible_operator_is_named_and_scores_still_work(tmp_path: Path) -> None:
    pytest.importorskip("onnx2torch")
    # x -> GlobalAveragePool -> Flatten -> Sinh: three "class" scores; onnx2torch has no Sinh.
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Sinh", ["flat"], ["y"]),
        ],
        "sinh",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    path = tmp_path / "sinh.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    message = one_line_error(str(path), onnx_gradients=True)
    assert "Sinh (opset 17)" in message
    assert "score-only mode still works" in message
    clf = trompe.load_model(str(path))
    images = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(clf(images), torch.sinh(images.mean(dim=(2, 3))))


# -- shapes and outputs ------------------------------------------------------------------------


class WithSoftmax(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x).softmax(dim=1)
        return out


class ChannelsLast(nn.Module):
    """Takes (B, H, W, 3) as TensorFlow models do."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x.permute(0, 3, 1, 2))
        return out


def test_softmax_output_becomes_log_probabilities(
    tmp_path: Path, digits_clf: Classifier, digits: DigitsData
) -> None:
    path = export(WithSoftmax(digits_clf.model), tmp_path / "softmax.onnx", (1, 3, 8, 8))
    clf = trompe.load_model(str(path), mean=HALF, std=HALF)
    images = digits.test_images[:20]
    with torch.no_grad():
        out = clf(images)
        probs = digits_clf(images).softmax(dim=1)
    assert (out <= 1e-6).all()  # log-probabilities, not probabilities
    torch.testing.assert_close(out.softmax(dim=1), probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(clf.probs(images), probs, atol=1e-5, rtol=1e-4)


def test_fixed_batch_one_channels_last_model(
    tmp_path: Path, digits_clf: Classifier, digits: DigitsData
) -> None:
    path = export(
        ChannelsLast(digits_clf.model), tmp_path / "nhwc.onnx", (1, 8, 8, 3), dynamic=False
    )
    assert [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim] == [
        1,
        8,
        8,
        3,
    ]
    clf = trompe.load_model(str(path), mean=HALF, std=HALF)
    assert clf.input_size == (8, 8)
    images = digits.test_images[:7]  # a batch of 7 through a batch-1 graph
    with torch.no_grad():
        torch.testing.assert_close(clf(images), digits_clf(images), atol=1e-4, rtol=1e-4)
    pytest.importorskip("onnx2torch")
    converted = trompe.load_model(str(path), mean=HALF, std=HALF, onnx_gradients=True)
    with torch.no_grad():
        torch.testing.assert_close(converted(images), digits_clf(images), atol=1e-4, rtol=1e-4)


# -- metadata ----------------------------------------------------------------------------------


def with_metadata(source: Path, target: Path, **props: str) -> Path:
    model = onnx.load(source)
    helper.set_model_props(model, props)
    onnx.save(model, target)
    return target


def test_preprocessing_and_labels_from_metadata(
    tmp_path: Path, digits_onnx: Path, digits_clf: Classifier, digits: DigitsData
) -> None:
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    path = with_metadata(
        digits_onnx,
        tmp_path / "meta.onnx",
        mean="[0.5, 0.5, 0.5]",
        std="0.5",
        labels=repr(names).replace("'", '"'),
    )
    clf = trompe.load_model(str(path))
    assert clf.preprocessing["mean"] == [0.5, 0.5, 0.5]
    assert clf.preprocessing["std"] == [0.5, 0.5, 0.5]
    assert clf.labels[7] == "seven"
    images = digits.test_images[:10]
    with torch.no_grad():
        torch.testing.assert_close(clf(images), digits_clf(images), atol=1e-4, rtol=1e-4)
    # The user's values win over the file's.
    other = trompe.load_model(str(path), mean=(0.0, 0.0, 0.0))
    assert other.preprocessing["mean"] == [0.0, 0.0, 0.0]


def test_unreadable_metadata_is_one_line(tmp_path: Path, digits_onnx: Path) -> None:
    path = with_metadata(digits_onnx, tmp_path / "bad.onnx", mean="[0.5, 0.5]")
    message = one_line_error(str(path))
    assert "'mean'" in message and "pass mean yourself" in message
    assert trompe.load_model(str(path), mean=HALF).preprocessing["mean"] == [0.5, 0.5, 0.5]


def test_cli_classifies_with_an_onnx_model(
    tmp_path: Path, digits_onnx: Path, digits: DigitsData, digits_clf: Classifier
) -> None:
    from PIL import Image

    path = with_metadata(digits_onnx, tmp_path / "cli.onnx", mean="0.5", std="0.5")
    index = int((digits.test_labels == 3).nonzero()[0])
    image = digits.test_images[index]
    with torch.no_grad():
        assert int(digits_clf(image[None]).argmax()) == 3
    picture = tmp_path / "three.png"
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(picture)
    command = ["classify", str(picture), "--json", "--model", f"onnx:{path}"]
    run = subprocess.run(
        [sys.executable, "-m", "trompe", *command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    (record,) = json.loads(run.stdout)
    assert record["model"] == f"onnx:{path}"
    assert record["top"][0]["index"] == 3 and record["top"][0]["label"] == "class 3"


# -- untrusted files ---------------------------------------------------------------------------


def external_copy(source: Path, folder: Path) -> Path:
    """``source`` saved with every initializer in ``weights.bin`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(source)
    path = folder / "model.onnx"
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return path


def relocate(path: Path, location: str) -> None:
    """Point every external tensor of the model at ``path`` to ``location``."""
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, path)


def test_external_data_in_the_folder_loads(
    tmp_path: Path, digits_onnx: Path, digits_clf: Classifier, digits: DigitsData
) -> None:
    path = external_copy(digits_onnx, tmp_path / "model")
    assert (tmp_path / "model" / "weights.bin").stat().st_size > 10_000
    clf = trompe.load_model(str(path), mean=HALF, std=HALF)
    images = digits.test_images[:10]
    with torch.no_grad():
        torch.testing.assert_close(clf(images), digits_clf(images), atol=1e-4, rtol=1e-4)
    pytest.importorskip("onnx2torch")
    converted = trompe.load_model(str(path), mean=HALF, std=HALF, onnx_gradients=True)
    with torch.no_grad():
        torch.testing.assert_close(converted(images), digits_clf(images), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink", "symlinked-folder"])
def test_external_data_outside_the_folder_is_refused_before_any_session(
    tmp_path: Path, digits_onnx: Path, sessions: Sessions, kind: str
) -> None:
    path = external_copy(digits_onnx, tmp_path / "model")
    # The real weights, outside the model's folder: a session would load them and succeed.
    secret = tmp_path / "secret.bin"
    (tmp_path / "model" / "weights.bin").rename(secret)
    if kind == "parent":
        location = "../secret.bin"
    elif kind == "absolute":
        location = str(secret)
    elif kind == "symlink":
        location = "link.bin"
        (tmp_path / "model" / location).symlink_to(secret)
    else:
        location = "sub/secret.bin"
        (tmp_path / "model" / "sub").symlink_to(tmp_path)
    relocate(path, location)
    message = one_line_error(str(path), mean=HALF, std=HALF)
    assert repr(location) in message
    assert "inside the model's folder" in message
    assert sessions.made == []


def test_missing_external_file_is_one_line(tmp_path: Path, digits_onnx: Path) -> None:
    path = external_copy(digits_onnx, tmp_path / "model")
    (tmp_path / "model" / "weights.bin").unlink()
    assert "does not exist" in one_line_error(str(path))


def test_missing_truncated_and_text_files_are_one_line(tmp_path: Path, digits_onnx: Path) -> None:
    assert "no such file" in one_line_error(str(tmp_path / "absent.onnx"))
    truncated = tmp_path / "truncated.onnx"
    data = digits_onnx.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert "cannot load model" in one_line_error(str(truncated))
    text = tmp_path / "notes.onnx"
    text.write_text("these are not the weights you are looking for\n" * 20)
    assert "not an ONNX file" in one_line_error(f"onnx:{text}")


def test_custom_operator_domain_is_refused(tmp_path: Path, sessions: Sessions) -> None:
    graph = helper.make_graph(
        [helper.make_node("Steal", ["x"], ["y"], domain="com.example.evil")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.evil", 1)],
    )
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    message = one_line_error(str(path))
    assert "'com.example.evil'" in message and "custom-op library" in message
    assert sessions.made == []


def test_external_data_of_a_node_attribute_is_checked_too(
    tmp_path: Path, sessions: Sessions
) -> None:
    from onnx.external_data_helper import set_external_data

    (tmp_path / "model").mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(3, dtype=np.float32).tobytes())
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [3], bytes(12), raw=True)
    set_external_data(bias, location="../secret.bin", offset=0, length=12)
    bias.ClearField("raw_data")
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["bias"], value=bias),
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Add", ["flat", "bias"], ["y"]),
        ],
        "attribute",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    path = tmp_path / "model" / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    message = one_line_error(str(path))
    assert "'../secret.bin'" in message and "goes up with '..'" in message
    assert sessions.made == []
