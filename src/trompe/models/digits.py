"""A small digit classifier, trained in seconds on scikit-learn's handwritten digits.

For fast experiments and tests of attacks on a real (if tiny) model: 1,797 8x8 scans of the digits
0-9 (UCI ML hand-written digits, shipped with scikit-learn), as RGB images on the 8-bit grid, and
a small convolutional network trained on 80 % of them (~98 % accuracy on the rest in ~3 s on
two CPU cores). Needs ``scikit-learn`` (``pip install trompe[test]``).

Example:
    >>> data = load_digits()                          # doctest: +SKIP
    >>> clf = train_digits_classifier(data, seed=0)   # doctest: +SKIP
    >>> (clf(data.test_images).argmax(1) == data.test_labels).float().mean()  # doctest: +SKIP
    tensor(0.98...)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trompe.errors import MissingWeightsError
from trompe.models.classifier import Classifier

__all__ = ["DigitsData", "load_digits", "train_digits_classifier"]


@dataclass(frozen=True)
class DigitsData:
    """The digits split in a fixed way: images (N, 3, 8, 8) in [0, 1], on the 8-bit grid."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> DigitsData:
    """scikit-learn's digits as RGB images in [0, 1], split into training and test sets."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MissingWeightsError(
            "the digits data set needs scikit-learn: pip install scikit-learn"
        ) from error
    raw = sklearn_digits()
    # Grey levels 0..16 -> the nearest 8-bit level, so that images are exactly savable.
    grey = torch.as_tensor(raw.images, dtype=torch.float32)
    grey = (grey * 255 / 16).round() / 255
    images = grey[:, None].expand(-1, 3, -1, -1).contiguous()
    labels = torch.as_tensor(raw.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    cut = int(len(labels) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    return DigitsData(images[train], labels[train], images[test], labels[test])


class _DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


def train_digits_classifier(
    data: DigitsData | None = None, *, epochs: int = 25, seed: int = 0
) -> Classifier:
    """Train the small network on ``data`` (default: :func:`load_digits`), deterministically.

    The global random state is left untouched: initialisation and shuffling draw from ``seed``.
    """
    data = data or load_digits()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _DigitsNet()
        generator = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
        inputs = (data.train_images - 0.5) / 0.5
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for batch in torch.split(order, 64):
                loss = nn.functional.cross_entropy(net(inputs[batch]), data.train_labels[batch])
                optimiser.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
    net.eval()
    return Classifier(
        net,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        labels=[str(i) for i in range(10)],
        name="digits-cnn",
    )
