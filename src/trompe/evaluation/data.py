"""Data sets to evaluate on: folders, manifests, built-ins, tensors, Datasets and DataLoaders.

:func:`load_data` lists a data set for a model: every image's id and true class are known up
front (so 50 000 files are listed in a moment and a resume or a merge can check that it sees the
same data), and the images themselves are read chunk by chunk by :meth:`EvalData.chunk`, brought
to the model's input size the way the model's own preprocessing does it, and put on the 8-bit grid.

Sources:

- **a folder** of class subfolders (the ``ImageFolder`` layout): ``val/281/a.jpg`` or
  ``val/tabby/a.jpg``. A subfolder is named by a class index, or by a class name or synonym of the
  model's labels (``trompe labels --model NAME QUERY`` finds them). Images may sit deeper inside a
  class folder. Files are taken in sorted order of their paths; files whose extension is not an
  image's (:data:`IMAGE_EXTENSIONS`) and hidden files and folders are ignored, and links to
  folders inside a class folder are not followed; images lying directly in the folder, outside
  every class folder, are listed in :attr:`EvalData.skipped`. A file that turns out unreadable
  when its chunk is read is listed in :attr:`~trompe.evaluation.Chunk.skipped` (with ``strict``,
  every image is read once when listed, and an unreadable one is an error).
- **a manifest**, ``.csv`` with a header row ``path,label`` or ``.jsonl`` with one
  ``{"path": ..., "label": ...}`` object a line. A label is a class index or a class name. Paths
  are relative to the manifest's folder and may not leave it: absolute paths, ``..`` that climbs
  out and symbolic links that lead out are refused.
- **a built-in**: ``"digits"`` (the test split of scikit-learn's digits,
  :func:`trompe.models.digits.load_digits`, 360 images) or ``"foolbox:imagenet"``,
  ``"foolbox:cifar10"``, ``"foolbox:cifar100"``, ``"foolbox:mnist"``, ``"foolbox:fashionMNIST"``:
  the 20 labelled samples that ship in the ``foolbox`` wheel (read from its data folder as files;
  foolbox itself is never imported). A built-in name always means the built-in; write
  ``./digits`` for a folder of that name.
- **tensors**: a pair ``(images, labels)``, images (N, 3, H, W) (or (N, 1, H, W), grey) uint8 or
  float in [0, 1], labels (N,) class indices (or class names).
- **a Dataset** (map-style) of ``(image, label)`` items, the image a tensor (3, H, W) or
  (1, H, W), a PIL image or a numpy array. Labels are taken from its ``targets`` attribute when it
  has one of the right length (torchvision's datasets do; a ``Subset`` of one too), else by
  reading every item once when the data set is listed. Images are read per chunk.
- **a DataLoader**: one that shuffles has no stable order and is refused (pass
  ``shuffle=False``, or its dataset). One over a map-style dataset with the sequential sampler and
  the default collate function is read through its dataset, per chunk, as a Dataset is. Any
  other (a custom sampler or collate function, an ``IterableDataset``) is iterated once when the
  data set is listed, in its own order, and held in memory: pass the Dataset for large data.

Subsets: ``n`` picks ``n`` images spread over the classes, deterministically and independently
of any attack seed: within each class the images are ranked by a SHA-256 of their id (a fixed,
salted hash), then taken round-robin over the classes in index order (the 1st of each class, then
the 2nd of each...), and evaluated in their listing order. A class with fewer images runs out
and the others fill in. A larger ``n`` picks a superset of a smaller one. ``n`` at least the
size of the data set takes all of it (``description["total"]`` equals ``description["n"]``).

Every image is brought to the model's input size by the model's own evaluation transform
(:func:`trompe.images.center_crop_resize` with its ``crop_fraction`` and ``interpolation``; an
image already at the input size is kept as it is, as :class:`~trompe.Classifier` does) and then
rounded to the 8-bit grid, so that what is attacked is what an 8-bit file holds. For a model
without an input size, images keep their size, and the images of one chunk must share it.

Ids: file paths relative to the folder or manifest (``"tabby/a.jpg"``), ``"#<index>"`` for
tensors and datasets (the index in the source, before any subset), ``"digits#<index>"`` and
``"foolbox:imagenet#<index>"`` for the built-ins.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import os
import posixpath
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from trompe._files import short_reason
from trompe.errors import (
    ImageError,
    InstallationError,
    InvalidArgumentError,
    MissingDependencyError,
    MissingWeightsError,
    TrompeError,
)
from trompe.evaluation._types import Chunk
from trompe.images import (
    DEFAULT_MAX_PIXELS,
    PHOTO_EXTENSIONS,
    center_crop_resize,
    load_image,
    quantize,
)
from trompe.labels import Labels
from trompe.models.classifier import Classifier

__all__ = ["BUILTINS", "IMAGE_EXTENSIONS", "EvalData", "load_data"]

logger = logging.getLogger(__name__)

#: File extensions read as images in folders (compared without case); others are ignored. The
#: same list as the flat photo folders of :func:`trompe.images.load_photos`.
IMAGE_EXTENSIONS: tuple[str, ...] = PHOTO_EXTENSIONS

#: The built-in data sets by name.
BUILTINS: tuple[str, ...] = (
    "digits",
    "foolbox:imagenet",
    "foolbox:cifar10",
    "foolbox:cifar100",
    "foolbox:mnist",
    "foolbox:fashionMNIST",
)

# The salt of the subset ranking: fixed, so that a subset never depends on an attack's seed.
_SUBSET_SALT = "trompe.evaluation.data.subset:"
_INDEX = re.compile(r"[+-]?[0-9]+")


# -- reading images ----------------------------------------------------------------------------


class _Reader:
    """Reads one raw image of the source by its key (an index into the source)."""

    def load(self, key: int) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError


class _FileReader(_Reader):
    def __init__(self, root: Path, paths: Sequence[str], max_pixels: int) -> None:
        self.root = root
        self.paths = tuple(paths)
        self.max_pixels = max_pixels

    def load(self, key: int) -> torch.Tensor:
        return load_image(self.root / self.paths[key], max_pixels=self.max_pixels)


class _TensorReader(_Reader):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images  # (N, 3, H, W), uint8 or float in [0, 1], checked when listed

    def load(self, key: int) -> torch.Tensor:
        image = self.images[key]
        if image.dtype == torch.uint8:
            return image.float() / 255
        return image.float()


class _DatasetReader(_Reader):
    def __init__(self, dataset: Any, max_pixels: int) -> None:
        self.dataset = dataset
        self.max_pixels = max_pixels

    def load(self, key: int) -> torch.Tensor:
        try:
            item = self.dataset[key]
        except TrompeError:
            raise
        except OSError as error:  # a corrupt file behind the dataset (PIL raises OSErrors)
            raise ImageError(f"item {key} cannot be read: {short_reason(error)}") from None
        image, _ = _split_item(item, key)
        return _item_image(image, key, self.max_pixels)


def _split_item(item: Any, key: int) -> tuple[Any, Any]:
    if not isinstance(item, tuple | list) or len(item) < 2:
        raise InvalidArgumentError(
            f"dataset item {key} is a {type(item).__name__}; a dataset to evaluate on gives "
            "(image, label) pairs"
        )
    return item[0], item[1]


def _item_image(image: Any, key: int, max_pixels: int) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] == 1:
            image = image.expand(3, -1, -1)
    if not isinstance(image, torch.Tensor | np.ndarray | Image.Image):
        raise InvalidArgumentError(
            f"dataset item {key} holds a {type(image).__name__}; the image must be a tensor, "
            "a PIL image or a numpy array"
        )
    try:
        return load_image(image, max_pixels=max_pixels)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"dataset item {key}: {error}") from None


@dataclass(frozen=True)
class _Source:
    """How to read and prepare the images: the reader, each position's key, the model's size."""

    reader: _Reader
    keys: tuple[int, ...]
    input_size: tuple[int, int] | None
    crop_fraction: float
    interpolation: str
    strict: bool

    def raw(self, position: int) -> torch.Tensor:
        return self.reader.load(self.keys[position])

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """The model's own resize (none for an image at its input size), then 8 bits."""
        if self.input_size is not None and tuple(image.shape[-2:]) != self.input_size:
            image = center_crop_resize(
                image,
                self.input_size,
                crop_fraction=self.crop_fraction,
                interpolation=self.interpolation,
            )
        return quantize(image)


# -- the data set ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EvalData:
    """A data set ready to evaluate: ids and labels known up front, images read per chunk.

    Attributes:
        ids: one id per image, in evaluation order (paths relative to the root for folders and
            manifests, ``"#<index>"`` for tensors and datasets, ``"digits#17"``,
            ``"foolbox:imagenet#3"`` for the built-ins).
        labels: (N,) the true classes, as indices of the model's classes.
        description: JSON-ready: ``kind`` (``"folder"``, ``"manifest"``, ``"builtin"``,
            ``"tensors"``, ``"dataset"``, ``"dataloader"``), ``source`` (the path or name, as
            given), ``n`` (images to evaluate), ``total`` (images listed before the subset),
            ``requested_n`` (the ``n`` asked for, or ``None``), ``classes`` (distinct true
            classes among the ``n``), ``skipped`` (entries refused when listed) and
            ``fingerprint``: a SHA-256 over ids and labels, so that a resume or a merge on
            other data is refused.
        skipped: (id, reason) of entries refused when the data set was listed (not in ``ids``):
            images lying outside every class folder, dataset items that could not be read to
            learn their label.
    """

    ids: tuple[str, ...]
    labels: torch.Tensor
    description: dict[str, Any]
    skipped: tuple[tuple[str, str], ...] = ()
    _reader: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def num_chunks(self, batch_size: int) -> int:
        """How many chunks of ``batch_size`` images the data set makes (the last may be short)."""
        _check_batch_size(batch_size)
        return -(-len(self) // batch_size)

    def chunk(self, index: int, batch_size: int) -> Chunk:
        """Read chunk ``index``: positions ``index * batch_size`` to the next chunk's first.

        Images are brought to the model's input size the way its own preprocessing says (the
        centred crop and resize of :func:`trompe.images.center_crop_resize`; an image already
        at the input size is kept as it is, as the classifier does) and onto the 8-bit grid. An
        image that cannot be read is listed in ``Chunk.skipped``, or raises with ``strict``.

        Args:
            index: the chunk's number, from 0 to ``num_chunks(batch_size) - 1``.
            batch_size: images per chunk.

        Returns:
            The chunk, its images (b, 3, H, W) float32 on the CPU.

        Raises:
            InvalidArgumentError: ``index`` or ``batch_size`` out of range; for a model without
                an input size, images of different sizes in one chunk; a dataset item that is
                not an image in [0, 1].
            ImageError: with ``strict``, an image that cannot be read.
        """
        _check_batch_size(batch_size)
        count = self.num_chunks(batch_size)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise InvalidArgumentError(
                f"chunk index must be an integer from 0 to {count - 1}, got {index!r}"
            )
        source: _Source = self._reader
        start, stop = index * batch_size, min(len(self), (index + 1) * batch_size)
        positions: list[int] = []
        images: list[torch.Tensor] = []
        skipped: list[tuple[int, str, str]] = []
        for position in range(start, stop):
            try:
                raw = source.raw(position)
            except ImageError as error:
                if source.strict:
                    raise
                skipped.append((position, self.ids[position], short_reason(error)))
                continue
            positions.append(position)
            images.append(source.prepare(raw))
        sizes = {tuple(image.shape) for image in images}
        if len(sizes) > 1:
            shown = ", ".join(f"{h}x{w}" for _, h, w in sorted(sizes)[:4])
            raise InvalidArgumentError(
                f"chunk {index} holds images of different sizes ({shown}) and the model has no "
                "input size to bring them to; resize the data set or give the model an input_size"
            )
        if images:
            batch = torch.stack(images)
        else:
            height, width = source.input_size or (0, 0)
            batch = torch.zeros(0, 3, height, width)
        return Chunk(
            index=index,
            positions=tuple(positions),
            ids=tuple(self.ids[p] for p in positions),
            images=batch,
            labels=self.labels[positions].clone(),
            skipped=tuple(skipped),
        )


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")


# -- listing -----------------------------------------------------------------------------------


@dataclass
class _Listing:
    """What a source yields when listed: before the subset and the checks."""

    kind: str
    source: str
    ids: list[str]
    labels: list[int]
    reader: _Reader
    keys: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_data(
    source: Any,
    model: Classifier,
    *,
    n: int | None = None,
    strict: bool = False,
    max_pixels: int | None = None,
) -> EvalData:
    """List a data set for ``model``.

    See the module's documentation for the sources, the ids and how the subset is drawn.

    Args:
        source: a folder of class subfolders (named by index or by class name, matched against
            the model's labels), a ``.csv`` or ``.jsonl`` manifest of ``path,label`` rows
            (paths relative to the manifest's folder, never outside it), a built-in name
            (``"digits"``: scikit-learn's digits test split; ``"foolbox:imagenet"``,
            ``"foolbox:cifar10"``, ``"foolbox:cifar100"``, ``"foolbox:mnist"``,
            ``"foolbox:fashionMNIST"``: the 20 labelled samples in the foolbox wheel), a pair
            ``(images, labels)`` of tensors, a ``torch.utils.data.Dataset`` of
            ``(image, label)`` or a ``DataLoader`` of such batches.
        model: the classifier: its input size, preprocessing and class names.
        n: evaluate a deterministic subset of this many images (spread over the classes); all
            of them when ``n`` is at least the data set's size.
        strict: an unreadable image is an error rather than skipped and listed; every image
            (of the subset) is read once here, so that the error comes before any attack.
        max_pixels: refuse images larger than this (default: :mod:`trompe.images`' cap).

    Returns:
        The data set, its images not read yet (except with ``strict``).

    Raises:
        InvalidArgumentError: an empty folder or manifest, no images, labels that are not the
            model's classes (an index out of range, an unknown or ambiguous class name), a
            manifest row without a path or label, a manifest path outside its folder, an
            unknown built-in or missing path, a shuffling DataLoader, ``n`` below 1.
        MissingDependencyError: a built-in whose package is not installed (scikit-learn for
            ``digits``, foolbox for its samples).
        ImageError: with ``strict``, an unreadable image.

    Example:
        >>> clf = trompe.load_model("digits_robust")  # doctest: +SKIP
        >>> data = load_data("digits", clf, n=100)  # doctest: +SKIP
        >>> len(data), data.chunk(0, 64).images.shape  # doctest: +SKIP
        (100, torch.Size([64, 3, 8, 8]))
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InvalidArgumentError(f"n must be a positive integer, got {n!r}")
    if not isinstance(strict, bool):
        raise InvalidArgumentError(f"strict must be True or False, got {strict!r}")
    if max_pixels is None:
        max_pixels = DEFAULT_MAX_PIXELS
    elif isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise InvalidArgumentError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if not isinstance(model, Classifier):
        raise InvalidArgumentError(
            f"load_data needs the Classifier to evaluate, got {type(model).__name__}"
        )

    listing = _list(source, model, max_pixels, strict)
    if not listing.ids:
        raise InvalidArgumentError(f"the data set {listing.source} holds no images")
    total = len(listing.ids)
    chosen = _subset(listing.ids, listing.labels, n) if n is not None else list(range(total))
    ids = tuple(listing.ids[i] for i in chosen)
    labels = torch.tensor([listing.labels[i] for i in chosen], dtype=torch.long)
    reader = _Source(
        reader=listing.reader,
        keys=tuple(listing.keys[i] for i in chosen),
        input_size=model.input_size,
        crop_fraction=model.crop_fraction,
        interpolation=model.interpolation,
        strict=strict,
    )
    if strict:
        for position in range(len(ids)):
            reader.raw(position)  # raises ImageError for the first unreadable image
    description: dict[str, Any] = {
        "kind": listing.kind,
        "source": listing.source,
        "n": len(ids),
        "total": total,
        "requested_n": n,
        "classes": len(set(labels.tolist())),
        "skipped": len(listing.skipped),
        "fingerprint": _fingerprint(ids, labels.tolist()),
    }
    return EvalData(
        ids=ids,
        labels=labels,
        description=description,
        skipped=tuple(listing.skipped),
        _reader=reader,
    )


def _fingerprint(ids: Sequence[str], labels: Sequence[int]) -> str:
    digest = hashlib.sha256()
    for image_id, label in zip(ids, labels, strict=True):
        digest.update(f"{json.dumps(image_id)}\t{label}\n".encode())
    return digest.hexdigest()


def _subset(ids: Sequence[str], labels: Sequence[int], n: int) -> list[int]:
    """``n`` positions spread over the classes (see the module's documentation), in order."""
    if n >= len(ids):
        return list(range(len(ids)))
    groups: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        groups.setdefault(label, []).append(position)

    def rank(position: int) -> str:
        return hashlib.sha256((_SUBSET_SALT + ids[position]).encode()).hexdigest()

    ordered = [sorted(groups[label], key=rank) for label in sorted(groups)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        for members in ordered:
            if depth < len(members):
                chosen.append(members[depth])
                if len(chosen) == n:
                    break
        depth += 1
    return sorted(chosen)


def _list(source: Any, model: Classifier, max_pixels: int, strict: bool) -> _Listing:
    builtins = {name.lower(): name for name in BUILTINS}
    if isinstance(source, str) and source.lower() in builtins:
        return _list_builtin(builtins[source.lower()], model, max_pixels)
    if isinstance(source, str) and source.lower().startswith("foolbox:"):
        raise InvalidArgumentError(
            f"unknown built-in data set {source!r}; the built-ins are {', '.join(BUILTINS)}"
        )
    if isinstance(source, str | os.PathLike):
        return _list_path(Path(source), os.fspath(source), model, max_pixels)
    if isinstance(source, tuple | list) and len(source) == 2:
        return _list_tensors(source[0], source[1], model)
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(source, DataLoader):
        return _list_loader(source, model, max_pixels, strict)
    if isinstance(source, IterableDataset):
        raise InvalidArgumentError(
            "an IterableDataset has no positions to read chunks by; wrap it in a DataLoader "
            "(iterated once, held in memory) or pass a map-style Dataset"
        )
    if isinstance(source, Dataset):
        return _list_dataset(source, "dataset", type(source).__name__, model, max_pixels, strict)
    raise InvalidArgumentError(
        "the data to evaluate on is a folder, a .csv or .jsonl manifest, a built-in name "
        f"({', '.join(BUILTINS)}), a pair (images, labels), a Dataset or a DataLoader; "
        f"got {type(source).__name__}"
    )


def _list_path(path: Path, shown: str, model: Classifier, max_pixels: int) -> _Listing:
    if path.is_dir():
        return _list_folder(path, shown, model, max_pixels)
    if path.is_file() and path.suffix.lower() in (".csv", ".jsonl"):
        return _list_manifest(path, shown, model, max_pixels)
    if path.exists():
        raise InvalidArgumentError(
            f"'{shown}' is neither a folder of class subfolders nor a .csv or .jsonl manifest"
        )
    raise InvalidArgumentError(
        f"no such folder or manifest: '{shown}'; give a folder, a .csv or .jsonl manifest or a "
        f"built-in ({', '.join(BUILTINS)})"
    )


# -- classes -----------------------------------------------------------------------------------


def _class_of(value: Any, model: Classifier, where: str, instead: str = "") -> int:
    """The model's class index for a label given as an index or a name; one-line errors."""
    labels: Labels = model.labels
    count = len(labels)
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and _INDEX.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < count:
            raise InvalidArgumentError(
                f"{where}: class {value} is not one of the model's {count} classes "
                f"(0 to {count - 1})"
            )
        return value
    if isinstance(value, str):
        try:
            return labels.index(value)
        except TrompeError as error:
            message = f"{where}: {error}"
            if instead:
                message = message.replace("pass the index instead", instead)
            if "trompe labels" not in message and model.source != "custom":
                message += f"; see `trompe labels --model {model.name} {shlex.quote(value)}`"
            raise InvalidArgumentError(message) from None
    raise InvalidArgumentError(
        f"{where}: a label is a class index or a class name, got {type(value).__name__} {value!r}"
    )


# -- folders -----------------------------------------------------------------------------------


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_folder(root: Path, shown: str, model: Classifier, max_pixels: int) -> _Listing:
    try:
        entries = sorted(
            (e for e in os.scandir(root) if not e.name.startswith(".")), key=lambda e: e.name
        )
    except OSError as error:
        raise InvalidArgumentError(
            f"cannot read the folder '{shown}': {short_reason(error)}"
        ) from None
    if not entries:
        raise InvalidArgumentError(
            f"the folder '{shown}' is empty; put each class's images in a subfolder named by "
            "its class index or name"
        )
    folders = [e for e in entries if e.is_dir()]
    loose = [e.name for e in entries if not e.is_dir() and _is_image_name(e.name)]
    if not folders:
        found = f"{len(loose)} images but " if loose else ""
        raise InvalidArgumentError(
            f"the folder '{shown}' holds {found}no class subfolders; put each class's images in "
            "a subfolder named by its class index or name (or list them in a manifest)"
        )
    found_items: list[tuple[str, int]] = []
    for folder in folders:
        label = _class_of(
            folder.name,
            model,
            f"class folder '{folder.name}' in '{shown}'",
            "name the folder by the class index instead",
        )
        for top, dirs, files in os.walk(folder.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            prefix = Path(os.path.relpath(top, root)).as_posix() + "/"
            found_items.extend((prefix + name, label) for name in files if _is_image_name(name))
    if not found_items:
        raise InvalidArgumentError(
            f"no images in the class folders of '{shown}' ({len(folders)} folders; trompe reads "
            f"{', '.join(IMAGE_EXTENSIONS)} files)"
        )
    found_items.sort()
    paths = [p for p, _ in found_items]
    return _Listing(
        kind="folder",
        source=shown,
        ids=paths,
        labels=[label for _, label in found_items],
        reader=_FileReader(root, paths, max_pixels),
        keys=list(range(len(paths))),
        skipped=[(name, "not in a class folder") for name in loose],
    )


# -- manifests ---------------------------------------------------------------------------------


def _list_manifest(path: Path, shown: str, model: Classifier, max_pixels: int) -> _Listing:
    rows = _csv_rows(path, shown) if path.suffix.lower() == ".csv" else _jsonl_rows(path, shown)
    if not rows:
        raise InvalidArgumentError(f"the manifest '{shown}' lists no images")
    folder = path.parent
    try:
        real_root = os.path.realpath(folder)
    except OSError as error:  # pragma: no cover - realpath rarely fails
        raise InvalidArgumentError(f"cannot resolve '{folder}': {short_reason(error)}") from None
    ids: list[str] = []
    labels: list[int] = []
    for number, raw_path, raw_label in rows:
        where = f"'{shown}' row {number}"
        ids.append(_inside(real_root, folder, raw_path, where))
        labels.append(_class_of(raw_label, model, where))
    return _Listing(
        kind="manifest",
        source=shown,
        ids=ids,
        labels=labels,
        reader=_FileReader(folder, ids, max_pixels),
        keys=list(range(len(ids))),
    )


def _read_text(path: Path, shown: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidArgumentError(f"the manifest '{shown}' is not UTF-8 text") from None
    except OSError as error:
        raise InvalidArgumentError(
            f"cannot read the manifest '{shown}': {short_reason(error)}"
        ) from None


def _csv_rows(path: Path, shown: str) -> list[tuple[int, Any, Any]]:
    text = _read_text(path, shown)
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    columns = [c.strip().lower() for c in header] if header else []
    if "path" not in columns or "label" not in columns:
        raise InvalidArgumentError(
            f"the manifest '{shown}' needs a header row 'path,label'; got {header!r}"
        )
    at_path, at_label = columns.index("path"), columns.index("label")
    rows: list[tuple[int, Any, Any]] = []
    for number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [row[i].strip() if i < len(row) else "" for i in (at_path, at_label)]
        for name, cell in zip(("path", "label"), cells, strict=True):
            if not cell:
                raise InvalidArgumentError(f"'{shown}' row {number}: no {name}")
        rows.append((number, cells[0], cells[1]))
    return rows


def _jsonl_rows(path: Path, shown: str) -> list[tuple[int, Any, Any]]:
    rows: list[tuple[int, Any, Any]] = []
    for number, line in enumerate(_read_text(path, shown).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidArgumentError(
                f"'{shown}' line {number} is not JSON: {error.msg}"
            ) from None
        if not isinstance(entry, dict):
            raise InvalidArgumentError(
                f'\'{shown}\' line {number}: expected an object {{"path": ..., "label": ...}}'
            )
        for name in ("path", "label"):
            if entry.get(name) is None or entry.get(name) == "":
                raise InvalidArgumentError(f"'{shown}' row {number}: no {name}")
        if not isinstance(entry["path"], str):
            raise InvalidArgumentError(f"'{shown}' row {number}: the path must be a string")
        rows.append((number, entry["path"], entry["label"]))
    return rows


def _inside(real_root: str, folder: Path, raw: str, where: str) -> str:
    """The normalised relative path of a manifest row, refused if it leads outside ``folder``."""
    text = raw.strip()
    if "\x00" in text:
        raise InvalidArgumentError(f"{where}: the path holds a NUL character")
    if os.path.isabs(text) or text.startswith("\\") or re.match(r"^[A-Za-z]:[\\/]", text):
        raise InvalidArgumentError(
            f"{where}: absolute path '{text}' refused; paths are relative to the manifest's folder"
        )
    normal = posixpath.normpath(text.replace(os.sep, "/"))
    if normal == ".." or normal.startswith("../"):
        raise InvalidArgumentError(
            f"{where}: '{text}' leads outside the manifest's folder; paths stay inside it"
        )
    if normal == ".":
        raise InvalidArgumentError(f"{where}: '{text}' is the manifest's folder, not an image")
    real = os.path.realpath(folder / normal)
    if os.path.commonpath([real_root, real]) != real_root:
        raise InvalidArgumentError(
            f"{where}: '{text}' is a symbolic link (or lies under one) leading outside the "
            "manifest's folder; paths stay inside it"
        )
    return normal


# -- built-ins ---------------------------------------------------------------------------------


def _list_builtin(name: str, model: Classifier, max_pixels: int) -> _Listing:
    if name == "digits":
        from trompe.models.digits import load_digits

        try:
            digits = load_digits()
        except MissingWeightsError:
            raise MissingDependencyError(
                "the digits data set comes with scikit-learn: pip install scikit-learn"
            ) from None
        listing = _list_tensors(digits.test_images, digits.test_labels, model)
        listing.kind, listing.source = "builtin", name
        listing.ids = [f"digits#{i}" for i in range(len(listing.ids))]
        return listing
    dataset = name.split(":", 1)[1]
    folder = _foolbox_data()
    pattern = re.compile(rf"{re.escape(dataset)}_([0-9]+)_([0-9]+)\.(?:png|jpg)")
    found: list[tuple[int, str, int]] = []
    for file_name in os.listdir(folder):
        match = pattern.fullmatch(file_name)
        if match is not None:
            found.append((int(match[1]), file_name, int(match[2])))
    if not found:
        raise InstallationError(
            f"foolbox's data folder '{folder}' holds no {dataset} samples; reinstall foolbox: "
            "pip install --force-reinstall foolbox"
        )
    found.sort()
    files = [f for _, f, _ in found]
    labels = [_class_of(label, model, f"the {name} sample '{f}'") for _, f, label in found]
    return _Listing(
        kind="builtin",
        source=name,
        ids=[f"{name}#{i}" for i, _, _ in found],
        labels=labels,
        reader=_FileReader(folder, files, max_pixels),
        keys=list(range(len(files))),
    )


def _foolbox_data() -> Path:
    """foolbox's ``data`` folder, found without importing foolbox (and its dependencies)."""
    missing = "the foolbox samples ship in the foolbox package: pip install foolbox"
    try:
        spec = importlib.util.find_spec("foolbox")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(missing)
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data"
        if folder.is_dir():
            return folder
    raise InstallationError(
        "the foolbox package has no data folder; reinstall it: pip install --force-reinstall "
        "foolbox"
    )


# -- tensors, datasets, loaders ----------------------------------------------------------------


def _list_tensors(images: Any, labels: Any, model: Classifier) -> _Listing:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise InvalidArgumentError(
            f"a pair (images, labels) needs an images tensor, got {type(images).__name__}"
        )
    images = images.detach().cpu()
    shape = tuple(images.shape)
    if images.dim() == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        raise InvalidArgumentError(
            f"images of shape {shape} look channels-last; pass (N, 3, H, W): "
            "images.permute(0, 3, 1, 2)"
        )
    if images.dim() != 4 or images.shape[1] not in (1, 3) or 0 in shape[2:]:
        raise InvalidArgumentError(
            f"images must be a tensor (N, 3, H, W) or (N, 1, H, W), got shape {shape}"
        )
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise InvalidArgumentError(
                f"images must be uint8 (0-255) or float in [0, 1], got {images.dtype}"
            )
        if images.numel() and not bool(torch.isfinite(images).all()):
            raise InvalidArgumentError("the images hold NaN or infinite values")
        if images.numel():
            low, high = float(images.min()), float(images.max())
            if low < 0.0 or high > 1.0:
                raise InvalidArgumentError(
                    f"float images must lie in [0, 1], got values from {low:g} to {high:g}; "
                    "pass them before normalisation (the classifier normalises)"
                )
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    values = _label_list(labels, len(images))
    classes = [_class_of(v, model, f"label of image {i}") for i, v in enumerate(values)]
    return _Listing(
        kind="tensors",
        source=f"tensor{tuple(shape)}",
        ids=[f"#{i}" for i in range(len(images))],
        labels=classes,
        reader=_TensorReader(images),
        keys=list(range(len(images))),
    )


def _label_list(labels: Any, count: int) -> list[Any]:
    if isinstance(labels, torch.Tensor | np.ndarray):
        if labels.ndim != 1:
            raise InvalidArgumentError(
                f"labels must be one class per image, shape ({count},), got {tuple(labels.shape)}"
            )
        if isinstance(labels, torch.Tensor) and labels.is_floating_point():
            raise InvalidArgumentError(f"labels must be integers, got {labels.dtype}")
        values: list[Any] = labels.tolist()
    elif isinstance(labels, Sequence) and not isinstance(labels, str):
        values = list(labels)
    else:
        raise InvalidArgumentError(
            f"labels must be a tensor or a list of class indices, got {type(labels).__name__}"
        )
    if len(values) != count:
        raise InvalidArgumentError(f"{count} images but {len(values)} labels; give one per image")
    return values


def _list_dataset(
    dataset: Any, kind: str, shown: str, model: Classifier, max_pixels: int, strict: bool
) -> _Listing:
    try:
        size = len(dataset)
    except TypeError:
        raise InvalidArgumentError(
            f"the dataset {shown} has no length; give a map-style Dataset with __len__"
        ) from None
    targets = _targets(dataset)
    keys: list[int] = list(range(size))
    values: list[Any]
    skipped: list[tuple[str, str]] = []
    if targets is not None and not isinstance(targets, str) and _sized(targets) == size:
        values = list(targets.tolist() if isinstance(targets, torch.Tensor) else targets)
    else:
        # No label list: read every item once (images included) to learn the labels; an item
        # that cannot be read has no label, and is left out (listed in EvalData.skipped).
        values, keys = [], []
        for i in range(size):
            try:
                item = dataset[i]
            except TrompeError:
                raise
            except OSError as error:
                if strict:
                    raise ImageError(f"item {i} cannot be read: {short_reason(error)}") from None
                skipped.append((f"#{i}", short_reason(error)))
                continue
            values.append(_split_item(item, i)[1])
            keys.append(i)
    classes = [_class_of(v, model, f"dataset item {k}") for k, v in zip(keys, values, strict=True)]
    return _Listing(
        kind=kind,
        source=shown,
        ids=[f"#{k}" for k in keys],
        labels=classes,
        reader=_DatasetReader(dataset, max_pixels),
        keys=keys,
        skipped=skipped,
    )


def _targets(dataset: Any) -> Any:
    """The dataset's label list: its ``targets``, or a ``Subset``'s share of its dataset's."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        inner = _targets(dataset.dataset)
        if inner is None or isinstance(inner, str) or _sized(inner) != _sized(dataset.dataset):
            return None
        return [inner[int(i)] for i in dataset.indices]
    return getattr(dataset, "targets", None)


def _sized(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None


def _list_loader(loader: Any, model: Classifier, max_pixels: int, strict: bool) -> _Listing:
    from torch.utils.data import (
        DistributedSampler,
        IterableDataset,
        RandomSampler,
        SequentialSampler,
    )
    from torch.utils.data._utils.collate import default_collate

    sampler = getattr(loader, "sampler", None)
    shown = f"DataLoader({type(loader.dataset).__name__})"
    if isinstance(sampler, RandomSampler) or getattr(sampler, "shuffle", False) is True:
        raise InvalidArgumentError(
            "a DataLoader that shuffles has no stable order to evaluate, resume or shard by; "
            "pass shuffle=False, or its dataset"
        )
    if isinstance(sampler, DistributedSampler):
        raise InvalidArgumentError(
            "a DataLoader with a DistributedSampler holds one process's part of the data; pass "
            "the whole dataset: the evaluation shards it itself (torchrun or shard=(i, n))"
        )
    collate: Callable[..., Any] | None = getattr(loader, "collate_fn", None)
    if (
        isinstance(sampler, SequentialSampler)
        and not isinstance(loader.dataset, IterableDataset)
        and loader.batch_size is not None
        and not loader.drop_last
        and collate is default_collate
    ):
        return _list_dataset(loader.dataset, "dataloader", shown, model, max_pixels, strict)
    logger.info("reading all of %s once, into memory", shown)
    batches_images: list[torch.Tensor] = []
    batches_labels: list[Any] = []
    for number, batch in enumerate(loader):
        images, labels = _split_item(batch, number)
        if not isinstance(images, torch.Tensor):
            raise InvalidArgumentError(
                f"batch {number} of the DataLoader holds images of type "
                f"{type(images).__name__}; expected a tensor (B, 3, H, W)"
            )
        if loader.batch_size is None:  # no batching: one (image, label) item at a time
            images, labels = images.unsqueeze(0), [labels]
        batches_images.append(images.detach().cpu())
        batches_labels.extend(_label_list(labels, len(images)))
    if not batches_images:
        raise InvalidArgumentError(f"the data set {shown} holds no images")
    try:
        all_images = torch.cat(batches_images)
    except RuntimeError:
        raise InvalidArgumentError(
            f"the batches of {shown} hold images of different sizes; resize them in the "
            "dataset's transform"
        ) from None
    listing = _list_tensors(all_images, batches_labels, model)
    listing.kind, listing.source = "dataloader", shown
    return listing
