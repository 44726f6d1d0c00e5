"""trompe: adversarial images for image classifiers.

Example:
    >>> import trompe
    >>> clf = trompe.load_model()                        # EfficientNet-Lite0, ImageNet-1k
    >>> image = trompe.load_image(trompe.example_path())  # the bundled cat, RGB in [0, 1]
    >>> clf.predict(image, k=3)[0][0].label
    'tiger cat'

The public names load on first use (PEP 562): ``import trompe`` costs milliseconds, and torch is
imported by the first name that needs it, so the command line answers ``--help`` at once.
"""

import os as _os
import sys as _sys

#: Python modules and console-script names that run the ``trompe`` command line.
_PROGRAM_MODULES = ("trompe", "trompe.__main__", "trompe.cli", "trompe.cli.__main__")


def _started_as_program() -> bool:
    """Whether this import is the start of the ``trompe`` program itself (``python -m trompe``,
    ``python -m trompe.cli``, the ``trompe`` console script), not a library import."""
    argv: list[str] = getattr(_sys, "argv", None) or [""]
    if argv[0] == "-m":  # `python -m NAME` is locating NAME: which one?
        words = list(getattr(_sys, "orig_argv", ()))[1:]
        for before, word in zip(["", *words], words, strict=False):
            if word.startswith("-m") and word[2:] in _PROGRAM_MODULES:
                return True
            if word in _PROGRAM_MODULES and before.startswith("-") and before.endswith("m"):
                return True
        return False
    script = getattr(_sys.modules.get("__main__"), "__file__", None)
    if not script or _os.path.abspath(script) != _os.path.abspath(argv[0]):
        return False
    name = _os.path.basename(argv[0]).lower()
    for suffix in ("-script.pyw", "-script.py", ".exe"):
        name = name.removesuffix(suffix)
    return name == "trompe"


def _interrupted_at_start(signum: int, frame: object) -> None:
    """Ctrl-C before the command line's own handler is in place: one line and exit 130, as
    :func:`trompe.cli.main` does later. Nothing is written yet, so nothing needs unwinding: the
    process ends here (an exception could be swallowed by whatever module is being imported,
    and the run would go on as if Ctrl-C had never been pressed)."""
    try:
        _sys.stderr.write("trompe: interrupted\n")
        _sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    _os._exit(128 + signum)


# Ctrl-C in the first tenths of a second of `trompe ...` landed in the middle of an import, before
# trompe.cli.main() installs its handler, and Python printed a KeyboardInterrupt traceback. So the
# program's handler comes first, before any import that takes time (`_signal`, built in, takes
# none; `signal` would import enum). A library import changes no handler, nor does a program
# whose Ctrl-C is ignored already (started in the background) or that replaced Python's own.
if _started_as_program():
    import _signal

    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        try:  # noqa: SIM105 (contextlib is one more import before the handler)
            _signal.signal(_signal.SIGINT, _interrupted_at_start)
        except ValueError:  # not the main thread: no handler can be set
            pass

from typing import TYPE_CHECKING  # noqa: E402  (after the handler: the first slow import)

from trompe._version import __version__  # noqa: E402

# With OpenMP threads that spin while they wait, one other busy process on a small machine makes
# every torch step up to 10x slower (measured on a 2-core VM); passive waiting avoids that. Only
# before torch is loaded (OpenMP reads it then), and never over a user's own setting.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from trompe.api import (
        apply,
        attack,
        check,
        classify,
        evaluate,
        patch,
        resolve_model,
        transfer,
        universal,
    )
    from trompe.attacks import AttackResult, SweepResult, Targeted, Untargeted

    # From its own module: mypy reads `sweep` of trompe.attacks, both a submodule and a
    # function there, as a second definition inside this conditional block.
    from trompe.attacks.gradient import GradientOptions
    from trompe.attacks.sweep import sweep
    from trompe.errors import (
        AccessError,
        ImageError,
        InstallationError,
        InvalidArgumentError,
        MissingWeightsError,
        ModelOutputError,
        OutputExistsError,
        TrompeError,
        UnknownLabelError,
        UnknownModelError,
    )
    from trompe.evaluation import EvaluationReport
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
        Ensemble,
        ModelSpec,
        Prediction,
        list_models,
        load_model,
        register_model,
    )
    from trompe.transforms import parse_transforms

__all__ = [
    "DEFAULT_MODEL",
    "AccessError",
    "AttackResult",
    "Classifier",
    "Ensemble",
    "EvaluationReport",
    "GradientOptions",
    "ImageError",
    "InstallationError",
    "InvalidArgumentError",
    "Labels",
    "MissingWeightsError",
    "ModelOutputError",
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
    "apply",
    "attack",
    "center_crop_resize",
    "check",
    "classify",
    "evaluate",
    "example_path",
    "imagenet_labels",
    "list_models",
    "load_image",
    "load_images",
    "load_model",
    "parse_transforms",
    "patch",
    "quantize",
    "register_model",
    "resolve_model",
    "save_png",
    "sweep",
    "to_pil",
    "transfer",
    "universal",
]

#: Where each public name lives; the TYPE_CHECKING imports above say the same for type checkers.
_HOMES = {
    "trompe.api": (
        "apply",
        "attack",
        "check",
        "classify",
        "evaluate",
        "patch",
        "resolve_model",
        "transfer",
        "universal",
    ),
    "trompe.attacks.gradient": ("GradientOptions",),
    "trompe.transforms": ("parse_transforms",),
    "trompe.attacks": ("AttackResult", "SweepResult", "Targeted", "Untargeted", "sweep"),
    "trompe.errors": (
        "AccessError",
        "ImageError",
        "InstallationError",
        "InvalidArgumentError",
        "MissingWeightsError",
        "ModelOutputError",
        "OutputExistsError",
        "TrompeError",
        "UnknownLabelError",
        "UnknownModelError",
    ),
    "trompe.evaluation": ("EvaluationReport",),
    "trompe.images": (
        "center_crop_resize",
        "example_path",
        "load_image",
        "load_images",
        "quantize",
        "save_png",
        "to_pil",
    ),
    "trompe.labels": ("Labels", "imagenet_labels"),
    "trompe.models": (
        "DEFAULT_MODEL",
        "Classifier",
        "Ensemble",
        "ModelSpec",
        "Prediction",
        "list_models",
        "load_model",
        "register_model",
    ),
}
_LAZY = {name: module for module, names in _HOMES.items() for name in names}
#: The subpackages that ``import trompe`` used to import, so ``trompe.attacks.PGD`` still works.
_SUBMODULES = ("api", "attacks", "errors", "images", "labels", "models")


def __getattr__(name: str) -> object:
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"trompe.{name}")  # also sets it on this module
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trompe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
