"""The layers of trompe: each imports only those below it (the contract in pyproject.toml).

``cli | web -> api -> evaluate -> attacks -> report -> models -> leaves -> _files -> errors``.
The import-linter contracts run here, so a plain pytest (and CI) guards them, on this checkout's
``src``; a copy of the package with one upward import added must break them, so these tests can
fail. matplotlib stays out of ``import trompe.attacks`` and ``import trompe.report``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="the layer contract needs import-linter (extra: test)")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CONFIG = ROOT / "pyproject.toml"


def on_path(src: Path) -> dict[str, str]:
    """The environment with ``src`` first on the import path."""
    path = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the package under ``src`` with the contracts of pyproject.toml."""
    code = (
        "from importlinter.cli import lint_imports_command; "
        f"lint_imports_command([{'--no-cache'!r}, {'--no-logo'!r}, {str(CONFIG)!r}])"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=on_path(src), timeout=120
    )


def test_the_layer_contracts_are_kept() -> None:
    run = lint_imports(SRC)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "trompe layers KEPT" in run.stdout
    assert "matplotlib only in report.figure KEPT" in run.stdout


# (file in src/trompe, code appended, what the broken contract reports)
NOT_ALLOWED = "{} is not allowed to import {}"
UPWARD = [
    (
        "models/classifier.py",
        "from trompe.attacks import PGD",
        NOT_ALLOWED.format("trompe.models", "trompe.attacks"),
    ),
    (
        "attacks/goal.py",
        "from trompe.api import attack",
        NOT_ALLOWED.format("trompe.attacks", "trompe.api"),
    ),
    # A type-only import counts too: the report reads results through its own protocols.
    (
        "report/record.py",
        "import typing\n"
        "if typing.TYPE_CHECKING:\n"
        "    from trompe.attacks.result import AttackResult",
        NOT_ALLOWED.format("trompe.report", "trompe.attacks"),
    ),
    (
        "report/_types.py",
        "from trompe.attacks.goal import Goal",
        NOT_ALLOWED.format("trompe.report", "trompe.attacks"),
    ),
    (
        "images.py",
        "from trompe.models import Classifier",
        NOT_ALLOWED.format("trompe.images", "trompe.models"),
    ),
    # The modules of one layer that `|` separates are independent.
    (
        "images.py",
        "from trompe.labels import Labels",
        NOT_ALLOWED.format("trompe.images", "trompe.labels"),
    ),
    (
        "_files.py",
        "from trompe.images import quantize",
        NOT_ALLOWED.format("trompe._files", "trompe.images"),
    ),
    (
        "errors.py",
        "from trompe._files import short_reason",
        NOT_ALLOWED.format("trompe.errors", "trompe._files"),
    ),
    ("report/save.py", "import matplotlib.pyplot", "trompe.report.save -> matplotlib"),
]


@pytest.mark.parametrize(("path", "code", "message"), UPWARD, ids=[u[2] for u in UPWARD])
def test_an_upward_import_breaks_the_contract(
    tmp_path: Path, path: str, code: str, message: str
) -> None:
    copy = tmp_path / "src" / "trompe"
    shutil.copytree(SRC / "trompe", copy, ignore=shutil.ignore_patterns("data", "__pycache__"))
    target = copy / path
    assert target.is_file(), f"{path} moved: update this test"
    # import-linter reads the source without running it, so the import can go anywhere.
    target.write_text(target.read_text() + "\n" + code + "\n")
    run = lint_imports(tmp_path / "src")
    assert run.returncode != 0, run.stdout
    assert "BROKEN" in run.stdout
    assert message in run.stdout, run.stdout


@pytest.mark.parametrize("module", ["trompe.attacks", "trompe.report"])
def test_importing_does_not_load_matplotlib(module: str) -> None:
    code = (
        f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('matplotlib')))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
