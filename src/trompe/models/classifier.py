"""The Classifier: the one model type that every attack and interface of trompe talks to."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trompe.errors import AccessError, InvalidArgumentError
from trompe.images import center_crop_resize
from trompe.labels import Labels

__all__ = ["ACCESS_LEVELS", "Access", "Classifier", "Prediction"]

#: What a classifier lets an attack see: its gradients (white box), only its output scores, or
#: only its top-1 label (decision-based). Each level includes the ones after it.
Access = Literal["gradients", "scores", "labels"]
ACCESS_LEVELS: tuple[Access, ...] = ("gradients", "scores", "labels")


@dataclass(frozen=True)
class Prediction:
    """One class among a classifier's top predictions for one image.

    Attributes:
        index: the class index.
        label: its readable name.
        prob: its softmax probability, in [0, 1].
    """

    index: int
    label: str
    prob: float

    def __str__(self) -> str:
        return f"{self.label} ({self.index}): {self.prob:.2%}"


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = (int(s) for s in size)
    return (height, width)


class Classifier(nn.Module):
    """An image classifier that takes RGB images in [0, 1] and returns logits.

    The classifier owns its preprocessing, so callers never normalise by hand: it normalises
    with its ``mean`` and ``std`` inside ``forward`` and, where the network wants a fixed
    ``input_size``, brings any other size there with the network's own evaluation transform (a
    centred crop of ``crop_fraction`` of the shorter side, then an antialiased resize). Both are
    differentiable, so an attack can work on a full-size photo. Images that already have the
    input size pass without crop or resize.

    The wrapped network is frozen: the classifier stays in eval mode (``train()`` leaves it so)
    and its parameters do not require gradients, so gradients flow to the images only.

    Args:
        model: any module mapping normalised (B, 3, h, w) images to (B, num_classes) logits.
        mean: per-channel mean, in the [0, 1] scale, subtracted before ``model``.
        std: per-channel standard deviation, in the [0, 1] scale.
        labels: the class names in index order (a :class:`~trompe.labels.Labels` or a list of
            strings); ``None`` names the classes "class 0", "class 1"... on first use.
        input_size: (height, width) or a side that ``model`` needs; ``None`` passes any size.
        crop_fraction: the part of the shorter side kept by the centred crop, in (0, 1].
        interpolation: the ``torch.nn.functional.interpolate`` mode of the resize.
        name: a name to show in reports.
        access: what attacks may use: ``"gradients"`` (white box, the default), ``"scores"``
            (output probabilities only) or ``"labels"`` (the top-1 class only). Below
            ``"gradients"`` the classifier refuses to take part in a backward pass, and attacks
            that need more than it gives are refused; see :meth:`with_access`.

    Shape:
        - Input: (B, 3, H, W), float, RGB in [0, 1].
        - Output: (B, num_classes) logits.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        >>> clf = Classifier(net, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=8,
        ...                  labels=["a", "b", "c", "d"])
        >>> clf(torch.rand(2, 3, 32, 48)).shape
        torch.Size([2, 4])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        labels: Labels | Sequence[str] | None = None,
        input_size: int | Sequence[int] | None = None,
        crop_fraction: float = 1.0,
        interpolation: str = "bicubic",
        name: str = "custom",
        access: Access = "gradients",
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(
                f"Classifier wraps a torch.nn.Module, got {type(model).__name__}"
            )
        if len(mean) != 3 or len(std) != 3:
            raise InvalidArgumentError(
                f"mean and std need 3 values (R, G, B), got {len(mean)} and {len(std)}"
            )
        if any(s <= 0 for s in std):
            raise InvalidArgumentError(f"std must be positive, got {tuple(std)}")
        if access not in ACCESS_LEVELS:
            raise InvalidArgumentError(
                f"access must be one of {', '.join(ACCESS_LEVELS)}, got {access!r}"
            )
        if not 0.0 < crop_fraction <= 1.0:
            raise InvalidArgumentError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.model = model
        self.name = name
        #: Where the model came from (``builtin``, ``timm``, ...; ``custom`` for a wrapped
        #: module), the network a state dict was loaded into, and the preprocessing fields and
        #: label file that the user set: :func:`trompe.load_model` fills them in.
        self.source = "custom"
        self.arch: str | None = None
        self.overrides: dict[str, object] = {}
        self.access: Access = access
        #: Appended to the refusal of an attack that needs more access (how to get it).
        self.access_hint = ""
        self.input_size: tuple[int, int] | None = None if input_size is None else _pair(input_size)
        self.crop_fraction = float(crop_fraction)
        self.interpolation = interpolation
        self._labels = labels if labels is None or isinstance(labels, Labels) else Labels(labels)
        # Non-persistent buffers: they follow .to(device) but stay out of the state dict.
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.requires_grad_(False)
        super().train(False)

    # -- nn.Module ---------------------------------------------------------------------------

    def train(self, mode: bool = True) -> Classifier:
        """Keep eval mode: batch-norm statistics and dropout must not change under an attack."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise InvalidArgumentError(
                f"a Classifier takes images of shape (B, 3, H, W), got {tuple(images.shape)}"
            )
        if self.access != "gradients" and torch.is_grad_enabled() and images.requires_grad:
            raise AccessError(
                f"model {self.name!r} gives {self.access} only, no gradients; use an attack "
                "that needs no gradients (see `trompe attacks`)"
                + (f", {self.access_hint}" if self.access_hint else "")
            )
        logits: torch.Tensor = self.model(self.normalize(self.preprocess(images)))
        return logits

    def with_access(self, access: Access) -> Classifier:
        """The same classifier (sharing its network) with another access level.

        Example:
            >>> black_box = clf.with_access("scores")  # doctest: +SKIP
            >>> Square(eps=8 / 255)(black_box, images, Untargeted(labels))  # doctest: +SKIP
        """
        if access not in ACCESS_LEVELS:
            raise InvalidArgumentError(
                f"access must be one of {', '.join(ACCESS_LEVELS)}, got {access!r}"
            )
        other = copy.copy(self)
        other.access = access
        return other

    # -- preprocessing -----------------------------------------------------------------------

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Bring images to the input size with the evaluation crop and resize (differentiable).

        Images that have the input size already, and any image when the classifier has no
        fixed size, are returned as they are.

        Shape:
            - Input: (B, 3, H, W) in [0, 1].
            - Output: (B, 3, h, w) with (h, w) the input size.
        """
        if self.input_size is None or tuple(images.shape[-2:]) == self.input_size:
            return images
        return center_crop_resize(
            images,
            self.input_size,
            crop_fraction=self.crop_fraction,
            interpolation=self.interpolation,
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the network's normalisation: ``(images - mean) / std``."""
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    # -- metadata ----------------------------------------------------------------------------

    @property
    def labels(self) -> Labels:
        """The class names, in index order."""
        if self._labels is None:
            self._labels = Labels([f"class {i}" for i in range(self.num_classes)])
        return self._labels

    @property
    def num_classes(self) -> int:
        """The number of classes (the width of the logits)."""
        if self._labels is not None:
            return len(self._labels)
        size = self.input_size or (32, 32)
        with torch.no_grad():
            return int(self(torch.zeros(1, 3, *size, device=self.device)).shape[-1])

    @property
    def preprocessing(self) -> dict[str, object]:
        """The effective preprocessing, JSON-ready: mean, std, input size, crop, resize mode.

        Example:
            >>> trompe.load_model().preprocessing["input_size"]  # doctest: +SKIP
            [224, 224]
        """
        return {
            "mean": [round(v, 6) for v in self.mean.flatten().tolist()],
            "std": [round(v, 6) for v in self.std.flatten().tolist()],
            "input_size": None if self.input_size is None else list(self.input_size),
            "crop_fraction": round(self.crop_fraction, 6),
            "interpolation": self.interpolation,
        }

    def describe(self, *, num_classes: int | None = None) -> dict[str, object]:
        """The model as JSON-ready data: what ``trompe models --info`` shows and result.json
        records as ``model_info``.

        Keys: ``id`` (the name), ``source``, ``arch`` (a state dict's network, else None),
        ``num_classes``, ``access``, ``preprocessing`` (the effective one) and ``overrides``
        (the fields of it, and the label file, that the user set). ``num_classes``, when the
        caller knows it, saves the forward pass that counts the classes of an unlabelled model.
        """
        return {
            "id": self.name,
            "source": self.source,
            "arch": self.arch,
            "num_classes": self.num_classes if num_classes is None else num_classes,
            "access": self.access,
            "preprocessing": self.preprocessing,
            "overrides": {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in self.overrides.items()
            },
        }

    @property
    def device(self) -> torch.device:
        """The device of the classifier's parameters and buffers."""
        return self.mean.device

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, access={self.access!r}, input_size={self.input_size}, "
            f"crop_fraction={self.crop_fraction:.4f}, interpolation={self.interpolation!r}"
        )

    # -- predictions -------------------------------------------------------------------------

    def _batch(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack images of any sizes into one preprocessed batch on the classifier's device."""
        if isinstance(images, torch.Tensor):
            items = [images] if images.dim() == 3 else list(images)
        else:
            items = list(images)
        if not items:
            raise InvalidArgumentError("no images given")
        batch = []
        for item in items:
            if not isinstance(item, torch.Tensor) or item.dim() != 3 or item.shape[0] != 3:
                shape = tuple(item.shape) if isinstance(item, torch.Tensor) else type(item)
                raise InvalidArgumentError(
                    f"expected images of shape (3, H, W) or (B, 3, H, W), got {shape}"
                )
            if not item.is_floating_point():
                raise InvalidArgumentError(
                    f"expected float images in [0, 1], got dtype {item.dtype}; "
                    "use trompe.load_image to read and convert a photo"
                )
            if item.numel() and (item.min() < 0 or item.max() > 1):
                raise InvalidArgumentError(
                    "image values must lie in [0, 1] (RGB); got values in "
                    f"[{item.min().item():.3g}, {item.max().item():.3g}]"
                )
            item = item.to(self.device, torch.float32)
            batch.append(self.preprocess(item.unsqueeze(0)))
        return torch.cat(batch)

    @torch.no_grad()
    def probs(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Softmax probabilities of a batch, or of a list of images of different sizes.

        Shape:
            - Input: (B, 3, H, W), (3, H, W), or a list of (3, H_i, W_i), in [0, 1].
            - Output: (B, num_classes).
        """
        logits: torch.Tensor = self(self._batch(images))
        return logits.softmax(dim=-1)

    def predict(
        self, images: torch.Tensor | Sequence[torch.Tensor], k: int = 5
    ) -> list[list[Prediction]]:
        """The top ``k`` classes of each image, most probable first.

        Args:
            images: (B, 3, H, W), (3, H, W), or a list of (3, H_i, W_i) images in [0, 1].
            k: how many classes to return per image.

        Returns:
            One list of :class:`Prediction` per image.

        Raises:
            InvalidArgumentError: ``k`` outside [1, num_classes], or images of a wrong shape or
                outside [0, 1].

        Example:
            >>> clf = trompe.load_model()                                  # doctest: +SKIP
            >>> clf.predict(trompe.load_image(trompe.example_path()))[0][0]  # doctest: +SKIP
            Prediction(index=282, label='tiger cat', prob=0.38...)
        """
        probs = self.probs(images)
        if not 1 <= k <= probs.shape[-1]:
            raise InvalidArgumentError(f"k must be between 1 and {probs.shape[-1]}, got {k}")
        values, indices = probs.topk(k, dim=-1)
        return [
            [
                Prediction(int(i), self.labels[int(i)], float(p))
                for p, i in zip(row_p.tolist(), row_i.tolist(), strict=True)
            ]
            for row_p, row_i in zip(values, indices, strict=True)
        ]
