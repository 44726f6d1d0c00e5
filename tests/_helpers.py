"""Helpers shared by the test modules (fixtures live in ``conftest.py``).

Imported as ``from _helpers import ...``: pytest's default (prepend) import mode puts this folder,
which has a ``conftest.py`` and no ``__init__.py``, first on ``sys.path``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from trompe.models import Classifier


class Counting(nn.Module):
    """Wraps a network; counts the images it is given and the calls that could build a graph."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.images = 0
        self.graph_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        if torch.is_grad_enabled() and x.requires_grad:
            self.graph_calls += 1
        out: torch.Tensor = self.net(x)
        return out


def counting(
    clf: Classifier, access: str = "scores", **overrides: object
) -> tuple[Classifier, Counting]:
    """:func:`counted` and its counter."""
    counted_clf = counted(clf, access, **overrides)
    return counted_clf, counter_of(counted_clf)


def counted(clf: Classifier, access: str = "scores", **overrides: object) -> Classifier:
    """``clf``'s network behind a :class:`Counting`, with its preprocessing, at ``access``.

    ``overrides``: other :class:`Classifier` arguments (``input_size=8``, ...).
    """
    options: dict[str, object] = {
        "mean": tuple(clf.mean.flatten().tolist()),
        "std": tuple(clf.std.flatten().tolist()),
        "labels": clf.labels,
        "input_size": clf.input_size,
        "crop_fraction": clf.crop_fraction,
        "interpolation": clf.interpolation,
        "name": clf.name + "-counted",
        "access": access,
    }
    options.update(overrides)
    return Classifier(Counting(clf.model), **options)  # type: ignore[arg-type]


def counter_of(clf: Classifier) -> Counting:
    """The :class:`Counting` behind a classifier made by :func:`counted`."""
    counter = clf.model
    assert isinstance(counter, Counting)
    return counter


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m trompe ARGS`` as a user runs it: stdout, stderr and the exit code."""
    return subprocess.run(
        [sys.executable, "-m", "trompe", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Check the CLI's error contract: exit ``code``, one line on stderr holding ``words``, no
    traceback, nothing on stdout; returns the line."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]
