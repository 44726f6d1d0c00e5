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

The timing interleaves the two sides (``--pairs`` pairs, the order alternating) and reports the
median of the per-pair ratios trompe / raw, after one untimed warm-up of each.

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

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    return Pair("torchvision", "resnet50 (state dict + --arch)", raw, ours)


def timm_pair(folder: Path, batch_size: int) -> Pair:
    import timm

    net = timm.create_model("convnext_tiny", pretrained=False).eval()
    path = folder / "convnext_tiny.safetensors"
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(path))
    clf = trompe.load_model(str(path), arch="timm:convnext_tiny")
    batch = torch.rand(batch_size, 3, *clf.input_size)
    raw, ours = _sides(clf, net, batch, _normalise(clf))
    return Pair("timm", "convnext_tiny (safetensors + --arch)", raw, ours)


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
    return Pair("hf", "ViT-Base/16 (save_pretrained folder)", raw, ours)


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
    return Pair("keras", "InceptionV3 (.keras file)", raw, ours)


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
    return Pair("onnx", "resnet18 (onnxruntime, scores only)", raw, ours, "forward")


def onnx2torch_pair(folder: Path, batch_size: int) -> Pair:
    path, _ = _onnx_file(folder)
    clf = trompe.load_model(f"onnx:{path}", input_size=224, onnx_gradients=True)
    net = clf.model.module  # the fx.GraphModule that onnx2torch made, without trompe's adapter
    batch = torch.rand(batch_size, 3, 224, 224)
    raw, ours = _sides(clf, net, batch, _normalise(clf))
    return Pair("onnx2torch", "resnet18 (onnx_gradients=True)", raw, ours)


BUILDERS: dict[str, Callable[[Path, int], Pair]] = {
    "torchvision": torchvision_pair,
    "timm": timm_pair,
    "hf": hf_pair,
    "keras": keras_pair,
    "onnx": onnx_pair,
    "onnx2torch": onnx2torch_pair,
}


def measure(pair: Pair, pairs: int) -> tuple[float, float, float]:
    """(median raw seconds, median trompe seconds, median per-pair ratio trompe / raw)."""
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
    return statistics.median(raws), statistics.median(ours), statistics.median(ratios)


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
            raw, ours, ratio = measure(pair, args.pairs)
            rows.append(
                [
                    pair.source,
                    pair.model,
                    pair.what,
                    f"{raw * 1000:.0f}",
                    f"{ours * 1000:.0f}",
                    f"{ratio:.3f}",
                    f"{(ratio - 1) * 100:+.1f} %",
                ]
            )
    report.table(
        ["source", "model", "pass", "raw ms", "trompe ms", "ratio", "adapter"], rows, rule=True
    )
    report.print(started)
    return 0


if __name__ == "__main__":
    log(versions_line())
    sys.exit(main())
