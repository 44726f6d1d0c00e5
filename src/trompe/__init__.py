"""trompe: adversarial images for image classifiers.

Example:
    >>> import trompe
    >>> clf = trompe.load_model()                        # EfficientNet-Lite0, ImageNet-1k
    >>> image = trompe.load_image(trompe.example_path())  # the bundled cat, RGB in [0, 1]
    >>> clf.predict(image, k=3)[0][0].label
    'tiger cat'
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# With OpenMP threads that spin while they wait, one other busy process on a small machine makes
# every torch step up to 10x slower (measured on a 2-core VM); passive waiting avoids that. Only
# before torch is loaded (OpenMP reads it then), and never over a user's own setting.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from trompe.api import attack, classify, resolve_model
from trompe.attacks import AttackResult, SweepResult, Targeted, Untargeted, sweep
from trompe.errors import (
    AccessError,
    ImageError,
    InvalidArgumentError,
    MissingWeightsError,
    OutputExistsError,
    TrompeError,
    UnknownLabelError,
    UnknownModelError,
)
from trompe.images import (
    center_crop_resize,
    example_path,
    load_image,
    load_images,
    quantize,
    save_png,
    to_pil,
)
from trompe.labels import Labels, imagenet_labels
from trompe.models import (
    DEFAULT_MODEL,
    Classifier,
    ModelSpec,
    Prediction,
    list_models,
    load_model,
    register_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "AccessError",
    "AttackResult",
    "Classifier",
    "ImageError",
    "InvalidArgumentError",
    "Labels",
    "MissingWeightsError",
    "ModelSpec",
    "OutputExistsError",
    "Prediction",
    "SweepResult",
    "Targeted",
    "TrompeError",
    "UnknownLabelError",
    "UnknownModelError",
    "Untargeted",
    "__version__",
    "attack",
    "center_crop_resize",
    "classify",
    "example_path",
    "imagenet_labels",
    "list_models",
    "load_image",
    "load_images",
    "load_model",
    "quantize",
    "register_model",
    "resolve_model",
    "save_png",
    "sweep",
    "to_pil",
]
