"""ONNX files: run in onnxruntime (scores only), or converted to torch for gradients.

``onnx:./model.onnx`` (or the bare path) loads the file into an onnxruntime session on the
CPU. onnxruntime computes no gradients, so the classifier has ``access="scores"``: score- and
label-based attacks (``square``, ``simba``, ``hop-skip-jump``...) run on it, and gradient
attacks are refused with a pointer to ``onnx_gradients=True``, which converts the graph to a
torch module with onnx2torch (access ``"gradients"``) where every operator has a converter.

The file is data, never code. Before any session exists, the graph is read without its
external data and every tensor stored outside the file (initializers, node attributes,
subgraphs, functions) must name a relative path inside the model's folder: an absolute path, a
``..`` component, a symlink, or a path that resolves outside the folder is refused. Operators
of custom domains are refused too: trompe registers no custom-op library, ever.

Preprocessing and labels come from the model's ``metadata_props`` where present (keys below;
the user's options override them), else mean 0, std 1 and the input size of the graph.

``metadata_props`` keys read (all optional; values are text, as ONNX stores them):
    ``mean``, ``std``: three numbers in the [0, 1] scale, as a JSON list ``[0.485, 0.456,
        0.406]`` or comma-separated; one number stands for all three channels.
    ``input_size``: ``224``, ``224,224`` or ``[224, 224]`` (height, width); default: the
        graph's input shape when fixed.
    ``crop_fraction``: a number in (0, 1]; ``interpolation``: ``bilinear``, ``bicubic``...
    ``labels``: a JSON list of the class names, in index order.

The graph must take one float image batch, NCHW ``(B, 3, H, W)`` or NHWC ``(B, H, W, 3)``
(told apart by where the 3 is), with a free or fixed batch size, and its first output is read
as the scores. An output that is already probabilities (a softmax at the end) is turned into
log-probabilities, so that losses and softmax over the classifier's output stay right.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from trompe.errors import AccessError, MissingDependencyError, ModelLoadError
from trompe.models.sources import (
    INTERPOLATIONS,
    SOURCES,
    LoadOptions,
    Preprocessing,
    build_classifier,
    describe_failure,
    require,
)

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from trompe.models.classifier import Classifier

__all__ = ["OnnxRuntimeNet", "TorchGraphNet", "check_external_data", "load"]

#: Operator domains that onnxruntime's CPU build runs without a custom-op library.
RUNTIME_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "ai.onnx.preview.training",
        "ai.onnx.training",
        "com.microsoft",
        "com.microsoft.experimental",
        "com.microsoft.nchwc",
    }
)

#: What the gradient refusal says on a score-only ONNX classifier.
GRADIENTS_HINT = (
    "or load the ONNX model with --onnx-gradients (Python: onnx_gradients=True) to convert "
    "it to torch (onnx2torch) for gradient attacks"
)

# Rows of non-negative numbers that sum to 1 within this are read as probabilities.
_PROB_TOLERANCE = 1e-3
# log(0) would be -inf: the smallest probability kept.
_PROB_FLOOR = 1e-30
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


# -- safety: external data ---------------------------------------------------------------------


def _all_graphs(model: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    """The main graph and every subgraph (If, Loop, Scan bodies), in functions' nodes too."""
    stack = [model.graph]
    for function in model.functions:
        for node in function.node:
            stack.extend(_attribute_graphs(node))
    while stack:
        graph = stack.pop()
        yield graph
        for node in graph.node:
            stack.extend(_attribute_graphs(node))


def _attribute_graphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.g
        yield from attribute.graphs


def _node_tensors(nodes: Sequence[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            for sparse in attribute.sparse_tensors:
                yield sparse.values
                yield sparse.indices


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    for graph in _all_graphs(model):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        yield from _node_tensors(graph.node)
    for function in model.functions:
        yield from _node_tensors(function.node)


def check_external_data(model: onnx.ModelProto, folder: Path, model_id: str) -> None:
    """Refuse any tensor whose external data lies outside ``folder`` (the model's own).

    A location must be a relative path with no ``..`` and no symlink along it, that resolves
    inside ``folder``, to a file that exists.

    Raises:
        ModelLoadError: one line naming the first offending location.
    """
    import onnx

    root = folder.resolve()
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        problem = _location_problem(location, folder, root)
        if problem is not None:
            raise ModelLoadError(
                f"cannot load model {model_id!r}: the external data location {location!r} of "
                f"tensor {tensor.name!r} {problem}; trompe reads external data only from "
                "files inside the model's folder"
            )


def _location_problem(location: str, folder: Path, root: Path) -> str | None:
    if not location:
        return "is empty"
    if "\x00" in location:
        return "holds a NUL character"
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root:
        return "is an absolute path"
    parts = windows.parts  # splits on both / and \
    if ".." in parts:
        return "goes up with '..'"
    path = folder
    for part in parts:
        path = path / part
        if path.is_symlink():
            return "is or goes through a symlink"
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "names a file that does not exist"
    if not resolved.is_relative_to(root):
        return "resolves outside the model's folder"
    if not resolved.is_file():
        return "is not a file"
    return None


# -- reading the file ----------------------------------------------------------------------------


def _read_graph(path: Path, model_id: str) -> onnx.ModelProto:
    """The model without its external data, after the file checks."""
    import onnx

    if not path.exists():
        raise ModelLoadError(f"cannot load model {model_id!r}: no such file {str(path)!r}")
    if not path.is_file():
        raise ModelLoadError(f"cannot load model {model_id!r}: {str(path)!r} is not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends: the bytes are not a model
        raise ModelLoadError(
            f"cannot load model {model_id!r}: not an ONNX file, or a truncated one "
            f"({describe_failure(error)})"
        ) from None
    graph = model.graph
    if model.ir_version <= 0 or not graph.node or not graph.output or not model.opset_import:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: not an ONNX file, or a truncated one (no graph, "
            "IR version or opset)"
        )
    return model


def _check_domains(model: onnx.ModelProto, model_id: str) -> None:
    local = {function.domain for function in model.functions}
    for graph in _all_graphs(model):
        for node in graph.node:
            if node.domain not in RUNTIME_DOMAINS and node.domain not in local:
                raise ModelLoadError(
                    f"cannot load model {model_id!r}: operator {node.op_type!r} of the custom "
                    f"domain {node.domain!r} needs a custom-op library, which trompe never "
                    "loads; export the model with standard ONNX operators"
                )


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def _numbers(text: str) -> list[float]:
    stripped = text.strip()
    values: Any
    if stripped.startswith("["):
        values = json.loads(stripped)
    else:
        values = [v for v in stripped.replace(";", ",").split(",") if v.strip()]
    if isinstance(values, int | float):
        values = [values]
    numbers = [float(v) for v in values]
    if not numbers or not all(math.isfinite(v) for v in numbers):
        raise ValueError("not finite numbers")
    return numbers


def _preprocessing(
    metadata: dict[str, str],
    options: LoadOptions,
    input_size: tuple[int, int] | None,
    model_id: str,
) -> Preprocessing:
    """The file's preprocessing; a key the user overrides is not even parsed."""
    found: dict[str, Any] = {"input_size": input_size}
    key = ""
    try:
        for key in ("mean", "std"):
            if key in metadata and getattr(options, key) is None:
                values = _numbers(metadata[key])
                if len(values) == 1:
                    values *= 3
                if len(values) != 3:
                    raise ValueError("needs 1 or 3 numbers")
                found[key] = (values[0], values[1], values[2])
        key = "input_size"
        if key in metadata and options.input_size is None:
            sides = [int(v) for v in _numbers(metadata[key])]
            if len(sides) == 1:
                sides *= 2
            if len(sides) != 2 or min(sides) < 1:
                raise ValueError("needs 1 or 2 positive sides")
            found[key] = (sides[0], sides[1])
        key = "crop_fraction"
        if key in metadata and options.crop_fraction is None:
            found[key] = _numbers(metadata[key])[0]
            if not 0.0 < found[key] <= 1.0:
                raise ValueError("must lie in (0, 1]")
        key = "interpolation"
        if key in metadata and options.interpolation is None:
            found[key] = metadata[key].strip().lower()
            if found[key] not in INTERPOLATIONS:
                raise ValueError(f"must be one of {', '.join(INTERPOLATIONS)}")
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: its metadata {key!r} = {metadata[key][:60]!r} "
            f"cannot be read ({error}); pass {key} yourself to override it"
        ) from None
    return replace(Preprocessing(), **found)


def _metadata_labels(metadata: dict[str, str], model_id: str) -> list[str] | None:
    if "labels" not in metadata:
        return None
    try:
        names = json.loads(metadata["labels"])
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelLoadError(
            f"cannot load model {model_id!r}: its metadata 'labels' is not a JSON list of "
            "names; pass a label file (labels=...) to override it"
        )
    return names


# -- the networks ------------------------------------------------------------------------------


class _Adapter(nn.Module):
    """What both ONNX networks share: layout, fixed batch size, probabilities to log."""

    def __init__(self, *, nhwc: bool, batch: int | None) -> None:
        super().__init__()
        self.nhwc = nhwc
        self.batch = batch
        self.probabilities = False

    def _run(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _scores(self, images: torch.Tensor) -> torch.Tensor:
        """The first output, (B, num_classes), before the probability check."""
        inputs = images.permute(0, 2, 3, 1) if self.nhwc else images
        if self.batch is None or self.batch == len(inputs):
            out = self._run(inputs)
        else:
            # A fixed batch size: chunks of it, the last one padded with its own first image.
            size = self.batch
            parts = []
            for start in range(0, len(inputs), size):
                chunk = inputs[start : start + size]
                count = len(chunk)
                if count < size:
                    chunk = torch.cat([chunk, chunk[:1].expand(size - count, *chunk.shape[1:])])
                parts.append(self._run(chunk).reshape(size, -1)[:count])
            out = torch.cat(parts)
        return out.reshape(len(images), -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = self._scores(images)
        if self.probabilities:
            return scores.clamp_min(_PROB_FLOOR).log()
        return scores


class OnnxRuntimeNet(_Adapter):
    """An onnxruntime session as a module: normalised images in, scores out, no gradients.

    The session runs on the CPU with float32 numpy arrays; the output comes back on the
    input's device. Where the model ends in probabilities (rows non-negative that sum to 1,
    found once at load), ``forward`` returns their logarithm: log-probabilities are logits
    of the same softmax, so losses and :meth:`Classifier.probs` stay right.

    Shape:
        - Input: (B, 3, H, W), normalised.
        - Output: (B, num_classes) logits or log-probabilities.
    """

    def __init__(
        self, session: onnxruntime.InferenceSession, *, nhwc: bool, batch: int | None
    ) -> None:
        super().__init__(nhwc=nhwc, batch=batch)
        self.session = session
        graph_input = session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_dtype = _NUMPY_TYPES[graph_input.type]
        self.output_name = session.get_outputs()[0].name

    def _run(self, inputs: torch.Tensor) -> torch.Tensor:
        array = inputs.detach().to("cpu", torch.float32).contiguous().numpy()
        (out,) = self.session.run(
            [self.output_name], {self.input_name: array.astype(self.input_dtype, copy=False)}
        )
        result = torch.from_numpy(np.asarray(out, dtype=np.float32).copy())
        return result.to(inputs.device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and images.requires_grad:
            # Reached only through with_access("gradients"): the session has none to give.
            raise AccessError(f"onnxruntime computes no gradients; {GRADIENTS_HINT}")
        with torch.no_grad():
            return super().forward(images)


class TorchGraphNet(_Adapter):
    """An ONNX graph converted to torch by onnx2torch: gradients flow through it.

    The same adapter as :class:`OnnxRuntimeNet` (layout, fixed batch size, probabilities to
    log-probabilities) around the converted ``torch.fx.GraphModule``.
    """

    def __init__(self, module: nn.Module, *, nhwc: bool, batch: int | None) -> None:
        super().__init__(nhwc=nhwc, batch=batch)
        self.module = module

    def _run(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.module(inputs)
        if isinstance(out, list | tuple):
            out = out[0]
        result: torch.Tensor = out.float()
        return result


# -- loading -----------------------------------------------------------------------------------


def _session(path: Path, model_id: str) -> onnxruntime.InferenceSession:
    import onnxruntime

    settings = onnxruntime.SessionOptions()
    settings.log_severity_level = 3  # errors only: warnings would print from C++
    settings.intra_op_num_threads = max(1, torch.get_num_threads())
    settings.inter_op_num_threads = 1
    # No register_custom_ops_library: a model's custom operators never load code.
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=settings, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime's own exception types, one per failure
        raise ModelLoadError(
            f"cannot load model {model_id!r}: onnxruntime cannot run it ({describe_failure(error)})"
        ) from None


def _layout(shape: Sequence[Any], model_id: str) -> tuple[bool, int | None, tuple[int, int] | None]:
    """(NHWC?, fixed batch size or None, fixed (H, W) or None) from the input's shape."""

    def fixed(dim: Any) -> int | None:
        return dim if isinstance(dim, int) and dim > 0 else None

    if len(shape) != 4:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: its input has shape {list(shape)}; trompe feeds "
            "image batches (B, 3, H, W) or (B, H, W, 3)"
        )
    if fixed(shape[1]) == 3 or (fixed(shape[1]) is None and fixed(shape[3]) != 3):
        nhwc, height, width = False, shape[2], shape[3]
    elif fixed(shape[3]) == 3:
        nhwc, height, width = True, shape[1], shape[2]
    else:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: its input has shape {list(shape)}, not 3 "
            "colour channels; trompe feeds RGB batches (B, 3, H, W) or (B, H, W, 3)"
        )
    h, w = fixed(height), fixed(width)
    return nhwc, fixed(shape[0]), (h, w) if h is not None and w is not None else None


def _probe(net: _Adapter, size: tuple[int, int] | None, model_id: str) -> int:
    """Run the network on two small batches: check it works, find probabilities and classes."""
    height, width = size or (224, 224)
    generator = torch.Generator().manual_seed(0)
    batch = torch.cat(
        [torch.zeros(1, 3, height, width), torch.randn(1, 3, height, width, generator=generator)]
    )
    try:
        with torch.no_grad():
            scores = net._scores(batch)
    except Exception as error:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: a test run on a (2, 3, {height}, {width}) batch "
            f"failed ({describe_failure(error)})"
        ) from None
    if scores.shape[-1] < 2:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: its first output has {scores.shape[-1]} value per "
            "image; trompe reads class scores from it"
        )
    rows = scores.double()
    net.probabilities = bool(
        (rows >= 0).all() and ((rows.sum(dim=1) - 1).abs() <= _PROB_TOLERANCE).all()
    )
    return int(scores.shape[-1])


def _inline_constant_aliases(model: onnx.ModelProto) -> None:
    """Turn ``Identity`` nodes of initializers and ``Constant`` nodes into initializers.

    torch's exporter writes a weight shared by two layers once and names it again through an
    ``Identity`` node; onnx2torch looks a convolution's weight and bias up among the
    initializers only, so it fails on such graphs (every torchvision ResNet exported with
    constant folding). The graph computes the same after the change.
    """
    import onnx

    graph = model.graph
    known = {tensor.name: tensor for tensor in graph.initializer}
    for node in list(graph.node):
        tensor = None
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and node.input:
            source = known.get(node.input[0])
            if source is not None:
                tensor = onnx.TensorProto()
                tensor.CopyFrom(source)
        elif (
            node.op_type == "Constant"
            and node.domain in ("", "ai.onnx")
            and len(node.attribute) == 1
            and node.attribute[0].name == "value"
        ):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
        if tensor is None or len(node.output) != 1:
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        known[tensor.name] = tensor
        graph.node.remove(node)


def _convert(path: Path, model: onnx.ModelProto, model_id: str) -> nn.Module:
    """The graph as a torch module (onnx2torch), or one line on why it cannot be."""
    import onnx

    source = SOURCES["onnx"]
    try:
        require(source, "onnx2torch")
    except MissingDependencyError:
        raise MissingDependencyError(
            "onnx_gradients needs onnx2torch, which is not installed; run "
            f"`{source.install_hint}` (or load the model without onnx_gradients for scores only)"
        ) from None
    score_only = "load it without onnx_gradients: the score-only mode still works"
    try:
        from onnx2torch import convert
        from onnx2torch.node_converters.registry import get_converter
    except Exception as error:  # e.g. a torchvision built for another torch, which it imports
        raise ModelLoadError(
            f"cannot convert model {model_id!r} to torch for gradients: onnx2torch cannot be "
            f"imported ({describe_failure(error)}); {score_only}"
        ) from None

    opsets = {entry.domain: entry.version for entry in model.opset_import}
    missing: list[str] = []
    for node in model.graph.node:
        version = opsets.get(node.domain, opsets.get("", 0))
        try:
            get_converter(node.op_type, version, node.domain)
        except NotImplementedError:
            name = f"{node.op_type} (opset {version})"
            if name not in missing:
                missing.append(name)
    if missing:
        raise ModelLoadError(
            f"cannot convert model {model_id!r} to torch for gradients: onnx2torch has no "
            f"converter for {', '.join(missing[:5])}; {score_only}"
        )
    try:
        full = onnx.load(str(path))  # its external data checked already
        _inline_constant_aliases(full)
        module: nn.Module = convert(full)
    except Exception as error:
        raise ModelLoadError(
            f"cannot convert model {model_id!r} to torch for gradients "
            f"({describe_failure(error)}); {score_only}"
        ) from None
    return module.eval()


def load(ref: str, options: LoadOptions) -> Classifier:
    """An ONNX file as a Classifier: scores only, or gradients with ``onnx_gradients``.

    Raises:
        ModelLoadError: the file is missing, not ONNX, truncated, unsafe (external data outside
            its folder), uses custom operators, is not an image classifier, or cannot be
            converted (``onnx_gradients``).
        MissingDependencyError: onnx2torch is missing for ``onnx_gradients``.
    """
    model_id = f"onnx:{ref}"
    path = Path(ref).expanduser()
    model = _read_graph(path, model_id)
    check_external_data(model, path.parent, model_id)
    _check_domains(model, model_id)
    metadata = _metadata(model)
    labels = _metadata_labels(metadata, model_id)

    session = _session(path, model_id)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: it takes {len(inputs)} inputs; trompe feeds one "
            "image batch"
        )
    if inputs[0].type not in _NUMPY_TYPES:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: its input is {inputs[0].type}; trompe feeds float "
            "images (float32, float16 or double)"
        )
    nhwc, batch, size = _layout(inputs[0].shape, model_id)
    preprocessing = _preprocessing(metadata, options, size, model_id)
    net: _Adapter = OnnxRuntimeNet(session, nhwc=nhwc, batch=batch)
    num_classes = _probe(net, options.input_size or preprocessing.input_size, model_id)
    access: Any = "scores"
    if options.onnx_gradients:
        torch_net = TorchGraphNet(_convert(path, model, model_id), nhwc=nhwc, batch=batch)
        torch_net.probabilities = net.probabilities
        net, access = torch_net, "gradients"
    clf = build_classifier(
        net,
        preprocessing,
        options,
        name=model_id,
        labels=labels,
        num_classes=num_classes,
        access=access,
    )
    if access == "scores":
        clf.access_hint = GRADIENTS_HINT
    return clf
