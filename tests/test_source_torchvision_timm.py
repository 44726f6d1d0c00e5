"""The torchvision and timm model sources, offline.

No test reaches a network. Pretrained weights are stood in for by random weights written where
each library's own cache looks (torchvision: ``$TORCH_HOME/hub/checkpoints/<file of the weights
URL>``; timm: the Hugging Face hub cache, offline), so that the libraries' own loading paths run
and a test can tell those exact weights from any others.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import trompe
from trompe.errors import InvalidArgumentError, ModelLoadError, UnknownModelError
from trompe.images import center_crop_resize
from trompe.models import load_model

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")
hub_constants = pytest.importorskip("huggingface_hub.constants")

from torchvision.models import (  # noqa: E402
    GoogLeNet_Weights,
    ResNet18_Weights,
    ResNet50_Weights,
    get_model,
)

from trompe.models.sources import _timm, _torchvision  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_state(build: Any, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a freshly built network, drawn from ``seed`` (global RNG restored)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build()
    # Batch-norm statistics are 0 and 1 at init: make them random too, so that a network
    # that kept its own would differ.
    state = {k: v.clone() for k, v in net.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(value.shape, generator=generator)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)
    return state


def normalised(images: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# -- torchvision ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME whose cache holds random ResNet-18 weights under the V1 weights' file name."""
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    state = random_state(lambda: get_model("resnet18", weights=None), seed=1)
    torch.save(state, folder / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url))
    return home


@pytest.fixture
def tv_cache(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


def cached_resnet18(torch_home: Path) -> dict[str, torch.Tensor]:
    file = torch_home / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    state: dict[str, torch.Tensor] = torch.load(file, weights_only=True)
    return state


def test_torchvision_loads_the_cached_weights(tv_cache: Path) -> None:
    clf = load_model("torchvision:resnet18")
    reference = get_model("resnet18", weights=None).eval()
    reference.load_state_dict(cached_resnet18(tv_cache))
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(normalised(images, IMAGENET_MEAN, IMAGENET_STD))
        got = clf(images)
        random_net = get_model("resnet18", weights=None).eval()(images)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, random_net, atol=1e-2)  # the test can tell weights apart
    assert clf.name == "torchvision:resnet18"
    assert clf.input_size == (224, 224)
    assert clf.crop_fraction == pytest.approx(224 / 256)
    assert clf.interpolation == "bilinear"
    assert clf.preprocessing["mean"] == list(IMAGENET_MEAN)
    assert clf.preprocessing["std"] == list(IMAGENET_STD)
    assert len(clf.labels) == 1000
    assert clf.labels.index("pelican") == 144
    assert clf.labels is trompe.imagenet_labels()


def test_torchvision_same_logits_as_torchvisions_own_loader(tv_cache: Path) -> None:
    """torchvision's builder, reading the same cache file, gives the same logits."""
    clf = load_model("torchvision:ResNet18_Weights.IMAGENET1K_V1")
    assert clf.name == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    theirs = get_model("resnet18", weights=ResNet18_Weights.IMAGENET1K_V1).eval()
    images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            clf(images), theirs(normalised(images, IMAGENET_MEAN, IMAGENET_STD))
        )


def test_torchvision_googlenet_built_as_its_weights_want(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GoogLeNet's weights need transform_input and the auxiliary heads: trompe builds the
    network that torchvision's builder makes for them (same keys, same logits)."""
    weights = GoogLeNet_Weights.IMAGENET1K_V1
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    state = random_state(lambda: _torchvision.architecture("googlenet").net, seed=2)
    torch.save(state, folder / os.path.basename(weights.url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    clf = load_model("torchvision:googlenet")
    theirs = get_model("googlenet", weights=weights).eval()  # strict load of the same file
    images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            clf(images), theirs(normalised(images, IMAGENET_MEAN, IMAGENET_STD))
        )


@pytest.mark.parametrize(
    ("weights", "fraction", "mode"),
    [
        (ResNet18_Weights.IMAGENET1K_V1, 224 / 256, "bilinear"),
        (ResNet50_Weights.DEFAULT, 224 / 232, "bilinear"),  # DEFAULT is V2
        ("EfficientNet_B0_Weights.IMAGENET1K_V1", 224 / 256, "bicubic"),
        ("ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1", 384 / 384, "bicubic"),
    ],
)
def test_torchvision_preprocessing_is_that_of_the_weights(
    weights: Any, fraction: float, mode: str
) -> None:
    if isinstance(weights, str):
        weights = torchvision.models.get_weight(weights)
    ref = f"{type(weights).__name__}.{weights.name}"
    transform = weights.transforms()
    pre = _torchvision.architecture(ref).preprocessing
    assert pre.input_size == (transform.crop_size[0],) * 2
    assert pre.crop_fraction == pytest.approx(fraction)
    assert pre.crop_fraction == pytest.approx(transform.crop_size[0] / transform.resize_size[0])
    assert pre.interpolation == mode == transform.interpolation.value
    assert pre.mean == tuple(transform.mean)
    assert pre.std == tuple(transform.std)


def test_resnet50_default_is_v2() -> None:
    arch = _torchvision.architecture("resnet50")
    assert arch.preprocessing.crop_fraction == pytest.approx(224 / 232)
    assert _torchvision.architecture("resnet50.IMAGENET1K_V1").preprocessing.crop_fraction == (
        pytest.approx(224 / 256)
    )


def torchvision_order(image: torch.Tensor, crop: int, resize: int, mode: str) -> torch.Tensor:
    """torchvision's evaluation order with trompe's numbers: the shorter side resized to
    ``resize`` (antialiased), then a centred ``crop`` (torchvision's offsets)."""
    height, width = image.shape[-2:]
    if height <= width:
        size = (resize, int(resize * width / height))
    else:
        size = (int(resize * height / width), resize)
    big = F.interpolate(image[None], size=size, mode=mode, align_corners=False, antialias=True)
    top = round((size[0] - crop) / 2.0)
    left = round((size[1] - crop) / 2.0)
    return big[..., top : top + crop, left : left + crop]


@pytest.mark.parametrize("weights", [ResNet18_Weights.IMAGENET1K_V1, ResNet50_Weights.DEFAULT])
def test_torchvision_preprocessing_on_a_photo(weights: Any) -> None:
    """On the bundled cat photo, trompe's input to the network against ``weights.transforms()``.

    trompe's numbers are torchvision's exactly: torchvision's order (resize, then crop) redone
    with them matches ``weights.transforms()`` on the tensor to float precision. trompe's own
    order (crop ``crop_fraction`` of the shorter side, then resize, differentiable) places the
    crop up to a pixel of the photo away, a measured mean difference of about 3/255 per pixel
    on this textured photo (0.012 for ResNet-18 V1, 0.010 for ResNet-50 V2; PIL input the same).
    """
    photo = trompe.load_image(trompe.example_path())
    ref = f"{type(weights).__name__}.{weights.name}"
    pre = _torchvision.architecture(ref).preprocessing
    assert pre.input_size is not None
    crop = pre.input_size[0]
    resize = round(crop / pre.crop_fraction)
    theirs = weights.transforms()(photo)[None]
    redone = normalised(
        torchvision_order(photo, crop, resize, pre.interpolation), pre.mean, pre.std
    )
    torch.testing.assert_close(redone, theirs, rtol=0, atol=1e-4)

    ours = normalised(
        center_crop_resize(
            photo[None],
            pre.input_size,
            crop_fraction=pre.crop_fraction,
            interpolation=pre.interpolation,
        ),
        pre.mean,
        pre.std,
    )
    difference = ((ours - theirs) * torch.tensor(pre.std).view(1, 3, 1, 1)).abs()
    assert ours.shape == theirs.shape
    assert float(difference.mean()) < 0.02


def network_reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_torchvision_offline_is_one_line_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    if network_reachable("download.pytorch.org"):
        pytest.skip("this machine reaches download.pytorch.org: the download would succeed")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as caught:
        load_model("torchvision:resnet18")
    assert time.monotonic() - start < 30
    message = str(caught.value)
    assert "\n" not in message
    assert "--model ./resnet18-f37072fd.pth --arch torchvision:resnet18" in message
    assert ResNet18_Weights.IMAGENET1K_V1.url in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "Traceback" not in message
    assert not list((tmp_path / "hub" / "checkpoints").iterdir())  # no partial file left
    assert capfd.readouterr().out == ""  # torch.hub's "Downloading" line would spoil --json


def test_torchvision_unknown_names() -> None:
    with pytest.raises(UnknownModelError, match="torchvision:resnet18") as caught:
        load_model("torchvision:resnt18")
    assert caught.value.exit_code == 2
    with pytest.raises(UnknownModelError, match="not an image classifier"):
        load_model("torchvision:fcn_resnet50")
    with pytest.raises(UnknownModelError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        load_model("torchvision:resnet50.IMAGENET1K_V9")


def test_torchvision_features_only_weights_refused() -> None:
    with pytest.raises(ModelLoadError, match="features without a classifier head"):
        load_model("torchvision:VGG16_Weights.IMAGENET1K_FEATURES")


# -- timm ------------------------------------------------------------------------------------------


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache, offline.

    huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE once, at import: the environment is
    set for subprocesses and the module's constants for this process.
    """
    cache = tmp_path / "hf_hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def put_in_hub_cache(cache: Path, repo: str, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` as ``model.safetensors`` of the hub repository ``repo`` in the cache
    layout that huggingface_hub reads offline: refs/main names a snapshot folder."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    file = snapshot / "model.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(file))
    return file


def test_timm_loads_the_cached_weights(hf_cache: Path) -> None:
    state = random_state(lambda: timm.create_model("resnet18.a1_in1k"), seed=3)
    put_in_hub_cache(hf_cache, "timm/resnet18.a1_in1k", state)
    clf = load_model("timm:resnet18.a1_in1k")
    reference = timm.create_model("resnet18.a1_in1k").eval()
    reference.load_state_dict(state)
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(normalised(images, IMAGENET_MEAN, IMAGENET_STD))
        torch.testing.assert_close(clf(images), expected, rtol=1e-4, atol=1e-4)
        other = timm.create_model("resnet18.a1_in1k").eval()
        assert not torch.allclose(clf(images), other(images), atol=1e-2)
    assert clf.name == "timm:resnet18.a1_in1k"
    assert clf.input_size == (224, 224)
    assert clf.crop_fraction == pytest.approx(224 / 235)  # crop_pct 0.95: resize to 235
    assert clf.interpolation == "bicubic"
    assert clf.labels.index("pelican") == 144
    assert clf.labels is trompe.imagenet_labels()


def test_timm_preprocessing_on_a_photo() -> None:
    """timm's own evaluation transform (on the PIL photo) against trompe's input to the
    network; same numbers, trompe's crop-then-resize order (see the torchvision test)."""
    from PIL import Image
    from timm.data import create_transform
    from timm.data.config import resolve_model_data_config

    arch = _timm.architecture("convnext_tiny.fb_in1k")
    pre = arch.preprocessing
    assert pre.input_size == (224, 224)
    with Image.open(trompe.example_path()) as file:
        theirs = create_transform(**resolve_model_data_config(arch.net))(file.convert("RGB"))
    photo = trompe.load_image(trompe.example_path())
    ours = normalised(
        center_crop_resize(
            photo[None], (224, 224), crop_fraction=pre.crop_fraction, interpolation="bicubic"
        ),
        pre.mean,
        pre.std,
    )
    difference = ((ours - theirs[None]) * torch.tensor(pre.std).view(1, 3, 1, 1)).abs()
    assert float(difference.mean()) < 0.02


def test_timm_offline_is_one_line_with_the_way_out(hf_cache: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as caught:
        load_model("timm:resnet18.a1_in1k")
    assert time.monotonic() - start < 30
    message = str(caught.value)
    assert "\n" not in message
    assert "--arch timm:resnet18.a1_in1k" in message
    assert "huggingface.co/timm/resnet18.a1_in1k" in message
    assert str(hf_cache) in message


def test_timm_unknown_names() -> None:
    with pytest.raises(UnknownModelError, match="timm:convnext_tiny") as caught:
        load_model("timm:convnxt_tiny")
    assert caught.value.exit_code == 2
    with pytest.raises(UnknownModelError, match=r"resnet18\.a1_in1k"):
        load_model("timm:resnet18.no_such_tag")


@pytest.mark.parametrize("model", ["torchvision:resnet18", "timm:resnet18"])
def test_arch_refused_for_a_named_model(model: str) -> None:
    with pytest.raises(InvalidArgumentError, match="arch is for a state dict file"):
        load_model(model, arch="timm:resnet18")


def test_timm_features_only_weights_refused(hf_cache: Path) -> None:
    with pytest.raises(ModelLoadError, match="features without a classifier head"):
        load_model("timm:vit_base_patch16_224.mae")
    assert not list(hf_cache.iterdir())  # refused before any download


def test_timm_other_imagenet_subsets_named() -> None:
    arch = _timm.architecture("convnext_tiny.fb_in22k")
    assert arch.labels is not None
    assert len(arch.labels) == 21841
    assert arch.head == "head.fc.weight"


# -- architectures for state dicts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name", "head"),
    [
        ("torchvision", "resnet18", "fc.weight"),
        ("torchvision", "mobilenet_v3_small", "classifier.3.weight"),
        ("torchvision", "squeezenet1_1", "classifier.1.weight"),  # a 1x1 convolution
        ("timm", "resnet18", "fc.weight"),
        ("timm", "convnext_tiny.fb_in1k", "head.fc.weight"),
    ],
)
def test_architecture_heads_and_class_counts(source: str, name: str, head: str) -> None:
    module: Any = {"torchvision": _torchvision, "timm": _timm}[source]
    arch = module.architecture(name)
    assert arch.head == head
    assert arch.net.state_dict()[head].shape[0] == 1000
    assert arch.labels is not None and arch.labels[144] == "pelican"
    assert not arch.net.training
    small = module.architecture(name, num_classes=10)
    assert small.head == head
    assert small.net.state_dict()[head].shape[0] == 10
    assert small.labels is None
    assert small.preprocessing == arch.preprocessing
    size = small.preprocessing.input_size
    assert size is not None
    with torch.no_grad():
        assert small.net(torch.rand(1, 3, *size)).shape == (1, 10)


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_classify_with_a_torchvision_model(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "TORCH_HOME": str(torch_home), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "trompe", "classify", "--model", "torchvision:resnet18", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result[0]["model"] == "torchvision:resnet18"
    assert len(result[0]["top"]) >= 1

    # The same logits as the library, in this process, from the same cache file.
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    clf = load_model("torchvision:resnet18")
    top = clf.predict([trompe.load_image(trompe.example_path())], k=1)[0][0]
    assert result[0]["top"][0]["index"] == top.index


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "arch"),
    [
        ("timm:resnet18.a1_in1k", "--arch timm:resnet18.a1_in1k"),
        ("torchvision:resnet18", "--arch torchvision:resnet18"),
    ],
)
def test_cli_offline_error_is_one_line(tmp_path: Path, model: str, arch: str) -> None:
    """Offline, the whole of stderr is one line naming --arch; stdout stays empty (--json)."""
    if model.startswith("torchvision") and network_reachable("download.pytorch.org"):
        pytest.skip("this machine reaches download.pytorch.org: the download would succeed")
    env = {
        **os.environ,
        "TORCH_HOME": str(tmp_path),
        "HF_HUB_CACHE": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "trompe", "classify", "--model", model, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert arch in lines[0]
