"""Models: the Classifier that every attack talks to, built-in architectures, the registry.

The registry loads at once and without torch (``trompe models`` lists it in a blink); the
classes that are torch modules load on first use (PEP 562).
"""

from typing import TYPE_CHECKING

from trompe.models.registry import (
    DEFAULT_MODEL,
    ModelSpec,
    get_spec,
    list_models,
    load_model,
    register_model,
)

if TYPE_CHECKING:
    from trompe.models.classifier import Classifier, Prediction
    from trompe.models.efficientnet_lite import EfficientNetLite
    from trompe.models.ensemble import Ensemble

__all__ = [
    "DEFAULT_MODEL",
    "Classifier",
    "EfficientNetLite",
    "Ensemble",
    "ModelSpec",
    "Prediction",
    "get_spec",
    "list_models",
    "load_model",
    "register_model",
]

_LAZY = {
    "Classifier": "trompe.models.classifier",
    "Prediction": "trompe.models.classifier",
    "EfficientNetLite": "trompe.models.efficientnet_lite",
    "Ensemble": "trompe.models.ensemble",
}


#: The submodules that ``import trompe.models`` used to import (``trompe.models.classifier``).
_SUBMODULES = ("classifier", "efficientnet_lite", "ensemble")


def __getattr__(name: str) -> object:
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"trompe.models.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trompe.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
