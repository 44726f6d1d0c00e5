"""FMN on the digits CNN: as small as the other minimum-norm attacks, through the adaptive bound.

The property suite of test_catalogue.py covers it as every registered attack (8-bit output,
success equal to re-prediction, same result twice, per-image targets).
"""

from __future__ import annotations

import pytest
import torch

from trompe.attacks import DDN, FAB, FMN, Targeted, Untargeted, get_attack, sweep
from trompe.errors import InvalidArgumentError
from trompe.models import Classifier


@pytest.fixture(scope="module")
def batch(digits_batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return digits_batch[0][:32], digits_batch[1][:32]


def test_l2_distances_match_ddn(
    digits_clf: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = batch
    fmn = FMN(norm="l2", steps=20)(digits_clf, images, Untargeted(labels))
    ddn = DDN(steps=20)(digits_clf, images, Untargeted(labels))
    assert bool(fmn.success.all())
    # Both find every image; FMN's changes are no larger (it stops on the boundary from both
    # sides with a shrinking factor, as DDN, but starts from the linearised boundary).
    assert float(fmn.distances.median()) <= 1.02 * float(ddn.distances.median())


def test_linf_distances_match_fab(
    digits_clf: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = batch
    fmn = FMN(norm="linf", steps=20)(digits_clf, images, Untargeted(labels))
    fab = FAB(norm="linf", steps=10)(digits_clf, images, Untargeted(labels))
    assert bool(fmn.success.all())
    assert float(fmn.distances.median()) <= 1.05 * float(fab.distances.median())
    assert torch.equal(fmn.distances, fmn.norms.linf)  # measured on the returned 8-bit images


def test_targeted_and_with_confidence(
    digits_clf: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = batch
    targets = (labels + 1 + torch.arange(len(labels)) % 9) % 10
    result = FMN(steps=30)(digits_clf, images, Targeted(targets, confidence=0.9))
    with torch.no_grad():
        probs = digits_clf(result.adversarial).softmax(dim=1)
    reached = probs[torch.arange(len(targets)), targets] > 0.9
    assert torch.equal(result.success, reached)
    assert float(result.success.float().mean()) >= 0.9


def test_more_steps_never_hurt_much(
    digits_clf: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = batch
    short = FMN(steps=5)(digits_clf, images, Untargeted(labels))
    long = FMN(steps=40)(digits_clf, images, Untargeted(labels))
    assert int(long.success.sum()) >= int(short.success.sum())
    both = short.success & long.success
    assert float(long.distances[both].mean()) <= float(short.distances[both].mean()) + 1e-6


def test_registry_factory_and_sweep(
    digits_clf: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = batch[0][:8], batch[1][:8]
    attack = get_attack("fmn").create(norm="linf", steps=10)
    assert isinstance(attack, FMN) and attack.norm == "linf"
    out = sweep("fmn", digits_clf, images, Untargeted(labels), [8 / 255, 64 / 255], norm="linf")
    assert len(out.results) == 1 and out.success_rate[0] <= out.success_rate[1]


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="threat model"):
        FMN(norm="l1")
    with pytest.raises(InvalidArgumentError, match="min_step_size"):
        FMN(step_size=0.1, min_step_size=0.2)
    with pytest.raises(InvalidArgumentError, match="gamma"):
        FMN(gamma=1.5)
    with pytest.raises(InvalidArgumentError, match="min_gamma"):
        FMN(gamma=0.01, min_gamma=0.05)
