"""State dict files (``load_model(path, arch=...)``): the real EfficientNet-Lite0 weights in
every usual container, other class counts and label files, and the files that must be refused:
malicious pickles (nothing they ask for may run), pickled model objects, TorchScript without
trust, damaged files. Nothing is mocked: every file is written by torch, safetensors, timm or
torchvision as a user's would be, then damaged as a bad disk or an attacker would.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import trompe
from trompe.errors import (
    InstallationError,
    InvalidArgumentError,
    MissingDependencyError,
    ModelLoadError,
    UnknownModelError,
)
from trompe.models import Classifier
from trompe.models.efficientnet_lite import LITE_CONFIGS, EfficientNetLite
from trompe.models.registry import get_spec
from trompe.models.sources._checkpoint import ARCH_REQUIRED

LITE0 = get_spec("efficientnet_lite0")
TIGER_CAT = 282


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(
        LITE0.weights_path(), map_location="cpu", weights_only=True
    )
    return state


@pytest.fixture(scope="module")
def cat() -> torch.Tensor:
    return trompe.load_image(trompe.example_path())


@pytest.fixture(scope="module")
def builtin_logits(imagenet_clf: Classifier, cat: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return imagenet_clf(cat[None])


def logits(clf: Classifier, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return clf(images)


def refused(
    path: Path, error: type[Exception] = ModelLoadError, **options: Any
) -> pytest.ExceptionInfo[Exception]:
    """Load ``path``, expect ``error``, and check its message: one line naming the file."""
    with pytest.raises(error) as info:
        trompe.load_model(str(path), **options)
    message = str(info.value)
    assert "\n" not in message, message
    assert path.name in message, message
    return info


# -- the real weights, in every usual container ----------------------------------------------------


def test_the_shipped_lite0_file_predicts_as_the_builtin(
    cat: torch.Tensor, imagenet_clf: Classifier, builtin_logits: torch.Tensor
) -> None:
    path = LITE0.weights_path()
    clf = trompe.load_model(str(path), arch="efficientnet_lite0")
    assert torch.equal(logits(clf, cat[None]), builtin_logits)
    assert clf.num_classes == 1000
    assert list(clf.labels) == list(imagenet_clf.labels)
    assert clf.preprocessing == imagenet_clf.preprocessing
    assert clf.predict(cat)[0][0].index == TIGER_CAT
    assert str(path) == clf.name


def _safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


CONTAINERS: dict[str, tuple[str, Callable[[dict[str, torch.Tensor]], Any]]] = {
    "data-parallel": (".pt", lambda s: {"state_dict": {"module." + k: v for k, v in s.items()}}),
    "lightning": (
        ".ckpt",
        lambda s: {
            "epoch": 3,
            "global_step": 1200,
            "state_dict": {"model." + k: v for k, v in s.items()},
            "lr_schedulers": [],
        },
    ),
    "training": (
        ".pth",
        lambda s: {"model_state_dict": s, "epoch": 7, "optimizer_state_dict": {"state": {}}},
    ),
    "compiled": (".bin", lambda s: {"_orig_mod." + k: v for k, v in s.items()}),
    "no batch-norm counters": (
        ".pt",
        lambda s: {k: v for k, v in s.items() if not k.endswith("num_batches_tracked")},
    ),
    "half precision": (
        ".pt",
        lambda s: {k: v.half() if v.is_floating_point() else v for k, v in s.items()},
    ),
}


def test_safetensors_gives_the_same_logits(
    tmp_path: Path,
    lite0_state: dict[str, torch.Tensor],
    cat: torch.Tensor,
    builtin_logits: torch.Tensor,
) -> None:
    path = tmp_path / "lite0.safetensors"
    _safetensors(lite0_state, path)
    clf = trompe.load_model(str(path), arch="efficientnet_lite0")
    assert torch.equal(logits(clf, cat[None]), builtin_logits)


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_usual_containers_give_the_same_logits(
    container: str,
    tmp_path: Path,
    lite0_state: dict[str, torch.Tensor],
    cat: torch.Tensor,
    builtin_logits: torch.Tensor,
) -> None:
    suffix, wrap = CONTAINERS[container]
    path = tmp_path / f"lite0{suffix}"
    torch.save(wrap(lite0_state), path)
    clf = trompe.load_model(f"file:{path}", arch="efficientnet_lite0")
    if container == "half precision":
        torch.testing.assert_close(logits(clf, cat[None]), builtin_logits, atol=0.05, rtol=0)
        assert clf.predict(cat)[0][0].index == TIGER_CAT
    else:
        assert torch.equal(logits(clf, cat[None]), builtin_logits)


def test_a_legacy_checkpoint_loads(
    tmp_path: Path,
    lite0_state: dict[str, torch.Tensor],
    cat: torch.Tensor,
    builtin_logits: torch.Tensor,
) -> None:
    path = tmp_path / "legacy.pth"
    torch.save(lite0_state, path, _use_new_zipfile_serialization=False)
    clf = trompe.load_model(str(path), arch="efficientnet_lite0")
    assert torch.equal(logits(clf, cat[None]), builtin_logits)


def test_the_format_is_read_from_the_content_not_the_suffix(
    tmp_path: Path,
    lite0_state: dict[str, torch.Tensor],
    cat: torch.Tensor,
    builtin_logits: torch.Tensor,
) -> None:
    path = tmp_path / "actually-safetensors.bin"
    _safetensors(lite0_state, path)
    clf = trompe.load_model(str(path), arch="efficientnet_lite0")
    assert torch.equal(logits(clf, cat[None]), builtin_logits)


# -- arch -----------------------------------------------------------------------------------------


def test_a_state_dict_without_arch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        trompe.load_model(str(LITE0.weights_path()))
    assert str(info.value) == ARCH_REQUIRED
    assert ARCH_REQUIRED == (
        "a state dict holds weights only; name the network with --arch "
        "(timm:resnet18, torchvision:resnet50, efficientnet_lite0)"
    )
    assert info.value.exit_code == 2


def test_unknown_archs_are_refused() -> None:
    path = str(LITE0.weights_path())
    with pytest.raises(UnknownModelError, match="efficientnet_lite0"):
        trompe.load_model(path, arch="efficientnet_lite9")
    with pytest.raises(InvalidArgumentError, match="timm:NAME"):
        trompe.load_model(path, arch="keras:ResNet50")


def test_the_wrong_arch_names_a_tensor(
    tmp_path: Path, lite0_state: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "lite0.pth"
    torch.save(lite0_state, path)
    info = refused(path, arch="efficientnet_lite2")
    assert str(info.value).endswith("of efficientnet_lite2; is --arch right?")


# -- other class counts and label files ---------------------------------------------------------


@pytest.fixture(scope="module")
def ten_classes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    net = EfficientNetLite(LITE_CONFIGS["efficientnet_lite0"], num_classes=10).eval()
    path = tmp_path_factory.mktemp("ten") / "ten.safetensors"
    _safetensors(net.state_dict(), path)
    return path, net


NAMES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_the_class_count_comes_from_the_weights(ten_classes: tuple[Path, nn.Module]) -> None:
    path, net = ten_classes
    clf = trompe.load_model(str(path), arch="efficientnet_lite0")
    assert clf.num_classes == 10
    assert list(clf.labels) == [f"class {i}" for i in range(10)]
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(clf.model(x), net(x))


def test_a_label_file_names_the_classes(
    tmp_path: Path, ten_classes: tuple[Path, nn.Module]
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    clf = trompe.load_model(str(ten_classes[0]), arch="efficientnet_lite0", labels=str(labels))
    assert clf.labels.index("frog") == 6
    assert list(clf.labels) == NAMES


def test_a_label_file_of_the_wrong_length_is_one_line(
    tmp_path: Path, ten_classes: tuple[Path, nn.Module]
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(NAMES[:9]) + "\n", encoding="utf-8")
    with pytest.raises(InvalidArgumentError) as info:
        trompe.load_model(str(ten_classes[0]), arch="efficientnet_lite0", labels=str(labels))
    message = str(info.value)
    assert "\n" not in message
    assert "10 classes" in message and "9 class names" in message


# -- malicious files: nothing they ask for runs ---------------------------------------------------


class _Touch:
    """Unpickled, it would create ``marker`` (as a malicious checkpoint runs its payload)."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self) -> tuple[Any, ...]:
        if self.how == "os.system":
            return (os.system, (f"touch {self.marker}",))
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["pathlib", "os.system"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("where", ["top", "beside the state dict", "inside the state dict"])
def test_a_malicious_pickle_is_refused_and_runs_nothing(
    tmp_path: Path, how: str, legacy: bool, where: str
) -> None:
    marker = tmp_path / "MARKER"
    payload = _Touch(marker, how)
    state: Any = {
        "top": payload,
        "beside the state dict": {"state_dict": {"w": torch.zeros(2)}, "hparams": payload},
        "inside the state dict": {"_fc.weight": torch.zeros(2), "_fc.bias": payload},
    }[where]
    path = tmp_path / "evil.ckpt"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    info = refused(path, arch="efficientnet_lite0")
    assert "which is not data" in str(info.value)
    assert not marker.exists()


class _SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(-2, -1)))


def test_a_pickled_model_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(_SmallNet(), path)
    info = refused(path, arch="efficientnet_lite0")
    assert str(info.value) == (
        f"cannot load model '{path}': this file is a pickled model object, not a state dict; "
        "save `model.state_dict()` (torch.save) or safetensors"
    )


@pytest.fixture
def torchscript(tmp_path: Path) -> tuple[Path, torch.jit.ScriptModule]:
    with warnings.catch_warnings():  # torch.jit is deprecated; users still have such files
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.script(_SmallNet().eval())
    path = tmp_path / "scripted.pt"
    net.save(str(path))
    return path, net


def test_torchscript_is_refused_without_trust(
    torchscript: tuple[Path, torch.jit.ScriptModule],
) -> None:
    path = torchscript[0]
    for arch in ("efficientnet_lite0", None):
        info = refused(path, arch=arch)
        assert str(info.value) == (
            f"cannot load model '{path}': it is a TorchScript archive; TorchScript runs code of "
            "its own; pass trust_torchscript=True (CLI: --trust-torchscript) if you trust this "
            "file, or save a state dict"
        )


def test_trusted_torchscript_loads_and_predicts(
    torchscript: tuple[Path, torch.jit.ScriptModule],
) -> None:
    path, net = torchscript
    clf = trompe.load_model(str(path), trust_torchscript=True, input_size=32)
    assert clf.num_classes == 4 and clf.input_size == (32, 32)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(clf(x), net(x))
    assert len(clf.predict(x[0], k=2)[0]) == 2


# -- damaged files: one line each, naming the file and the tensor ------------------------------


def _truncated(path: Path, state: dict[str, torch.Tensor]) -> None:
    torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_safetensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    _safetensors(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _with(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[..., None]:
    def write(path: Path, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        change(state)
        torch.save(state, path)

    return write


def _nan(state: dict[str, torch.Tensor]) -> None:
    weight = state["_blocks.3._project_conv.weight"].clone()
    weight[1, 2, 0, 0] = float("nan")
    state["_blocks.3._project_conv.weight"] = weight


def _inf(state: dict[str, torch.Tensor]) -> None:
    state["_fc.bias"] = torch.full_like(state["_fc.bias"], float("inf"))


DAMAGED: dict[str, tuple[str, Callable[[Path, dict[str, torch.Tensor]], None], str]] = {
    "truncated": (".pth", _truncated, "maybe truncated"),
    "truncated safetensors": (".safetensors", _truncated_safetensors, "not a readable safetensors"),
    "empty": (".pth", lambda p, s: p.write_bytes(b""), "the file is empty"),
    "empty safetensors": (".safetensors", lambda p, s: p.write_bytes(b""), "the file is empty"),
    "text": (".pth", lambda p, s: p.write_text("hello, world\n"), "not a PyTorch checkpoint"),
    "nan": (".pth", _with(_nan), "NaN or infinite values in _blocks.3._project_conv.weight"),
    "inf": (".pth", _with(_inf), "NaN or infinite values in _fc.bias"),
    "missing key": (
        ".pth",
        _with(lambda s: s.pop("_blocks.5._bn1.running_var")),
        "lacks the tensor _blocks.5._bn1.running_var",
    ),
    "unexpected key": (
        ".pth",
        _with(lambda s: s.update({"_fc2.weight": torch.zeros(3)})),
        "holds a tensor _fc2.weight",
    ),
    "wrong shape": (
        ".pth",
        _with(lambda s: s.update({"_bn0.weight": torch.ones(33)})),
        "_bn0.weight of shape (33,), where efficientnet_lite0 has (32,)",
    ),
    "not a dict": (".pt", lambda p, s: torch.save([torch.zeros(2)], p), "holds a list"),
    "not tensors": (
        ".pt",
        lambda p, s: torch.save({"epoch": 3, "lr": 0.1}, p),
        "its entry 'epoch' is int, not a tensor",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_a_damaged_file_is_one_line(
    damage: str, tmp_path: Path, lite0_state: dict[str, torch.Tensor]
) -> None:
    suffix, write, words = DAMAGED[damage]
    path = tmp_path / f"weights{suffix}"
    write(path, lite0_state)
    info = refused(path, arch="efficientnet_lite0")
    assert words in str(info.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    info = refused(tmp_path / "nowhere.safetensors", arch="efficientnet_lite0")
    assert "no such file" in str(info.value)


def test_safetensors_missing_is_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, ten_classes: tuple[Path, nn.Module]
) -> None:
    find_spec = importlib.util.find_spec

    def without_safetensors(name: str, *args: Any) -> Any:
        return None if name == "safetensors" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_safetensors)
    with pytest.raises(MissingDependencyError) as info:
        trompe.load_model(str(ten_classes[0]), arch="efficientnet_lite0")
    assert str(info.value).endswith("run `pip install 'trompe[safetensors]'`")


# -- torch older than 2.10 ------------------------------------------------------------------------


def test_torch_older_than_2_10_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch, "__version__", "2.9.1")
    for name, arch in (
        (str(LITE0.weights_path()), "efficientnet_lite0"),
        ("efficientnet_lite0", None),
    ):
        with pytest.raises(InstallationError) as info:
            trompe.load_model(name, arch=arch)
        assert "torch 2.9.1 is too old" in str(info.value)
        assert ">= 2.10" in str(info.value) and "\n" not in str(info.value)
    from trompe.cli import main

    assert main(["classify"]) == 1
    err = capsys.readouterr().err
    assert "torch 2.9.1 is too old" in err and ">= 2.10" in err


# -- timm and torchvision architectures (their modules come from another branch) -------------------


def _needs_source(prefix: str) -> None:
    if importlib.util.find_spec(f"trompe.models.sources._{prefix}") is None:
        pytest.skip(f"trompe.models.sources._{prefix} is not in this tree yet")


def _timm_resnet18() -> nn.Module:
    import timm

    net: nn.Module = timm.create_model("resnet18", pretrained=False, num_classes=7)
    return net


def _torchvision_resnet18() -> nn.Module:
    import torchvision

    net: nn.Module = torchvision.models.resnet18(weights=None, num_classes=7)
    return net


@pytest.mark.parametrize("prefix", ["timm", "torchvision"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_resnet18_state_dict_of_timm_or_torchvision(
    prefix: str, suffix: str, tmp_path: Path
) -> None:
    _needs_source(prefix)
    net = {"timm": _timm_resnet18, "torchvision": _torchvision_resnet18}[prefix]().eval()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        _safetensors(net.state_dict(), path)
    else:
        torch.save(net.state_dict(), path)
    clf = trompe.load_model(str(path), arch=f"{prefix}:resnet18")
    assert clf.num_classes == 7
    assert list(clf.labels) == [f"class {i}" for i in range(7)]
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(clf.model(x), net(x))


@pytest.mark.parametrize("prefix", ["timm", "torchvision"])
def test_a_resnet18_state_dict_for_the_wrong_arch_is_one_line(prefix: str, tmp_path: Path) -> None:
    _needs_source(prefix)
    other = {"timm": _torchvision_resnet18, "torchvision": _timm_resnet18}[prefix]
    path = tmp_path / "resnet18.pth"
    state = other().state_dict()
    state["extra.weight"] = torch.zeros(1)  # timm's and torchvision's resnet18 keys agree
    torch.save(state, path)
    refused(path, arch=f"{prefix}:resnet18")
