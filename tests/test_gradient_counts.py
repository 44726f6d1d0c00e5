"""The gradient hook's bookkeeping: forwards and backward passes as the model saw them."""

from __future__ import annotations

import pytest
import torch

from _helpers import counter_of, counting
from trompe.attacks import PGD, Untargeted
from trompe.attacks.gradient import GradientOptions
from trompe.models import Classifier


@pytest.mark.parametrize(
    ("options", "per_step"),
    [
        (None, 1),
        (GradientOptions(samples=3), 3),
        (GradientOptions(variance=2), 3),
        (GradientOptions(samples=2, variance=2, diversity=1.0, momentum=1.0), 6),
    ],
)
def test_counts_match_what_the_model_saw(
    digits_clf: Classifier,
    digits_batch: tuple[torch.Tensor, torch.Tensor],
    options: GradientOptions | None,
    per_step: int,
) -> None:
    images, labels = digits_batch
    images, labels = images[:4], labels[:4]
    clf, counter = counting(digits_clf, access="gradients")
    steps = 5
    result = PGD(eps=8 / 255, steps=steps, early_stop=False, gradient=options)(
        clf, images, Untargeted(labels)
    )
    # Every image takes every step (no early stop): each step is `per_step` backward passes.
    assert result.steps.tolist() == [steps] * 4
    assert result.gradients.tolist() == [steps * per_step] * 4
    # Forwards: what the network was given, image by image.
    assert int(result.forwards.sum()) == counter_of(clf).images
    # One batched call with a graph per backward pass (the whole batch runs every step).
    assert counter.graph_calls == steps * per_step
