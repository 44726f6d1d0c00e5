"""Keras 3 models on Keras' torch backend: ``keras:InceptionV3`` or ``keras:./model.keras``.

Under the torch backend a Keras model is a ``torch.nn.Module`` whose weights are torch
parameters, so gradients flow from its output to its input and every attack of trompe runs on
it. The wrapper here turns trompe's normalised NCHW batch into what the model expects
(channels last, BGR for the 'caffe'-style applications) and gives logits: a final softmax is
switched off (its input is the logits, whose softmax is the model's output), and where none can
be found an output that sums to one is turned into log-probabilities.

``keras:Name`` builds a ``keras.applications`` model with its ImageNet weights (Keras' own
download and cache, ``~/.keras/models``). ``.keras`` files load in Keras' safe mode: a Lambda
layer (pickled Python code) is refused, and so are legacy ``.h5`` files.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trompe.errors import ModelLoadError, UnknownModelError
from trompe.models.classifier import Classifier
from trompe.models.sources import LoadOptions, Preprocessing, build_classifier, load_error

__all__ = ["load"]

logger = logging.getLogger(__name__)

_FILE_HINT = (
    "save the model with model.save('model.keras') on a machine that has it, and pass "
    "--model keras:./model.keras"
)


def import_keras() -> Any:
    """Keras, on its torch backend (chosen here unless the user chose another).

    Raises:
        ModelLoadError: Keras runs, or is told to run, on another backend.
    """
    wanted = os.environ.get("KERAS_BACKEND")
    if wanted is not None and wanted.strip().lower() != "torch":
        raise ModelLoadError(
            f"Keras models run on Keras' torch backend, but KERAS_BACKEND={wanted}; "
            "set KERAS_BACKEND=torch (or unset it) and run again"
        )
    os.environ.setdefault("KERAS_BACKEND", "torch")
    already = "keras" in sys.modules
    try:
        import keras
    except ImportError as error:
        raise ModelLoadError(
            f"cannot import keras on its torch backend: {error}; run `pip install 'trompe[keras]'`"
        ) from None
    backend = keras.backend.backend()
    if backend != "torch":
        how = "was imported before trompe with" if already else "is configured for"
        raise ModelLoadError(
            f"Keras {how} the {backend} backend; trompe runs Keras models on torch: set "
            "KERAS_BACKEND=torch before Python starts"
        )
    return keras


def load(ref: str, options: LoadOptions) -> Classifier:
    """Load ``keras:<ref>``: a ``keras.applications`` name or a ``.keras`` file.

    Raises:
        UnknownModelError: neither a file nor a ``keras.applications`` name.
        ModelLoadError: a missing, legacy or unsafe file; ImageNet weights that cannot be
            fetched; a model that does not take RGB images or gives more than one output.
    """
    model_id = f"keras:{ref}"
    text = ref.strip()
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    is_path = suffix != "" or "/" in text or "\\" in text or text.startswith((".", "~"))
    keras = import_keras()
    # Keras puts new variables on its default device (a GPU where there is one); loaders
    # load on the CPU and load_model moves the classifier where the user asked.
    with keras.device("cpu"):
        if is_path:
            model = _load_file(keras, path, model_id)
            application = _application_of(keras, str(model.name))
        else:
            application = _application(keras, text)
            model = _build_application(keras, application, model_id)
        return _classifier(keras, model, application, options, model_id)


def _load_file(keras: Any, path: Path, model_id: str) -> Any:
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        raise ModelLoadError(
            f"cannot load model {model_id!r}: legacy HDF5 Keras files are refused (their "
            "loader has no safe mode); re-save it in Keras 3 with model.save('model.keras')"
        )
    if suffix != ".keras":
        raise ModelLoadError(
            f"cannot load model {model_id!r}: Keras models load from .keras files (Keras 3), "
            f"got {path.suffix or 'no suffix'!r}; re-save with model.save('model.keras')"
        )
    if not path.is_file():
        raise ModelLoadError(f"cannot load model {model_id!r}: no file {str(path)!r}")
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as error:
        if "lambda" in str(error).lower():
            raise ModelLoadError(
                f"cannot load model {model_id!r}: it holds a Lambda layer (Python code), "
                "which Keras' safe mode refuses to run; rebuild the model without Lambda "
                "layers (or with a registered custom layer) and save it again"
            ) from None
        raise load_error(
            model_id, error, "check that it is a Keras 3 model saved with model.save()"
        ) from None


def _application(keras: Any, name: str) -> str:
    known = [n for n in dir(keras.applications) if n[:1].isupper()]
    if name in known:
        return name
    lower = {n.lower(): n for n in known}
    close = lower.get(name.lower()) or next(iter(difflib.get_close_matches(name, known, n=1)), None)
    hint = f"did you mean keras:{close}? " if close else ""
    raise UnknownModelError(
        f"unknown Keras application {name!r}; {hint}Keras has {', '.join(known)}, "
        "or pass a file: keras:./model.keras"
    )


@contextmanager
def _quiet(keras: Any) -> Iterator[None]:
    """Keras prints its download messages to stdout; the library never prints."""
    config = keras.config
    was = config.is_interactive_logging_enabled()
    config.disable_interactive_logging()
    try:
        yield
    finally:
        if was:
            config.enable_interactive_logging()


def _build_application(keras: Any, name: str, model_id: str) -> Any:
    build = getattr(keras.applications, name)
    try:
        with _quiet(keras):
            return build(weights="imagenet")
    except Exception as error:
        raise load_error(
            model_id,
            error,
            f"its ImageNet weights could not be fetched (Keras caches them in "
            f"~/.keras/models); {_FILE_HINT}",
        ) from None


def _application_names(keras: Any) -> dict[str, str]:
    """The default model name of each application (``inception_v3``) -> its Keras name."""
    names: dict[str, str] = {}
    for attr in dir(keras.applications):
        if not attr[:1].isupper():
            continue
        try:
            default = inspect.signature(getattr(keras.applications, attr)).parameters.get("name")
        except (TypeError, ValueError):
            continue
        if default is not None and isinstance(default.default, str):
            names[default.default.lower()] = attr
    return names


def _application_of(keras: Any, model_name: str) -> str | None:
    """The application that a saved model was built as, recognised by its default name."""
    name = model_name.lower()
    match = re.fullmatch(r"(mobilenet|mobilenetv2)_[\d.]+_\d+", name)
    if match:
        return "MobileNet" if match.group(1) == "mobilenet" else "MobileNetV2"
    return _application_names(keras).get(name)


def _probe_preprocessing(keras: Any, application: str) -> tuple[Preprocessing, bool] | None:
    """The application's ``preprocess_input`` as a per-channel affine map of [0, 1] RGB.

    Returns the preprocessing and whether the network wants BGR; None when the function is
    not a per-channel affine map with positive scales (never seen in Keras so far).
    """
    import numpy as np

    module = importlib.import_module(getattr(keras.applications, application).__module__)
    prepare: Callable[[Any], Any] | None = getattr(module, "preprocess_input", None)
    if prepare is None:
        return None
    probes = np.zeros((5, 1, 1, 3), dtype="float32")
    for c in range(3):
        probes[1 + c, 0, 0, c] = 255.0
    probes[4] = 128.0
    out = np.asarray(prepare(probes.copy()), dtype="float64").reshape(5, 3)
    offset = out[0]
    perm = [-1, -1, -1]
    scale = [0.0, 0.0, 0.0]
    for c in range(3):
        moved = np.nonzero(np.abs(out[1 + c] - offset) > 1e-6)[0]
        if len(moved) != 1:
            return None
        k = int(moved[0])
        perm[k] = c
        scale[k] = float(out[1 + c, k] - offset[k]) / 255.0
    if sorted(perm) != [0, 1, 2] or min(scale) <= 0:
        return None
    if not np.allclose(out[4], np.array(scale) * 128.0 + offset, atol=1e-4):
        return None
    if perm not in ([0, 1, 2], [2, 1, 0]):
        return None
    # The network sees scale * 255 * v + offset; trompe computes (v - mean) / std.
    std = [0.0, 0.0, 0.0]
    mean = [0.0, 0.0, 0.0]
    for k in range(3):
        c = perm[k]
        std[c] = 1.0 / (255.0 * scale[k])
        mean[c] = -float(offset[k]) * std[c]
    return (
        Preprocessing(
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            crop_fraction=1.0,
            interpolation="bilinear",
        ),
        perm == [2, 1, 0],
    )


def _rescaling_input(model: Any) -> bool:
    """Whether the model starts with a Rescaling layer of about 1/255 or 1/127.5: it takes
    0-255 pixels (the convention of Keras' own tutorials)."""
    for layer in getattr(model, "layers", [])[:3]:
        if type(layer).__name__ == "InputLayer":
            continue
        if type(layer).__name__ == "Rescaling":
            scale = getattr(layer, "scale", None)
            try:
                value = float(scale) if scale is not None else 0.0
            except (TypeError, ValueError):
                return False
            return any(abs(value - s) < 1e-6 for s in (1 / 255, 1 / 127.5))
        return False
    return False


def _switch_off_softmax(keras: Any, model: Any) -> bool:
    """Make a final softmax (a Dense layer's activation or an Activation layer) linear."""
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    last = layers[-1]
    activation = getattr(last, "activation", None)
    if activation is None:
        return False
    if getattr(activation, "__name__", "") != "softmax":
        return False
    last.activation = keras.activations.linear
    return True


class KerasLogits(nn.Module):
    """A Keras model (torch backend) as a module from normalised NCHW RGB to logits.

    Args:
        model: the Keras model (a ``torch.nn.Module`` under the torch backend).
        channels_last: permute to NHWC before the model.
        bgr: flip the channels to BGR ('caffe'-style applications).
        log_probs: the model outputs probabilities: return their logarithm.
    """

    def __init__(
        self, model: Any, *, channels_last: bool, bgr: bool, log_probs: bool = False
    ) -> None:
        super().__init__()
        import keras

        self.model = model
        # Keras moves every tensor it converts to its current device: keep that the device of
        # the images (and of the weights, which follow the classifier's .to()).
        self._device_scope: Callable[[str], Any] = keras.device
        self.channels_last = channels_last
        self.bgr = bgr
        self.log_probs = log_probs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flip(1) if self.bgr else images
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        with self._device_scope(str(images.device)):
            out = self.model(x, training=False)
        if not isinstance(out, torch.Tensor):
            raise ModelLoadError("the Keras model returned several outputs; trompe needs one")
        if self.log_probs:
            out = out.clamp_min(torch.finfo(out.dtype).tiny).log()
        return out


def _classifier(
    keras: Any, model: Any, application: str | None, options: LoadOptions, model_id: str
) -> Classifier:
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"cannot load model {model_id!r}: the Keras model is not a torch module; set "
            "KERAS_BACKEND=torch before Python starts"
        )
    inputs = getattr(model, "inputs", None) or []
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: it has {len(inputs)} inputs and "
            f"{len(outputs)} outputs; trompe needs one image input and one class output"
        )
    keras_model: Any = model  # typed as a torch module above, Keras' attributes below
    shape = tuple(keras_model.input_shape)
    out_shape = tuple(keras_model.output_shape)
    if len(shape) != 4 or 3 not in (shape[-1], shape[1]) or len(out_shape) != 2:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: it takes {shape} and gives {out_shape}; trompe "
            "needs (batch, height, width, 3) RGB images in and (batch, classes) out"
        )
    channels_last = shape[-1] == 3
    side = shape[1:3] if channels_last else shape[2:4]
    input_size = (int(side[0]), int(side[1])) if None not in side else None
    num_classes = int(out_shape[-1]) if out_shape[-1] is not None else None

    bgr = False
    preprocessing = Preprocessing(input_size=input_size)
    probed = _probe_preprocessing(keras, application) if application else None
    if probed is not None:
        base, bgr = probed
        preprocessing = Preprocessing(
            mean=base.mean,
            std=base.std,
            input_size=input_size,
            crop_fraction=1.0,
            interpolation="bilinear",
        )
        logger.info("%s: preprocessing of keras.applications.%s", model_id, application)
    elif _rescaling_input(model):
        preprocessing = Preprocessing(std=(1 / 255,) * 3, input_size=input_size)
        logger.info("%s: starts with a Rescaling layer, fed 0-255 pixels", model_id)
    else:
        logger.info("%s: unknown preprocessing, fed pixels in [0, 1]", model_id)

    log_probs = False
    if not _switch_off_softmax(keras, model):
        log_probs = _outputs_probabilities(model, input_size, channels_last)
    net = KerasLogits(model, channels_last=channels_last, bgr=bgr, log_probs=log_probs)

    labels = None
    if application is not None and num_classes == 1000:
        from trompe.labels import imagenet_labels

        labels = imagenet_labels()
    return build_classifier(
        net, preprocessing, options, name=model_id, labels=labels, num_classes=num_classes
    )


def _outputs_probabilities(model: Any, size: tuple[int, int] | None, channels_last: bool) -> bool:
    """Whether the model's outputs are probability vectors (non-negative, summing to one)."""
    h, w = size or (32, 32)
    shape = (2, h, w, 3) if channels_last else (2, 3, h, w)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = model(torch.rand(shape, generator=generator), training=False)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return False
    return bool((out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(2), atol=1e-4))
