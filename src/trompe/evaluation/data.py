"""Data sets to evaluate on: folders, manifests, built-ins, tensors, Datasets and DataLoaders.

Owner: the data helper. Interface fixed by the skeleton; see the docstrings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from trompe.evaluation._types import Chunk
from trompe.models.classifier import Classifier

__all__ = ["EvalData", "load_data"]


@dataclass(frozen=True, eq=False)
class EvalData:
    """A data set ready to evaluate: ids and labels known up front, images read per chunk.

    Attributes:
        ids: one id per image, in evaluation order (paths relative to the root for folders and
            manifests, ``"#<position>"`` for tensors and datasets, ``"digits#17"`` etc.).
        labels: (N,) the true classes, as indices of the model's classes.
        description: JSON-ready: ``kind`` (``"folder"``, ``"manifest"``, ``"builtin"``,
            ``"tensors"``, ``"dataset"``), ``source`` (the path or name), ``n``, and
            ``fingerprint``: a SHA-256 over ids and labels, so that a resume or a merge on
            other data is refused.
        skipped: (id, reason) of entries refused when the data set was listed (not in ``ids``).
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
        return -(-len(self) // batch_size)

    def chunk(self, index: int, batch_size: int) -> Chunk:
        """Read chunk ``index``: positions ``index * batch_size`` to the next chunk's first.

        Images are brought to the model's input size the way its own preprocessing says (the
        centred crop and resize of :func:`trompe.images.center_crop_resize`) and onto the 8-bit
        grid. An image that cannot be read is listed in ``Chunk.skipped``.
        """
        raise NotImplementedError


def load_data(
    source: Any,
    model: Classifier,
    *,
    n: int | None = None,
    strict: bool = False,
    max_pixels: int | None = None,
) -> EvalData:
    """List a data set for ``model``.

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
        n: evaluate a deterministic subset of this many images (spread over the classes).
        strict: an unreadable image is an error rather than skipped and listed.
        max_pixels: refuse images larger than this (default: :mod:`trompe.images`' cap).

    Raises:
        InvalidArgumentError: an empty data set, labels that are not the model's classes, a
            manifest path outside its root, an unknown built-in.
        ImageError: with ``strict``, an unreadable image.
    """
    raise NotImplementedError
