"""Models: the Classifier that every attack talks to, built-in architectures, the registry."""

from trompe.models.classifier import Classifier, Prediction
from trompe.models.efficientnet_lite import EfficientNetLite
from trompe.models.registry import (
    DEFAULT_MODEL,
    ModelSpec,
    get_spec,
    list_models,
    load_model,
    register_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "Classifier",
    "EfficientNetLite",
    "ModelSpec",
    "Prediction",
    "get_spec",
    "list_models",
    "load_model",
    "register_model",
]
