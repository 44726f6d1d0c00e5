"""Test set-up for machines whose torchvision does not match their torch (never library code).

On the development machines, torch is a local CPU build and PyPI's torchvision beside it a CUDA
build: its compiled operators fail to load, and ``import torchvision`` (and so timm,
transformers, onnx2torch) stops at "operator torchvision::nms does not exist". The models and
transforms work once the two operator schemas that torchvision's Python code registers fake
kernels for are defined. This module defines them just before torchvision is first imported,
and only when torchvision's own compiled library cannot load; with a matching pair it does
nothing.

The test suite calls :func:`install` from its conftest; subprocesses that the tests start find
this folder on ``PYTHONPATH`` and Python runs it as ``sitecustomize`` at start-up. Installing
costs nothing: torch loads only when something imports torchvision.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARIES: list[object] = []  # keeps the torch.library.Library alive


def _prepare() -> None:
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = Path(next(iter(spec.submodule_search_locations)))
    for path in sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd")):
        try:
            torch.ops.load_library(str(path))
        except (OSError, RuntimeError):
            continue
    try:
        torch.ops.torchvision.nms  # noqa: B018 - defined by torchvision's own library
        return
    except (AttributeError, RuntimeError):
        pass
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _LIBRARIES.append(library)


class _PrepareFirst(importlib.abc.Loader):
    """torchvision's own loader, with the operators prepared just before its code runs."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> object:  # get_resource_reader, is_package...
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        for finder in [f for f in sys.meta_path if isinstance(f, _BeforeTorchvision)]:
            sys.meta_path.remove(finder)
        _prepare()
        self.loader.exec_module(module)


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    # Only an import runs _prepare (which imports torch): importlib.util.find_spec, which
    # `trompe models` calls to tell whether a source is installed, must stay torch-free.
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torchvision":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PrepareFirst(spec.loader)
                return spec
        return None


def install() -> None:
    """Prepare torchvision's operators when it is first imported (idempotent)."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


install()
