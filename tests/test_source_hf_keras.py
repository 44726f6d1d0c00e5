"""Model sources ``hf:`` (transformers) and ``keras:`` (Keras 3 on torch): real models, saved
and loaded as a user would, checked against the libraries' own preprocessing and outputs. The
hub and Keras' weight server cannot be reached from the test machines: offline failures are
tested as such."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import trompe
from trompe.errors import ModelLoadError, TrompeError, UnknownModelError
from trompe.images import example_path, load_image
from trompe.labels import imagenet_labels
from trompe.models.sources._hf import labels_from_config, preprocessing_from_processor

# Keras picks its backend once, at import: the torch one, as trompe does.
os.environ.setdefault("KERAS_BACKEND", "torch")

transformers = pytest.importorskip("transformers")

# Keras' torch backend converts tensors with np.array(x), which numpy 2 deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

ROOT = Path(__file__).resolve().parents[1]


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(error.value)
    assert "\n" not in text and text
    return text


def to_uint8_hwc(images: torch.Tensor) -> list[np.ndarray]:
    return [(im.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for im in images]


def on_8bit_grid(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round() / 255


# -- Hugging Face -------------------------------------------------------------------------------

VIT_MEAN = [0.4, 0.5, 0.6]
VIT_STD = [0.2, 0.3, 0.4]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """A randomly initialised 3-class ViT on 32 x 32 images, saved with its processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("vit")
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "lemon"},
        label2id={"cat": 0, "dog": 1, "lemon": 2},
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(folder)
    processor = ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=VIT_MEAN, image_std=VIT_STD
    )
    processor.save_pretrained(folder)
    return folder, model, processor


@pytest.mark.parametrize("prefixed", [True, False], ids=["hf-prefix", "bare-folder"])
def test_hf_folder_labels_and_preprocessing(
    tiny_vit: tuple[Path, Any, Any], prefixed: bool
) -> None:
    folder = tiny_vit[0]
    clf = trompe.load_model(f"hf:{folder}" if prefixed else str(folder))
    assert list(clf.labels) == ["cat", "dog", "lemon"]
    assert clf.labels.index("lemon") == 2
    assert clf.input_size == (32, 32)
    pre = clf.preprocessing
    assert pre["mean"] == pytest.approx(VIT_MEAN) and pre["std"] == pytest.approx(VIT_STD)
    assert pre["crop_fraction"] == 1.0 and pre["interpolation"] == "bilinear"


def test_hf_logits_equal_the_processor_pipeline(tiny_vit: tuple[Path, Any, Any]) -> None:
    folder, model, processor = tiny_vit
    clf = trompe.load_model(f"hf:{folder}")
    images = on_8bit_grid(torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    pixel_values = processor(images=to_uint8_hwc(images), return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits
        ours = clf(images)
    assert ours.shape == (3, 3)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    # Another size goes through the classifier's resize to 32 x 32, not an error.
    assert clf(torch.rand(1, 3, 48, 40)).shape == (1, 3)


def test_hf_gradient_reaches_the_input(tiny_vit: tuple[Path, Any, Any]) -> None:
    clf = trompe.load_model(f"hf:{tiny_vit[0]}")
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    clf(images)[:, 1].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in clf.parameters())


def test_hf_overrides_and_label_file(tiny_vit: tuple[Path, Any, Any], tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("tabby\nbeagle\nlime\n", encoding="utf-8")
    clf = trompe.load_model(f"hf:{tiny_vit[0]}", labels=names, mean=[0.5], crop_fraction=0.9)
    assert list(clf.labels) == ["tabby", "beagle", "lime"]
    assert clf.preprocessing["mean"] == [0.5, 0.5, 0.5]
    assert clf.preprocessing["std"] == pytest.approx(VIT_STD)
    assert clf.preprocessing["crop_fraction"] == 0.9


def test_hf_half_precision_checkpoint_runs_in_float32(
    tiny_vit: tuple[Path, Any, Any], tmp_path: Path
) -> None:
    folder, model, _ = tiny_vit
    half = type(model)(model.config)
    half.load_state_dict(model.state_dict())
    half.half().save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        (folder / "preprocessor_config.json").read_text()
    )
    clf = trompe.load_model(f"hf:{tmp_path}")
    assert {p.dtype for p in clf.parameters()} == {torch.float32}
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = clf(images)
        reference = trompe.load_model(f"hf:{folder}")(images)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, reference, atol=5e-3, rtol=0)


def test_hf_default_label_names_become_class_i(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=4,
    )
    ViTForImageClassification(config).save_pretrained(tmp_path)
    clf = trompe.load_model(f"hf:{tmp_path}")  # no preprocessor_config.json either
    assert list(clf.labels) == ["class 0", "class 1", "class 2", "class 3"]
    # No processor: [0, 1] input at the config's image size; overrides can fix it.
    assert clf.input_size == (16, 16)
    assert clf.preprocessing["mean"] == [0.0, 0.0, 0.0]
    assert clf.preprocessing["std"] == [1.0, 1.0, 1.0]


def test_hf_convnext_processor_crop_pct(tmp_path: Path) -> None:
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    config = ConvNextConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_labels=5, image_size=64, num_stages=2
    )
    torch.manual_seed(0)
    model = ConvNextForImageClassification(config).eval()
    model.save_pretrained(tmp_path)
    processor = ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875)
    processor.save_pretrained(tmp_path)
    clf = trompe.load_model(f"hf:{tmp_path}")
    assert clf.input_size == (64, 64)
    assert clf.crop_fraction == pytest.approx(0.875)
    assert clf.interpolation == "bicubic"  # ConvNeXt's default resample, PIL code 3
    assert clf.preprocessing["mean"] == pytest.approx(list(processor.image_mean))
    # A 64 x 64 image passes as it is in trompe, and the processor resizes it to 73 then crops
    # 64: the same pixels up to the resize, so the top classes agree on most images.
    images = on_8bit_grid(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
    pixel_values = processor(images=to_uint8_hwc(images), return_tensors="pt").pixel_values
    assert tuple(pixel_values.shape[-2:]) == (64, 64)
    # The crop of 0.875 and a resize back to 64 in trompe: compare on an image of 73 pixels.
    big = on_8bit_grid(torch.rand(1, 3, 73, 73, generator=torch.Generator().manual_seed(3)))
    pv = processor(images=to_uint8_hwc(big), return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = model(pixel_values=pv).logits
        ours = clf(big)
    assert torch.corrcoef(torch.stack([ours[0], expected[0]]))[0, 1] > 0.99


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        # ConvNeXt at 384 and up warps without cropping.
        (
            {"size": {"shortest_edge": 384}, "crop_pct": 0.875, "resample": 3},
            ((384, 384), 1.0, "bicubic"),
        ),
        # Resize the shorter side to 256, crop 224 (ResNet-style processors).
        (
            {
                "size": {"shortest_edge": 256},
                "do_center_crop": True,
                "crop_size": {"height": 224, "width": 224},
                "resample": 2,
            },
            ((224, 224), 224 / 256, "bilinear"),
        ),
        # An old config: ints for the shorter side and the crop.
        (
            {"size": 256, "do_center_crop": True, "crop_size": 224, "resample": 3},
            ((224, 224), 224 / 256, "bicubic"),
        ),
        # Straight to height x width (ViT, DeiT), nearest.
        ({"size": {"height": 384, "width": 384}, "resample": 0}, ((384, 384), 1.0, "nearest")),
        # Resize to 256 x 256, crop 224.
        (
            {
                "size": {"height": 256, "width": 256},
                "do_center_crop": True,
                "crop_size": {"height": 224, "width": 224},
            },
            ((224, 224), 224 / 256, "bilinear"),
        ),
    ],
)
def test_hf_processor_sizes(attrs: dict[str, Any], expected: tuple[Any, float, str]) -> None:
    pre = preprocessing_from_processor(attrs)
    size, fraction, interpolation = expected
    assert pre.input_size == size and pre.interpolation == interpolation
    assert pre.crop_fraction == pytest.approx(fraction)


def test_hf_processor_scales() -> None:
    # do_normalize false: the network sees the rescaled pixels in [0, 1].
    pre = preprocessing_from_processor(
        {"do_normalize": False, "image_mean": [0.4] * 3, "size": {"height": 8, "width": 8}}
    )
    assert (pre.mean, pre.std) == ((0.0,) * 3, (1.0,) * 3)
    # EfficientNet: pixels / 127.5 - 1, then ImageNet mean and std.
    pre = preprocessing_from_processor(
        {
            "rescale_factor": 1 / 127.5,
            "rescale_offset": True,
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
        }
    )
    v = torch.rand(3)
    ours = (v - torch.tensor(pre.mean)) / torch.tensor(pre.std)
    hf = (v * 255 / 127.5 - 1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]
    )
    torch.testing.assert_close(ours, hf)
    # do_rescale false: the network was fed 0-255 pixels.
    pre = preprocessing_from_processor({"do_rescale": False, "do_normalize": False})
    assert pre.std == pytest.approx((1 / 255,) * 3)


def test_hf_imagenet_names_become_trompe_labels() -> None:
    imagenet = imagenet_labels()
    # The transformers style: "first name, other names" (google/vit-base-patch16-224).
    hf_style = {i: ", ".join(imagenet.synonyms(i) or (imagenet[i],)) for i in range(len(imagenet))}
    assert labels_from_config(hf_style, 1000) is imagenet
    assert labels_from_config({str(k): v for k, v in hf_style.items()}, 1000) is imagenet
    # Two classes swapped: not ImageNet's order, so the config's own names are kept.
    swapped = {**hf_style, 0: hf_style[1], 1: hf_style[0]}
    names = labels_from_config(swapped, 1000)
    assert isinstance(names, list) and names[0] == hf_style[1]
    assert labels_from_config({0: "LABEL_0", 1: "LABEL_1"}, 2) is None
    assert labels_from_config({0: "a", 1: "b"}, 3) is None  # names that do not fit the head


def test_hf_pickle_weights_refused(tiny_vit: tuple[Path, Any, Any], tmp_path: Path) -> None:
    folder, model, _ = tiny_vit
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as error:
        trompe.load_model(f"hf:{tmp_path}")
    text = one_line(error)
    assert "pickle" in text and "pytorch_model.bin" in text and "safetensors" in text


def test_hf_missing_folder_and_offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError) as error:
        trompe.load_model("hf:./no-such-folder/")
    assert "no folder" in one_line(error)

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as error:
        trompe.load_model("hf:trompe-tests/surely-not-cached-vit")
    text = one_line(error)
    assert "trompe-tests/surely-not-cached-vit" in text and "hf:./folder" in text


def test_hf_cli_classify_json(tiny_vit: tuple[Path, Any, Any]) -> None:
    data = _classify_json(tiny_vit[0])
    assert data[0]["model"] == f"hf:{tiny_vit[0]}"
    assert {t["label"] for t in data[0]["top"]} == {"cat", "dog", "lemon"}


def test_hf_hub_id_from_the_cache_offline(tiny_vit: tuple[Path, Any, Any], tmp_path: Path) -> None:
    """A hub id that transformers has cached loads offline, through transformers' own cache
    (laid out here as huggingface_hub lays it out after a download)."""
    folder = tiny_vit[0]
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--trompe-tests--tiny-vit"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (snapshot / name).write_bytes((folder / name).read_bytes())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    model_id = "hf:trompe-tests/tiny-vit"
    run = subprocess.run(
        [sys.executable, "-m", "trompe", "classify", "-m", model_id, "-k", "3", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data[0]["model"] == model_id
    expected = trompe.load_model(f"hf:{folder}").predict(load_image(example_path()), k=3)[0]
    assert [t["index"] for t in data[0]["top"]] == [p.index for p in expected]
    assert [t["prob"] for t in data[0]["top"]] == pytest.approx([p.prob for p in expected])


def _classify_json(folder: Path) -> Any:
    run = subprocess.run(
        # No -k: the default top 5 shrinks to the model's 3 classes.
        [sys.executable, "-m", "trompe", "classify", "-m", f"hf:{folder}", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


# -- Keras --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras() -> Any:
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras was imported on another backend")
    return keras


@pytest.fixture(scope="module")
def small_keras(keras: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Conv -> global average pool -> Dense(10, softmax), on 32 x 32 x 3 inputs in [0, 1]."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax", kernel_initializer="he_normal"),
        ]
    )
    # Spread the output so that the softmax is far from uniform.
    dense = model.layers[-1]
    dense.kernel.assign(dense.kernel * 20)
    path = tmp_path_factory.mktemp("keras") / "small.keras"
    model.save(path)
    return path, model


def test_keras_file_softmax_head_gives_logits(keras: Any, small_keras: tuple[Path, Any]) -> None:
    path, model = small_keras
    clf = trompe.load_model(f"keras:{path}")
    assert clf.num_classes == 10 and clf.labels[3] == "class 3"
    assert clf.input_size == (32, 32)
    assert clf.preprocessing["mean"] == [0.0] * 3 and clf.preprocessing["std"] == [1.0] * 3
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = np.asarray(model.predict(images.permute(0, 2, 3, 1).numpy(), verbose=0))
    assert expected.max() > 0.5  # a peaked softmax: the comparison below means something
    with torch.no_grad():
        logits = clf(images)
    assert not torch.allclose(logits.sum(-1), torch.ones(4))  # logits, not probabilities
    np.testing.assert_allclose(logits.softmax(-1).numpy(), expected, atol=1e-5)
    # The file's own model was not changed by the loader (it loads its own copy).
    assert model.layers[-1].activation.__name__ == "softmax"


def test_keras_bare_file_path_and_labels(
    keras: Any, small_keras: tuple[Path, Any], tmp_path: Path
) -> None:
    path = small_keras[0]
    names = [f"kind {i}" for i in range(10)]
    file = tmp_path / "names.json"
    file.write_text(json.dumps(names), encoding="utf-8")
    clf = trompe.load_model(str(path), labels=file)
    assert clf.name == f"keras:{path}" and list(clf.labels) == names
    assert trompe.load_model(f"keras:{path}", labels=names).labels.index("kind 7") == 7
    with pytest.raises(TrompeError) as error:
        trompe.load_model(f"keras:{path}", labels=names[:3])
    assert "10 classes" in one_line(error)


def test_keras_gradient_reaches_the_input(keras: Any, small_keras: tuple[Path, Any]) -> None:
    clf = trompe.load_model(f"keras:{small_keras[0]}")
    images = torch.rand(2, 3, 40, 36, requires_grad=True)  # resized to 32 x 32 on the way
    loss = torch.nn.functional.cross_entropy(clf(images), torch.tensor([1, 2]))
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in clf.parameters())


def test_keras_rescaling_layer_takes_0_255(keras: Any, tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
            keras.layers.Softmax(),  # a softmax layer, not an activation: log-probabilities
        ]
    )
    model.save(tmp_path / "r.keras")
    clf = trompe.load_model(str(tmp_path / "r.keras"))
    assert clf.preprocessing["std"] == pytest.approx([1 / 255] * 3, abs=1e-6)
    images = on_8bit_grid(torch.rand(2, 3, 16, 16))
    expected = model.predict((images * 255).permute(0, 2, 3, 1).numpy(), verbose=0)
    with torch.no_grad():
        probs = clf(images).softmax(-1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_keras_caffe_application_flips_to_bgr(keras: Any, tmp_path: Path) -> None:
    # A small network saved under ResNet50's name is recognised as ResNet50: 'caffe'
    # preprocessing (BGR, ImageNet mean subtracted in 0-255) and ImageNet's class names.
    keras.utils.set_random_seed(2)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1000, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="resnet50")
    model.save(tmp_path / "rn.keras")
    clf = trompe.load_model(f"keras:{tmp_path / 'rn.keras'}")
    assert clf.labels[951] == "lemon"
    assert clf.preprocessing["mean"] == pytest.approx(
        [123.68 / 255, 116.779 / 255, 103.939 / 255], abs=1e-6
    )
    assert clf.preprocessing["std"] == pytest.approx([1 / 255] * 3, abs=1e-6)
    images = on_8bit_grid(torch.rand(2, 3, 24, 24))
    # Strongly coloured images, so that an RGB/BGR mix-up would show.
    images[:, 0] = images[:, 0] * 0.2
    pixels = (images * 255).permute(0, 2, 3, 1).numpy()
    prepared = keras.applications.resnet50.preprocess_input(pixels.copy())
    expected = model.predict(prepared, verbose=0)
    with torch.no_grad():
        logits = clf(images)
    np.testing.assert_allclose(logits.log_softmax(-1).numpy(), np.log(expected), atol=1e-4)


def test_keras_lambda_layer_refused(keras: Any, tmp_path: Path) -> None:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Lambda(lambda x: x * 2.0),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    model.save(tmp_path / "lam.keras")
    with pytest.raises(ModelLoadError) as error:
        trompe.load_model(f"keras:{tmp_path / 'lam.keras'}")
    assert "Lambda" in one_line(error)


@pytest.mark.parametrize("name", ["model.h5", "model.hdf5", "model.pb"])
def test_keras_other_files_refused(keras: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError) as error:
        trompe.load_model(f"keras:{path}")
    assert ".keras" in one_line(error)


def test_keras_missing_file_and_unknown_application(keras: Any) -> None:
    with pytest.raises(ModelLoadError) as error:
        trompe.load_model("keras:./nowhere/model.keras")
    assert "no file" in one_line(error)
    with pytest.raises(UnknownModelError) as error:
        trompe.load_model("keras:inceptionv3")
    assert "keras:InceptionV3" in one_line(error)


def test_keras_other_backend_refused(
    keras: Any, small_keras: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(ModelLoadError) as error:
        trompe.load_model(f"keras:{small_keras[0]}")
    assert "KERAS_BACKEND=torch" in one_line(error)


@pytest.fixture(scope="module")
def inception(keras: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """InceptionV3 with random weights (24M parameters), saved as a .keras file."""
    keras.utils.set_random_seed(3)
    model = keras.applications.InceptionV3(weights=None)
    path = tmp_path_factory.mktemp("inception") / "inception.keras"
    model.save(path)
    return path, model


@pytest.mark.slow
def test_keras_inception_v3_file(keras: Any, inception: tuple[Path, Any]) -> None:
    path, model = inception
    clf = trompe.load_model(f"keras:./{os.path.relpath(path)}")
    assert clf.input_size == (299, 299)
    pre = clf.preprocessing
    assert pre["mean"] == [0.5] * 3 and pre["std"] == [0.5] * 3
    assert pre["crop_fraction"] == 1.0 and pre["interpolation"] == "bilinear"
    assert clf.labels.index("lemon") == 951
    images = on_8bit_grid(torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(4)))
    pixels = (images * 255).permute(0, 2, 3, 1).numpy()
    prepared = keras.applications.inception_v3.preprocess_input(pixels.copy())
    expected = np.asarray(model.predict(prepared, verbose=0))
    images.requires_grad_(True)
    logits = clf(images)
    np.testing.assert_allclose(logits.detach().log_softmax(-1).numpy(), np.log(expected), atol=1e-4)
    logits[0, 951].backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.slow
def test_keras_application_offline_cli(tmp_path: Path) -> None:
    """``keras:InceptionV3`` needs its ImageNet weights: offline, one line and exit 1."""
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras-home"), "KERAS_BACKEND": "torch"}
    run = subprocess.run(
        [sys.executable, "-m", "trompe", "classify", "--model", "keras:InceptionV3", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 1, run.stderr
    assert run.stdout == ""  # Keras' download message stays off stdout
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "InceptionV3" in lines[0] and "keras:./model.keras" in lines[0]


def test_keras_file_attacked_through_the_cli(
    keras: Any, small_keras: tuple[Path, Any], tmp_path: Path
) -> None:
    """A user's .keras file with a label file, attacked to a class named in it: the success
    that the CLI reports is the Keras model's own reading of the saved PNG."""
    from PIL import Image

    path, model = small_keras
    names = tmp_path / "names.txt"
    names.write_text("".join(f"kind {i}\n" for i in range(10)), encoding="utf-8")
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    before = np.asarray(model.predict(pixels[None] / 255.0, verbose=0))[0]
    target = int(before.argsort()[-2])  # the runner-up: in reach of this small network
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable, "-m", "trompe", "attack", str(tmp_path / "photo.png"),
            "--model", f"keras:{path}", "--labels", str(names), "--target", f"kind {target}",
            "--eps", "64", "--confidence", "0.5", "--out", str(out), "--json", "--no-progress",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "torch"},
        timeout=300,
        cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    record = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert record["model_info"]["source"] == "keras"
    assert record["model_info"]["num_classes"] == 10
    saved = np.asarray(Image.open(out / "adversarial.png").convert("RGB"), dtype=np.float32)
    probs = np.asarray(model.predict(saved[None] / 255.0, verbose=0))[0]
    assert record["goal"]["class"] == target and record["goal"]["class_name"] == f"kind {target}"
    assert record["success"] and int(probs.argmax()) == target
