"""State dict files: weights only, poured into the network that ``arch`` names.

``trompe.load_model("weights.safetensors", arch="timm:resnet18")`` (CLI: ``--model
weights.safetensors --arch timm:resnet18``) builds the bare network, reads its class count from
the weights' classifier and loads the weights with strict key and shape checks. The format is
told by the file's first bytes, not its suffix: safetensors, or a PyTorch checkpoint (zip or
legacy pickle) read with ``torch.load(weights_only=True)`` and never anything else.

A checkpoint is data, never code. Whatever the weights-only unpickler refuses stays refused:
a pickled model object (``torch.save(model)``), a pickle that calls a function (what a
malicious file does), a training checkpoint that pickles custom classes. A TorchScript
archive is a program; it loads only with ``trust_torchscript=True``. Every refusal and every
defect of the user's file (empty, truncated, not a checkpoint, NaN or infinite weights,
missing, unexpected or misshapen tensors) is a one-line :class:`~trompe.errors.ModelLoadError`
that names the file and, where there is one, the tensor.
"""

from __future__ import annotations

import importlib
import io
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from trompe._files import short_reason
from trompe.errors import InvalidArgumentError, ModelLoadError
from trompe.models.sources import SOURCES, Architecture, LoadOptions, build_classifier, require

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trompe.models.classifier import Classifier

__all__ = ["ARCH_REQUIRED", "architecture", "load", "read_state_dict"]

#: The error of a state dict loaded without ``arch``.
ARCH_REQUIRED = (
    "a state dict holds weights only; name the network with --arch "
    "(timm:resnet18, torchvision:resnet50, efficientnet_lite0)"
)

#: The sources whose module exposes ``architecture(name, num_classes=None)``.
ARCH_SOURCES = ("timm", "torchvision")

#: Where training scripts keep the model's weights in a checkpoint, most likely first; the
#: exponential-moving-average copies come last, used only when nothing else is there.
_CONTAINER_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "network",
    "weights",
    "state_dict_ema",
    "model_ema",
    "ema",
)

#: Prefixes that wrappers add to every key: DataParallel / DDP, torch.compile, Lightning.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")

_SAVE_HINT = "save `model.state_dict()` (torch.save) or safetensors"

_TORCHSCRIPT_HINT = (
    "TorchScript runs code of its own; pass trust_torchscript=True (CLI: --trust-torchscript) "
    "if you trust this file, or save a state dict"
)


def _reason(error: BaseException) -> str:
    """The first sentence of a library's error (torch's go on for a paragraph)."""
    return short_reason(error).split(". ")[0].rstrip(".")


def _error(path: Path, what: str) -> ModelLoadError:
    return ModelLoadError(f"cannot load model '{path}': {what}")


# -- the built-in networks as architectures ------------------------------------------------------


def architecture(name: str, num_classes: int | None = None) -> Architecture:
    """A built-in network (``efficientnet_lite0``) with random weights, for a state dict.

    Args:
        name: a built-in model name (see :func:`trompe.list_models`).
        num_classes: the width of the classifier; None keeps ImageNet's 1000.

    Raises:
        UnknownModelError: no built-in model of that name.
    """
    from trompe.labels import imagenet_labels
    from trompe.models.efficientnet_lite import EfficientNetLite
    from trompe.models.registry import builtin_preprocessing, get_spec

    spec = get_spec(name)
    net = spec.build()
    if num_classes is not None and num_classes != 1000:
        if not isinstance(net, EfficientNetLite):  # pragma: no cover - every built-in is Lite
            raise InvalidArgumentError(f"the built-in {spec.name!r} has 1000 classes only")
        net = EfficientNetLite(net.config, num_classes=num_classes)
    net.eval()
    return Architecture(
        net=net,
        preprocessing=builtin_preprocessing(spec),
        labels=imagenet_labels() if num_classes in (None, 1000) else None,
        head="_fc.weight",
    )


def _architecture(arch: str, num_classes: int | None = None) -> tuple[str, Architecture]:
    """The network that ``arch`` names; returns a display name and the Architecture."""
    prefix, sep, name = arch.strip().partition(":")
    if not sep:
        from trompe.models.registry import get_spec

        spec = get_spec(arch)  # UnknownModelError lists the built-ins
        return spec.name, architecture(spec.name, num_classes)
    prefix = prefix.lower()
    if prefix not in ARCH_SOURCES or not name:
        raise InvalidArgumentError(
            f"unknown arch {arch!r}; name the network as timm:NAME, torchvision:NAME or a "
            "built-in model (efficientnet_lite0)"
        )
    require(SOURCES[prefix])
    module_name = f"trompe.models.sources._{prefix}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise InvalidArgumentError(
            f"arch {arch!r}: this version of trompe cannot build {prefix} networks"
        ) from None
    built: Architecture = module.architecture(name, num_classes)
    return f"{prefix}:{name}", built


# -- reading the file ------------------------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80


def _looks_like_safetensors(head: bytes) -> bool:
    # 8 bytes of little-endian header length, then the JSON header.
    return len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def _is_torchscript(file: IO[bytes]) -> bool:
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    finally:
        file.seek(0)
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _pickles(file: IO[bytes]) -> Iterator[bytes]:
    """The raw pickles of a checkpoint (read, never run): the zip's ``data.pkl``, or the
    first pickles of a legacy file."""
    try:
        with zipfile.ZipFile(file) as archive:
            for name in archive.namelist():
                if name.endswith("data.pkl"):
                    yield archive.read(name)
            return
    except (zipfile.BadZipFile, OSError, ValueError):
        pass
    finally:
        file.seek(0)
    data = file.read()
    file.seek(0)
    yield data


def _pickle_strings(file: IO[bytes]) -> set[str]:
    """The strings and global names of a checkpoint's pickles, found by parsing the opcodes
    with :mod:`pickletools` (nothing is imported or called)."""
    found: set[str] = set()
    for data in _pickles(file):
        stream = io.BytesIO(data)
        for _ in range(5):  # a legacy file holds a few pickles in a row, then raw storages
            try:
                for op, arg, _pos in pickletools.genops(stream):
                    if isinstance(arg, str):
                        found.add(arg)
                    if op.name == "STOP":
                        break
            except Exception:  # garbage after the pickles; what was read counts
                break
    return found


def _refused_global(error: BaseException) -> str | None:
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    return match.group(1) if match else None


def _read_torch(path: Path, file: IO[bytes]) -> Any:
    import pickle

    import torch

    try:
        # weights_only: the file is data, never code, and there is no fallback. torch's
        # warnings about odd pickles would print its own paths; the outcome is one error.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        strings = _pickle_strings(file)
        if {"_modules", "_parameters"} <= strings:
            raise _error(
                path, f"this file is a pickled model object, not a state dict; {_SAVE_HINT}"
            ) from None
        name = _refused_global(error)
        if name is None and "weights only" not in str(error).lower():
            raise _error(
                path, f"not a readable PyTorch checkpoint, maybe truncated ({_reason(error)})"
            ) from None
        what = f"asks for {name}" if name else "holds more than data"
        raise _error(
            path,
            f"its pickle {what}, which is not data; a state dict holds tensors only, and "
            f"trompe loads nothing else (weights_only); {_SAVE_HINT}",
        ) from None
    except Exception as error:  # a truncated zip, a damaged pickle, ...
        raise _error(
            path,
            f"not a readable PyTorch checkpoint, maybe truncated ({_reason(error)})",
        ) from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    require(SOURCES["file"], "safetensors")
    from safetensors.torch import load_file

    try:
        state: dict[str, torch.Tensor] = load_file(str(path), device="cpu")
    except Exception as error:  # SafetensorError and the OSErrors of mmap
        raise _error(
            path, f"not a readable safetensors file, maybe truncated ({_reason(error)})"
        ) from None
    return state


def _unwrap(path: Path, data: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: the dict itself, or under a usual key."""
    import torch

    for _ in range(3):  # {"model": {"state_dict": ...}} at most
        if not isinstance(data, Mapping):
            break
        if data and all(isinstance(v, torch.Tensor) for v in data.values()):
            break
        inner = next(
            (data[k] for k in _CONTAINER_KEYS if isinstance(data.get(k), Mapping) and data[k]),
            None,
        )
        if inner is None:
            break
        data = inner
    if not isinstance(data, Mapping):
        raise _error(path, f"it holds a {type(data).__name__}, not a state dict of named tensors")
    if not data:
        raise _error(path, "it holds an empty state dict")
    for key, value in data.items():
        if not isinstance(key, str):
            raise _error(path, f"it holds a key {key!r} that is not a tensor name")
        if not isinstance(value, torch.Tensor):
            raise _error(
                path,
                f"its entry {key!r} is {type(value).__name__}, not a tensor; this is not a state "
                f"dict (known containers: {', '.join(_CONTAINER_KEYS)})",
            )
    return dict(data)


def _check_finite(path: Path, state: dict[str, torch.Tensor]) -> None:
    from trompe.models._weights import non_finite_key

    bad = non_finite_key(state)
    if bad is not None:
        raise _error(path, f"it holds NaN or infinite values in {bad}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a file (safetensors, or a PyTorch checkpoint read weights-only).

    Containers are unwrapped (``{"state_dict": ...}``, ``{"model": ...}``, ...); the keys are
    left as they are. Every floating-point tensor is checked to be finite.

    Raises:
        ModelLoadError: missing, empty, not a checkpoint, truncated, a TorchScript archive, a
            pickle that is refused by the weights-only loader, not a dict of tensors, or with
            NaN or infinite values.
        MissingDependencyError: a safetensors file, and safetensors is not installed.
    """
    file_path = Path(path).expanduser()
    with _open(file_path) as file:
        kind = _kind(file_path, file)
        if kind == "torchscript":
            raise _error(file_path, f"it is a TorchScript archive; {_TORCHSCRIPT_HINT}")
        data = (
            _read_safetensors(file_path) if kind == "safetensors" else _read_torch(file_path, file)
        )
    state = _unwrap(file_path, data)
    _check_finite(file_path, state)
    return state


def _open(path: Path) -> IO[bytes]:
    if path.is_dir():
        raise _error(path, "it is a folder, not a state dict file")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except OSError as error:
        raise _error(path, f"cannot be read ({_reason(error)})") from None


def _kind(path: Path, file: IO[bytes]) -> str:
    """``safetensors``, ``torchscript`` or ``torch``, from the first bytes."""
    head = file.read(16)
    file.seek(0)
    if not head:
        raise _error(path, "the file is empty")
    if head.startswith(_ZIP_MAGIC):
        return "torchscript" if _is_torchscript(file) else "torch"
    if head[0] == _PICKLE_PROTO:
        return "torch"
    if _looks_like_safetensors(head):
        return "safetensors"
    if path.suffix.lower() == ".safetensors":
        return "safetensors"  # let safetensors say what is wrong with the header
    raise _error(path, "not a PyTorch checkpoint or a safetensors file (unknown first bytes)")


# -- fitting the weights to the network ------------------------------------------------------------


def _strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop a wrapper's prefix that every key has and the network's keys lack."""
    changed = True
    while changed and not set(state) <= expected:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state) and not all(
                k.startswith(prefix) for k in expected
            ):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _load_into(path: Path, arch: str, net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = net.state_dict()
    # A batch-norm's step counter is unused in eval mode; some exporters drop it.
    for key, tensor in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = tensor
    from trompe.models._weights import more_keys, state_mismatch

    problem = state_mismatch(expected, state)
    if problem is not None:
        key, more = problem.key, more_keys(problem.how_many)
        if problem.kind == "shape":
            what = f"it holds {key} of shape {problem.got}, where {arch} has {problem.want}"
        elif problem.kind == "missing":
            what = f"it lacks the tensor {key}{more} of {arch}"
        else:
            what = f"it holds a tensor {key}{more} that {arch} lacks"
        raise _error(path, f"{what}; is --arch right?")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:  # a dtype that cannot be copied (a complex into a float)
        raise _error(path, f"its weights do not fit {arch} ({_reason(error)})") from None


def _class_count(path: Path, state: Mapping[str, torch.Tensor], head: str | None) -> int | None:
    if head is None or head not in state:
        return None  # the key check names what is missing
    tensor = state[head]
    if tensor.dim() < 1 or tensor.shape[0] < 1:
        raise _error(path, f"its classifier {head} has shape {tuple(tensor.shape)}")
    return int(tensor.shape[0])


def _torchscript(path: Path, options: LoadOptions) -> Classifier:
    import torch

    try:
        with warnings.catch_warnings():
            # torch.jit.load is deprecated in favour of torch.export; the user chose the file.
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as error:  # torch.jit's errors have no common type
        raise _error(path, f"not a readable TorchScript archive ({_reason(error)})") from None
    net.eval()
    name = str(path)
    preprocessing, labels = None, None
    if options.arch is not None:
        _, built = _architecture(options.arch)
        preprocessing, labels = built.preprocessing, built.labels
    from trompe.models.sources import Preprocessing

    effective = options.apply(preprocessing or Preprocessing())
    size = effective.input_size or (224, 224)
    try:
        with torch.no_grad():
            logits = net(torch.zeros(1, 3, *size))
        num_classes = int(logits.shape[-1])
    except Exception as error:  # the archive's own code failed
        raise _error(
            path,
            f"the TorchScript model fails on a (1, 3, {size[0]}, {size[1]}) input "
            f"({_reason(error)}); give its input size (--input-size)",
        ) from None
    if labels is not None and len(labels) != num_classes:
        labels = None
    return build_classifier(
        net,
        preprocessing or Preprocessing(),
        options,
        name=name,
        labels=labels,
        num_classes=num_classes,
    )


def load(ref: str, options: LoadOptions) -> Classifier:
    """A Classifier from a state dict file and the network that ``options.arch`` names.

    Args:
        ref: the file (``weights.safetensors``, ``.pt``, ``.pth``, ``.bin``, ``.ckpt``).
        options: ``arch`` (required, except for a trusted TorchScript archive), a label
            file, preprocessing overrides, ``trust_torchscript``.

    Raises:
        InvalidArgumentError: no ``arch``, an unknown one, or labels that do not match the
            class count.
        MissingDependencyError: the arch's source (timm, torchvision) or safetensors is not
            installed.
        ModelLoadError: the file is unsafe or unreadable, or its weights do not fit the arch.
    """
    from trompe.models.registry import check_torch

    check_torch()
    path = Path(ref).expanduser()
    with _open(path) as file:
        kind = _kind(path, file)
    if kind == "torchscript":
        if not options.trust_torchscript:
            raise _error(path, f"it is a TorchScript archive; {_TORCHSCRIPT_HINT}")
        return _torchscript(path, options)
    if options.arch is None or not options.arch.strip():
        raise InvalidArgumentError(ARCH_REQUIRED)
    arch_name, built = _architecture(options.arch)
    state = read_state_dict(path)
    state = _strip_prefixes(state, set(built.net.state_dict()))
    num_classes = _class_count(path, state, built.head)
    if num_classes is not None and num_classes != _class_count(
        path, built.net.state_dict(), built.head
    ):
        _, built = _architecture(options.arch, num_classes)
    _load_into(path, arch_name, built.net, state)
    built.net.eval()
    labels = built.labels
    if labels is not None and num_classes is not None and len(labels) != num_classes:
        labels = None
    return build_classifier(
        built.net,
        built.preprocessing,
        options,
        name=str(ref),
        labels=labels,
        num_classes=num_classes,
    )
