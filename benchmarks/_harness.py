"""The harness of the benchmark scripts: logging, versions, arguments, data, rows, runs, scores,
tables.

Not a benchmark itself. The scripts import it as a top-level module (``from _harness import
...``), which works because a script run as ``python benchmarks/bench_x.py``, from any
directory, has its own folder first on ``sys.path``; the peer libraries' runners are in
``_peers.py`` next to it. mypy, given a script, searches the script's folder too; ruff does not
need to find the module, it sorts the import with the third-party ones. The folder has no
``__init__.py`` on purpose: it is not a package, and nothing outside it imports from it.

A script keeps its settings (rows, budgets, flags of its own) and its family's scoring; it
builds :class:`Row` objects (:func:`setup_row` for a peer that may be missing), times them with
:func:`run_rows` and prints a :class:`Report`.

``OMP_WAIT_POLICY`` is not set here: each script sets it at its very top, before anything
imports torch (the OpenMP runtime reads it once, when torch loads). Setting it here would hold
only while this module is imported before torch in every script, an order that the import
sorter does not keep; two lines in each script are the safer price.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

import trompe
from trompe.images import quantize

#: Photos for the ImageNet rows: the two bundled with trompe, then the colour photos of
#: scikit-image's data folder (its drawings, textures, microscopy and telescope images are left
#: out). All are CC0 or public domain.
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "camera")
#: The photos that ship with trompe (always there).
BUNDLED = ("chelsea", "coffee")
#: The peers' distributions, by the short names that ``--skip`` and the version lines use.
PEERS = {
    "torchattacks": "torchattacks",
    "foolbox": "foolbox",
    "art": "adversarial-robustness-toolbox",
}


# -- progress and versions ------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress, to stderr (the tables go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def package_version(package: str) -> str:
    """The installed version of a distribution (or a short name of :data:`PEERS`), or
    ``"not installed"``."""
    try:
        return importlib.metadata.version(PEERS.get(package, package))
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions_line(*peers: str) -> str:
    """``python X, torch Y, trompe Z``, then ``peer V`` for each short name of ``peers``."""
    names = {"art": "ART", "foolbox": "Foolbox"}
    return (
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"trompe {trompe.__version__}"
        + "".join(f", {names.get(p, p)} {package_version(p)}" for p in peers)
    )


def device_line(device: torch.device) -> str:
    """The device: the GPU's name, or the CPU count and torch's threads."""
    return f"device: {device}" + (
        f" ({torch.cuda.get_device_name(device)})"
        if device.type == "cuda"
        else f" ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()})"
    )


def load_lines() -> list[str]:
    """The machine's load average, as one line (none where the OS does not report it)."""
    if not hasattr(os, "getloadavg"):
        return []
    return ["load average at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())]


def environment(device: torch.device, *peers: str) -> list[str]:
    """The versions line (with ``peers``), the device and the load: a table's preamble."""
    return [versions_line(*peers), device_line(device), *load_lines()]


# -- command line ---------------------------------------------------------------------------------


def comma_list(text: str, *, lower: bool = False) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (lower-cased with ``lower``)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    return [item.lower() for item in items] if lower else items


def ints(text: str) -> list[int]:
    """``"1,3,5"`` -> ``[1, 3, 5]``."""
    return [int(v) for v in comma_list(text)]


def arguments(doc: str, *, repeats: int = 3, threads: int = 2) -> argparse.ArgumentParser:
    """A parser with the flags every script has: ``--repeats``, ``--device``, ``--threads``,
    ``--markdown`` and ``--skip``; the script adds its own and calls :func:`parse`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"timed runs per row, median ({repeats})"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=threads,
        help=f"torch threads on the CPU ({threads}; 0: torch's)",
    )
    parser.add_argument("--markdown", action="store_true", help="print GitHub markdown tables")
    parser.add_argument(
        "--skip",
        action="extend",
        nargs="*",
        default=[],
        help="peers or rows to leave out: comma- or space-separated, or the flag again",
    )
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, check the common flags, set torch's CPU threads; ``args.skip`` becomes a list of
    lower-case names."""
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    require_device(parser, args.device)
    args.skip = [name for text in args.skip for name in comma_list(text, lower=True)]
    cpu_threads(args.device, args.threads)
    warnings.filterwarnings("ignore")
    return args


def require_device(parser: argparse.ArgumentParser, device: str) -> None:
    """Stop with a usage error when ``--device cuda`` is asked for and torch sees no GPU."""
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")


def cpu_threads(device: str, threads: int) -> None:
    """``torch.set_num_threads(threads)`` on the CPU when ``threads`` > 0 (0: torch's default)."""
    if device == "cpu" and threads > 0:
        torch.set_num_threads(threads)


def sync(device: torch.device | None) -> None:
    """Wait for the GPU's queued work (before reading a clock); nothing on the CPU."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


# -- data -----------------------------------------------------------------------------------------


def digits_batch(
    count: int, device: torch.device, *, correct_only: bool = True
) -> tuple[trompe.Classifier, torch.Tensor, torch.Tensor]:
    """The digits CNN, trained here (seed 0, a few seconds), and test digits with their labels.

    The first ``count`` test digits that the model classifies correctly, or with
    ``correct_only=False`` the first ``count`` test digits whatever the model says of them.
    """
    from trompe.models.digits import load_digits, train_digits_classifier

    data = load_digits()
    clf = train_digits_classifier(data, seed=0).to(device)
    images, labels = data.test_images.to(device), data.test_labels.to(device)
    if not correct_only:
        return clf, images[:count], labels[:count]
    index = (predict(clf, images) == labels).nonzero().squeeze(1)[:count]
    return clf, images[index], labels[index]


def photo_path(name: str) -> Path | None:
    """A photo of :data:`PHOTOS`: bundled with trompe, or in scikit-image's data folder."""
    if name in BUNDLED:
        return Path(trompe.images.example_path(name))
    try:
        import skimage.data
    except ImportError:
        return None
    folder = Path(skimage.data.data_dir)
    for suffix in (".png", ".jpg"):
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None


def load_photos(
    clf: trompe.Classifier, names: Sequence[str], device: torch.device, limit: int | None = None
) -> tuple[torch.Tensor, list[str], list[str]]:
    """The photos of ``names`` that are found (at most ``limit``), at the model's input size.

    Each is brought to the input by the model's own preprocessing and rounded to 8 bits.
    Returns the batch, the names found, and the names missing (before the limit was reached).
    """
    images: list[torch.Tensor] = []
    found: list[str] = []
    missing: list[str] = []
    for name in names:
        if limit is not None and len(found) == limit:
            break
        path = photo_path(name)
        if path is None:
            missing.append(name)
            continue
        image = trompe.load_image(path)[None].to(device)
        with torch.no_grad():
            images.append(quantize(clf.preprocess(image).clamp(0, 1)))
        found.append(name)
    return torch.cat(images), found, missing


def lite0_photos(
    device: torch.device, names: Sequence[str], limit: int | None = None
) -> tuple[trompe.Classifier, torch.Tensor, torch.Tensor, list[str]]:
    """EfficientNet-Lite0 and photos of ``names`` (see :func:`load_photos`) at 224 x 224.

    Their labels are the model's own top-1 predictions (an untargeted attack moves away from
    the model's answer). Returns the classifier, images, labels and the names not found.
    """
    clf = trompe.load_model("efficientnet_lite0", device=device)
    images, _, missing = load_photos(clf, names, device, limit)
    return clf, images, predict(clf, images), missing


# -- rows and runs --------------------------------------------------------------------------------


class Skipped(Exception):
    """A row left out on purpose; the message says why."""


def failure(error: BaseException) -> str:
    """``"TypeError: message"``."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


@dataclass
class Row:
    """One row of a table: an attack in one library, its runs and what they gave.

    ``run`` is one timed run (it returns the row's outcome, whatever the script scores);
    ``warm``, an untimed warm-up run before the first. Without ``run`` the row only says
    ``note`` (a peer missing, skipped, or without that attack). Scripts add fields of their
    own by subclassing.
    """

    name: str
    run: Callable[..., Any] | None  # called without arguments once bound (bind)
    note: str = ""
    group: str = ""
    warm: Callable[[], Any] | None = None
    seconds: list[float] = field(default_factory=list)  # wall clock, per timed run
    cpu_seconds: list[float] = field(default_factory=list)  # CPU time of this process, per run
    repeats: list[int] = field(default_factory=list)  # the repeat each timing belongs to
    outcome: Any = None  # what the last run returned
    error: str | None = None

    @property
    def done(self) -> bool:
        """The row ran and gave an outcome."""
        return self.outcome is not None and self.error is None and bool(self.seconds)

    @property
    def reason(self) -> str:
        """Why the row has no result."""
        return self.note or self.error or "no result"

    @property
    def median(self) -> float:
        """The median wall-clock time of its runs."""
        return statistics.median(self.seconds) if self.seconds else math.nan

    def bind(self, *args: Any, warm: Sequence[Any] | None = None) -> Self:
        """Turn ``run``, a runner taking ``args``, into the timed run (and ``warm`` into the
        warm-up run's arguments)."""
        if self.run is not None:
            runner = self.run
            self.run = functools.partial(runner, *args)
            if warm is not None:
                self.warm = functools.partial(runner, *warm)
        return self


def setup_row(
    name: str,
    make: Callable[..., Callable[..., Any]],
    *args: Any,
    skip: bool = False,
    cls: type[Row] = Row,
    **fields: Any,
) -> Any:
    """A row (of class ``cls``) whose runner ``make(*args)`` builds: a peer that is not
    installed, fails to set up or raises :class:`Skipped` gives a row that says so instead."""
    if skip:
        return cls(name, None, note="skipped (--skip)", **fields)
    try:
        return cls(name, make(*args), **fields)
    except Skipped as reason:
        note = str(reason)
    except ImportError as error:
        note = f"not installed ({error.name or error})"
    except Exception as error:  # a peer that breaks must not stop the benchmark
        note = f"failed to set up: {failure(error)}"
    return cls(name, None, note=note, **fields)


def skipped(name: str, skip: Iterable[str]) -> bool:
    """Whether ``--skip`` names this peer or row (a short peer name, or part of the name)."""
    lower = name.lower()
    return any(s in lower or PEERS.get(s, s) in lower for s in skip)


def run_rows(
    rows: Sequence[Row],
    repeats: int,
    device: torch.device | None = None,
    *,
    interleave: bool = True,
    before: Callable[[Row], None] | None = None,
    after: Callable[[Row], None] | None = None,
) -> None:
    """Warm every row up, then time ``repeats`` runs of each; a row that fails keeps the error.

    ``interleave``: the rows run in turn within each repeat, in forward then backward order
    (A B C ... C B A), so that a load that drifts hits every row alike on average; otherwise
    each row runs its repeats back to back. ``before`` and ``after`` are called around each
    timed run (outside the clock). Warnings are silenced inside the runs.
    """
    active = [row for row in rows if row.run is not None and row.error is None]
    for row in active:
        if row.warm is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row.warm()
        except Exception as error:
            row.error = failure(error)
            log(f"  {row.name}: failed: {row.error}")
    active = [row for row in active if row.error is None]
    if interleave:
        order = [(k, r) for k in range(repeats) for r in (active if k % 2 == 0 else active[::-1])]
    else:
        order = [(k, r) for r in active for k in range(repeats)]
    for repeat, row in order:
        assert row.run is not None
        if row.error is not None:
            continue
        if before is not None:
            before(row)
        sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outcome = row.run()
        except Exception as error:  # a peer that fails is reported, not fatal
            row.error = failure(error)
            log(f"  {row.name}: failed: {row.error}")
            continue
        sync(device)
        row.seconds.append(time.perf_counter() - start)
        row.cpu_seconds.append(time.process_time() - start_cpu)
        row.repeats.append(repeat)
        row.outcome = outcome
        if after is not None:
            after(row)
        log(f"  {repeat + 1}/{repeats} {row.name}: {row.seconds[-1]:.2f} s")


# -- scoring --------------------------------------------------------------------------------------


def predict(clf: trompe.Classifier, images: torch.Tensor) -> torch.Tensor:
    """The classifier's top-1 classes, without autograd."""
    with torch.no_grad():
        top: torch.Tensor = clf(images).argmax(dim=1)
    return top


def rounded(images: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """An attack's output as a saved PNG holds it: on ``images``' device, in [0, 1], 8 bits."""
    return quantize(output.detach().to(images.device).float().clamp(0, 1))


def median_inf(success: torch.Tensor, sizes: torch.Tensor, *, lower: bool = False) -> float:
    """The median size with failures counted as infinite: the mean of the two middle values for
    an even count (``lower``: torch's lower middle value)."""
    values = torch.where(success.cpu(), sizes.cpu().double(), torch.tensor(math.inf))
    return float(values.median()) if lower else float(np.median(values.numpy()))


def number(value: float, digits: int = 1) -> str:
    """``"inf"``, ``"-"`` for NaN, else the value with ``digits`` decimals."""
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


# -- output ---------------------------------------------------------------------------------------


def render(
    header: Sequence[str], body: Sequence[Sequence[str]], markdown: bool, *, rule: bool = False
) -> str:
    """A table: GitHub markdown, or plain text in aligned columns (``rule``: dashes under the
    header)."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header)]
    if rule:
        lines.append(fmt.format(*("-" * w for w in widths)))
    lines += [fmt.format(*cells) for cells in body]
    return "\n".join(lines)


@dataclass
class Report:
    """The lines a script prints to stdout: headings, bullets and tables, in markdown or not."""

    markdown: bool
    lines: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 1) -> None:
        """``# text`` for level 1 in plain text, one ``#`` more in markdown; blank lines around."""
        self.lines += ([""] if self.lines and self.lines[-1] else []) + [
            "#" * (level + self.markdown) + " " + text,
            "",
        ]

    def bullets(self, *lines: str) -> None:
        """Lines, each a list item in markdown."""
        self.lines += [("- " if self.markdown else "") + line for line in lines]

    def add(self, *lines: str) -> None:
        self.lines += lines

    def table(
        self, header: Sequence[str], body: Sequence[Sequence[str]], rule: bool = False
    ) -> None:
        self.lines.append(render(header, body, self.markdown, rule=rule))

    def print(self, started: float | None = None) -> None:
        """Print the lines, after the total wall time since ``started`` (``perf_counter``)."""
        if started is not None:
            self.add("")
            self.bullets(f"total wall time {time.perf_counter() - started:.0f} s")
        print("\n".join(self.lines))
