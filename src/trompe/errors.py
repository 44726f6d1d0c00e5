"""Errors raised by trompe.

Every error that a user can cause is a :class:`TrompeError`. The subclasses also inherit the
matching built-in exception, so ``except LookupError`` or ``except ValueError`` keep working.
A message says what was expected, what arrived, and how to fix it, in one line: the command line
prints it as it is.
"""

from __future__ import annotations

__all__ = [
    "AccessError",
    "BudgetWarning",
    "GradientMaskingWarning",
    "ImageError",
    "InstallationError",
    "InvalidArgumentError",
    "MissingDependencyError",
    "MissingWeightsError",
    "ModelLoadError",
    "ModelOutputError",
    "OutputExistsError",
    "TrompeError",
    "TrompeWarning",
    "UnknownAttackError",
    "UnknownLabelError",
    "UnknownModelError",
]


class TrompeError(Exception):
    """Base class of every error that trompe raises on purpose."""

    #: Exit code of the command line: 2 for a usage error, 1 for a failure at run time.
    exit_code: int = 1


class InvalidArgumentError(TrompeError, ValueError):
    """An argument has a value outside what is allowed."""

    exit_code = 2


class UnknownModelError(TrompeError, LookupError):
    """No model is registered under the given name."""

    exit_code = 2


class UnknownLabelError(TrompeError, LookupError):
    """A class name, synonym or index matches none of the model's classes."""

    exit_code = 2


class UnknownAttackError(TrompeError, LookupError):
    """No attack is registered under the given name."""

    exit_code = 2


class MissingWeightsError(TrompeError, ImportError):
    """The package holding a model's pretrained weights is not installed."""


class MissingDependencyError(TrompeError, ImportError):
    """An optional library that a feature needs (a model source's) is not installed; the
    message is the ``pip install`` command."""


class ModelLoadError(TrompeError, OSError):
    """A model cannot be loaded: its file is unreadable, unsafe or not a model, its weights
    cannot be fetched (offline), or they do not fit the network."""


class InstallationError(TrompeError, RuntimeError):
    """A file that trompe ships or depends on is damaged or altered: reinstall it."""


class ImageError(TrompeError, OSError):
    """An image cannot be read: missing, not an image, truncated, or too large."""


class OutputExistsError(TrompeError, FileExistsError):
    """An output file exists already and ``force`` was not given."""

    exit_code = 2


class AccessError(TrompeError, PermissionError):
    """An attack asked the model for more than its access level gives (gradients, scores)."""

    exit_code = 2


class ModelOutputError(TrompeError, ValueError):
    """The model returned logits that are not finite numbers (inf or NaN): nothing can be
    judged by them, so no attack result is made of them."""


class TrompeWarning(UserWarning):
    """Base class of the warnings trompe gives: a result that is true but may mislead."""


class GradientMaskingWarning(TrompeWarning):
    """The model's gradient is zero or not finite for some images: a gradient attack learns
    nothing there, and a failed attack says little about the model's robustness."""


class BudgetWarning(TrompeWarning):
    """A budget so small that it changes nothing on 8-bit images (likely given in other units)."""
