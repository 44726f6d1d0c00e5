"""What trompe's model adapter costs: a forward and backward pass through a ``trompe.Classifier``
of each model source, next to the same pass through the source's own module.

For each source, a network is made offline with random weights through that library's own API
and saved where a user's file would be (a state dict for torchvision and timm, a
``save_pretrained`` folder for Hugging Face, a ``.keras`` file, an ONNX export), then loaded with
``trompe.load_model`` exactly as a user's file is. The two sides see the same batch at the
model's input size, so no resize happens:

- ``raw``: the library's module on an input prepared beforehand, outside the timed region
  (normalised, and channels-last for Keras), then ``logits.sum()`` backward to the input.
- ``trompe``: the classifier on the [0, 1] batch: its normalisation (and Keras' channel
  permutation) is inside the timed region, as it is in an attack.

ONNX runs in onnxruntime, which has no backward: its rows time the forward only (the score-only
classifier, as score-based attacks use it); ``onnx2torch`` is the converted module
(``onnx_gradients=True``), forward and backward.

The timing interleaves the two sides (``--pairs`` pairs, the order alternating), after one
untimed warm-up of each, and reports the median of the per-pair ratios trompe / raw and the
ratio of the two sides' fastest runs. On a shared machine both move by several per cent from
run to run, more than the adapter costs, so the script also times the adapter alone ("adapter
alone"): the same two sides with the library's network replaced by a stand-in that costs next
to nothing (a slice of the input as logits), the fastest of 200 runs each; trompe's side minus
the raw side is the adapter's own work (normalisation, layout, the wrapper's Python), shown in
milliseconds and as a share of the raw module's median pass (for onnxruntime, the session is
replaced by one that returns zeros, and the pass is the forward).

Usage (on a machine whose torchvision does not match torch, such as the development machines,
the tests' shim makes it importable: ``PYTHONPATH=tests/shims``)::

    PYTHONPATH=tests/shims python benchmarks/bench_model_sources.py --markdown
    PYTHONPATH=tests/shims python benchmarks/bench_model_sources.py --sources timm,onnx --pairs 3
"""

from __future__ import annotations

import os

# Passive OpenMP waiting, set before torch loads (see docs/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KERAS_BACKEND", "torch")

import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from _harness import Report, arguments, comma_list, environment, log, parse, versions_line

import trompe

SOURCES = ("torchvision", "timm", "hf", "keras", "onnx", "onnx2torch")

Step = Callable[[], None]


@dataclass
class Pair:
    """The two sides of one source: each a function that runs one timed pass."""

    source: str
    model: str
    raw: Step
    trompe: Step
    what: str = "forward + backward"
    #: trompe's side and the raw side with the library's network replaced by a stand-in that
    #: costs next to nothing: their difference is the adapter's own work.
    adapter: tuple[Step, Step] | None = None


class _StandIn(torch.nn.Module):
    """Takes the network's place when only the adapter is timed: a slice of the input as
    logits, so that the backward pass reaches the input at almost no cost. It answers the
    call conventions of the wrapped libraries (``pixel_values=``, ``training=``)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def forward(
        self,
        x: torch.Tensor | None = None,
        *,
        pixel_values: torch.Tensor | None = None,
        training: bool | None = None,
    ) -> Any:
        inputs = pixel_values if x is None else x
        assert inputs is not None
        logits = inputs.flatten(1)[:, : self.classes] * 1.0
        return SimpleNamespace(logits=logits) if pixel_values is not None else logits


def _adapter_sides(
    clf: trompe.Classifier,
    holder: torch.nn.Module,
    attribute: str,
    batch: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    raw_call: Callable[..., Any] | None = None,
) -> tuple[Step, Step]:
    """The adapter alone: trompe's classifier with ``holder.attribute`` (the library's network)
    replaced by a stand-in, and the stand-in alone on the prepared input."""
    stand_in = _StandIn(clf.num_classes)
    prepared = prepare(batch).detach().contiguous()
    call = raw_call or stand_in

    def raw() -> None:
        x = prepared.clone().requires_grad_(True)
        _backward(call(x), x)

    def ours() -> None:
        network = getattr(holder, attribute)
        setattr(holder, attribute, stand_in)
        try:
            x = batch.clone().requires_grad_(True)
            _backward(clf(x), x)
        finally:
            setattr(holder, attribute, network)

    return raw, ours


def _backward(logits: torch.Tensor, image: torch.Tensor) -> None:
    (grad,) = torch.autograd.grad(logits.sum(), image)
    assert torch.isfinite(grad).all()


def _sides(
    clf: trompe.Classifier,
    raw_module: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    grad: bool = True,
) -> tuple[Step, Step]:
    """The timed steps: trompe's classifier on ``batch``, the raw module on ``prepare(batch)``."""
    prepared = prepare(batch).detach().contiguous()

    def raw() -> None:
        if not grad:
            with torch.no_grad():
                raw_module(prepared)
            return
        x = prepared.clone().requires_grad_(True)
        _backward(raw_module(x), x)

    def ours() -> None:
        if not grad:
            with torch.no_grad():
                clf(batch)
            return
        x = batch.clone().requires_grad_(True)
        _backward(clf(x), x)

    # Both sides compute the same logits (else the comparison means nothing).
    with torch.no_grad():
        mine, theirs = clf(batch), raw_module(prepared)
    if not torch.allclose(mine.log_softmax(-1), theirs.log_softmax(-1), atol=1e-3):
        raise SystemExit(f"{clf.name}: trompe's logits differ from the raw module's")
    return raw, ours


def _normalise(clf: trompe.Classifier) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: (x - clf.mean) / clf.std


def torchvision_pair(folder: Path, batch_size: int) -> Pair:
    import torchvision

    net = torchvision.models.resnet50().eval()
    path = folder / "resnet50.pth"
    torch.save(net.state_dict(), path)
    clf = trompe.load_model(str(path), arch="torchvision:resnet50")
    batch = torch.rand(batch_size, 3, *clf.input_size)
    raw, ours = _sides(clf, net, batch, _normalise(clf))
    adapter = _adapter_sides(clf, clf, "model", batch, _normalise(clf))
    return Pair("torchvision", "resnet50 (state dict + --arch)", raw, ours, adapter=adapter)


def timm_pair(folder: Path, batch_size: int) -> Pair:
    import timm

    net = timm.create_model("convnext_tiny", pretrained=False).eval()
    path = folder / "convnext_tiny.safetensors"
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(path))
    clf = trompe.load_model(str(path), arch="timm:convnext_tiny")
    batch = torch.rand(batch_size, 3, *clf.input_size)
    raw, ours = _sides(clf, net, batch, _normalise(clf))
    adapter = _adapter_sides(clf, clf, "model", batch, _normalise(clf))
    return Pair("timm", "convnext_tiny (safetensors + --arch)", raw, ours, adapter=adapter)


def hf_pair(folder: Path, batch_size: int) -> Pair:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(num_labels=1000)  # ViT-Base/16 at 224 px, random weights
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(folder / "vit")
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder / "vit")
    clf = trompe.load_model(f"hf:{folder / 'vit'}")
    batch = torch.rand(batch_size, 3, *clf.input_size)

    def net(x: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=x).logits

    raw, ours = _sides(clf, net, batch, _normalise(clf))
    stand_in = _StandIn(clf.num_classes)
    adapter = _adapter_sides(
        clf,
        clf.model,
        "model",
        batch,
        _normalise(clf),
        raw_call=lambda x: stand_in(pixel_values=x).logits,
    )
    return Pair("hf", "ViT-Base/16 (save_pretrained folder)", raw, ours, adapter=adapter)


def keras_pair(folder: Path, batch_size: int) -> Pair:
    import keras

    model = keras.applications.InceptionV3(weights=None, classifier_activation=None)
    path = folder / "inception_v3.keras"
    model.save(path)
    clf = trompe.load_model(f"keras:{path}")
    batch = torch.rand(batch_size, 3, *clf.input_size)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return _normalise(clf)(x).permute(0, 2, 3, 1)

    raw, ours = _sides(clf, model, batch, prepare)
    adapter = _adapter_sides(clf, clf.model, "model", batch, prepare)
    return Pair("keras", "InceptionV3 (.keras file)", raw, ours, adapter=adapter)


def _onnx_file(folder: Path) -> tuple[Path, torch.nn.Module]:
    import torchvision

    net = torchvision.models.resnet18().eval()
    path = folder / "resnet18.onnx"
    if not path.exists():
        torch.onnx.export(
            net,
            (torch.rand(1, 3, 224, 224),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}},
        )
    return path, net


def onnx_pair(folder: Path, batch_size: int) -> Pair:
    import onnxruntime

    path, _ = _onnx_file(folder)
    clf = trompe.load_model(f"onnx:{path}", input_size=224)
    # The threads trompe gives its own session (torch's count), so that only the adapter differs.
    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = max(1, torch.get_num_threads())
    settings.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])

    def net(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])

    batch = torch.rand(batch_size, 3, 224, 224)
    raw, ours = _sides(clf, net, batch, _normalise(clf), grad=False)
    return Pair(
        "onnx",
        "resnet18 (onnxruntime, scores only)",
        raw,
        ours,
        "forward",
        adapter=_onnx_adapter_sides(clf, batch),
    )


class _StandInSession:
    """An onnxruntime session's stand-in: zeros of the right shape, at almost no cost."""

    def __init__(self, classes: int) -> None:
        self.classes = classes

    def run(self, names: Any, feeds: dict[str, Any]) -> list[Any]:
        (array,) = feeds.values()
        return [np.zeros((len(array), self.classes), np.float32)]


def _onnx_adapter_sides(clf: trompe.Classifier, batch: torch.Tensor) -> tuple[Step, Step]:
    """The ONNX adapter alone (forward): trompe's classifier around a stand-in session, and the
    stand-in called as the raw side calls a session (tensor to numpy and back)."""
    stand_in = _StandInSession(clf.num_classes)
    prepared = _normalise(clf)(batch).contiguous()
    holder = clf.model

    def raw() -> None:
        with torch.no_grad():
            torch.from_numpy(stand_in.run(None, {"x": prepared.numpy()})[0])

    def ours() -> None:
        session = holder.session
        holder.session = stand_in
        try:
            with torch.no_grad():
                clf(batch)
        finally:
            holder.session = session

    return raw, ours


def onnx2torch_pair(folder: Path, batch_size: int) -> Pair:
    path, _ = _onnx_file(folder)
    clf = trompe.load_model(f"onnx:{path}", input_size=224, onnx_gradients=True)
    net = clf.model.module  # the fx.GraphModule that onnx2torch made, without trompe's adapter
    batch = torch.rand(batch_size, 3, 224, 224)
    raw, ours = _sides(clf, net, batch, _normalise(clf))
    adapter = _adapter_sides(clf, clf.model, "module", batch, _normalise(clf))
    return Pair("onnx2torch", "resnet18 (onnx_gradients=True)", raw, ours, adapter=adapter)


BUILDERS: dict[str, Callable[[Path, int], Pair]] = {
    "torchvision": torchvision_pair,
    "timm": timm_pair,
    "hf": hf_pair,
    "keras": keras_pair,
    "onnx": onnx_pair,
    "onnx2torch": onnx2torch_pair,
}


def measure(pair: Pair, pairs: int) -> tuple[float, float, float, float]:
    """(median raw seconds, median trompe seconds, median per-pair ratio trompe / raw, ratio of
    the fastest runs). The adapter's work is added to every run while a shared machine's
    interference comes and goes, so the fastest runs are the least disturbed measure of it."""
    pair.raw()
    pair.trompe()
    raws, ours, ratios = [], [], []
    for index in range(pairs):
        order = (pair.raw, pair.trompe) if index % 2 == 0 else (pair.trompe, pair.raw)
        times = {}
        for step in order:
            start = time.perf_counter()
            step()
            times[step] = time.perf_counter() - start
        raws.append(times[pair.raw])
        ours.append(times[pair.trompe])
        ratios.append(times[pair.trompe] / times[pair.raw])
    return (
        statistics.median(raws),
        statistics.median(ours),
        statistics.median(ratios),
        min(ours) / min(raws),
    )


def adapter_cost(pair: Pair, repeats: int = 200) -> float | None:
    """Seconds that the adapter adds to one pass: the fastest of ``repeats`` runs of trompe's
    side minus the fastest of the raw side, both with the stand-in network."""
    if pair.adapter is None:
        return None
    raw, ours = pair.adapter
    best = {raw: math.inf, ours: math.inf}
    for _ in range(repeats):
        for step in (raw, ours):
            start = time.perf_counter()
            step()
            best[step] = min(best[step], time.perf_counter() - start)
    return max(0.0, best[ours] - best[raw])


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__ or "", repeats=1)
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated")
    parser.add_argument("--pairs", type=int, default=7, help="timed pairs per source (7)")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parse(parser, argv)
    started = time.perf_counter()
    report = Report(args.markdown)
    report.heading("Model adapters: trompe.Classifier against the source's own module")
    report.bullets(*environment(torch.device("cpu")))
    report.bullets(
        f"batch {args.batch_size}, random weights, median of {args.pairs} interleaved pairs "
        "after one warm-up each"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in comma_list(args.sources, lower=True):
            if source not in BUILDERS or source in args.skip:
                continue
            log(f"{source}: building")
            try:
                pair = BUILDERS[source](Path(tmp), args.batch_size)
            except ImportError as error:
                log(f"{source}: skipped ({error})")
                continue
            log(f"{source}: timing")
            raw, ours, ratio, fastest = measure(pair, args.pairs)
            alone = adapter_cost(pair)
            share = "-" if alone is None else f"{alone * 1000:.2f} ms = {alone / raw:.2%}"
            rows.append(
                [
                    pair.source,
                    pair.model,
                    pair.what,
                    f"{raw * 1000:.0f}",
                    f"{ours * 1000:.0f}",
                    f"{ratio:.3f}",
                    f"{fastest:.3f}",
                    share,
                ]
            )
    report.table(
        ["source", "model", "pass", "raw ms", "trompe ms", "ratio", "fastest", "adapter alone"],
        rows,
        rule=True,
    )
    report.print(started)
    return 0


if __name__ == "__main__":
    log(versions_line())
    sys.exit(main())
