"""The package's import surface: every public name resolves, and importing is light.

``import trompe`` resolves its public names on first use (PEP 562), so that the command line
parses its arguments, prints its help and lists models and classes without loading torch or
matplotlib. The checks on what gets imported run in a fresh interpreter: this one has loaded
torch long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import trompe

HEAVY = ("torch", "matplotlib", "numpy", "PIL")


def loaded_after(code: str) -> dict[str, bool]:
    """Which heavy modules a fresh interpreter has in ``sys.modules`` after running ``code``."""
    report = f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    probe = f"{code}\nimport json, sys\n{report}"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("name", trompe.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(trompe, name)
    assert value is not None
    namespace: dict[str, object] = {}
    exec(f"from trompe import {name}", namespace)
    assert namespace[name] is value
    assert name in dir(trompe)


def test_public_names_are_the_real_objects() -> None:
    from trompe.api import attack
    from trompe.models.classifier import Classifier

    assert trompe.attack is attack and trompe.Classifier is Classifier
    assert trompe.sweep.__module__ == "trompe.attacks.sweep"  # the function, not the module


def test_unknown_names_are_attribute_errors() -> None:
    import trompe.models

    with pytest.raises(AttributeError, match="no attribute 'frobnicate'"):
        trompe.frobnicate  # noqa: B018
    with pytest.raises(ImportError):
        exec("from trompe import frobnicate", {})
    assert not hasattr(trompe.models, "frobnicate")


def test_the_subpackages_are_reached_from_the_package_as_before() -> None:
    """`import trompe` used to import these; code that reads them through it keeps working."""
    probe = (
        "import trompe\n"
        "assert trompe.attacks.PGD.name == 'pgd'\n"
        "assert trompe.models.classifier.Classifier is trompe.Classifier\n"
        "assert callable(trompe.api.attack) and callable(trompe.images.load_image)\n"
        "assert trompe.labels.Labels and trompe.errors.TrompeError\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_import_trompe_and_its_cli_load_neither_torch_nor_matplotlib() -> None:
    loaded = loaded_after("import trompe, trompe.cli, trompe.units, trompe.errors")
    assert not loaded["torch"] and not loaded["matplotlib"], loaded


def test_the_model_list_and_the_labels_need_no_torch() -> None:
    loaded = loaded_after(
        "import trompe\n"
        "from trompe.models import list_models\n"
        "[spec.describe() for spec in list_models()]\n"
        "trompe.imagenet_labels().index('lemon')\n"
        "trompe.DEFAULT_MODEL, trompe.ModelSpec, trompe.TrompeError\n"
    )
    assert not loaded["torch"] and not loaded["matplotlib"], loaded


def test_a_name_that_needs_torch_loads_it() -> None:
    """The check above can fail: the same probe sees torch once a torch name is used."""
    loaded = loaded_after("import trompe\ntrompe.Classifier")
    assert loaded["torch"]


def test_the_version_has_one_source() -> None:
    from trompe._version import __version__

    assert trompe.__version__ == __version__
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["tool"]["hatch"]["version"]["path"] == "src/trompe/_version.py"


def test_the_registry_input_sizes_match_the_architectures() -> None:
    """The registry writes the EfficientNet-Lite input sizes out, so as not to import torch."""
    from trompe.models import list_models
    from trompe.models.efficientnet_lite import LITE_CONFIGS

    lite = [spec for spec in list_models() if spec.name.startswith("efficientnet_lite")]
    assert len(lite) == 3
    for spec in lite:
        size = LITE_CONFIGS[spec.name].image_size
        assert spec.input_size == (size, size)
        assert spec.crop_fraction == size / (size + 32)
        assert spec.describe()["input_size"] == [size, size]
