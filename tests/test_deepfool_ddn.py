"""DeepFool and DDN, the minimum-norm gradient attacks, on real models (no mocks).

The claim of the attack catalogue issue: every image they return is adversarial once rounded to
8 bits, and their median norm is below the smallest budget at which PGD succeeds on the same
images (found by bisection). Plus the engine's rules: per-image targets (DDN), no targeted form
(DeepFool), exact counters, determinism, images that already meet the goal, bad arguments.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import torch

import trompe
from trompe.attacks import PGD, MinimalEps, Progress, Targeted, Untargeted
from trompe.attacks.base import _Tracker
from trompe.attacks.ddn import DDN
from trompe.attacks.deepfool import DeepFool
from trompe.attacks.goal import Goal
from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models import Classifier

Batch = tuple[torch.Tensor, torch.Tensor]

#: Digits used for the comparison with PGD's smallest budget (bisection is per image, slow).
COMPARED = 24


def on_grid(images: torch.Tensor) -> bool:
    levels = images * 255
    return bool(torch.equal(levels, levels.round()))


def check_honest(clf: Classifier, result: trompe.AttackResult, goal: Goal) -> None:
    """The output is 8-bit, in [0, 1], and ``success`` is what the model says of it."""
    assert on_grid(result.adversarial)
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    with torch.no_grad():
        again = goal.met(clf(result.adversarial))
    assert torch.equal(again, result.success)
    finite = torch.isfinite(result.distances)
    assert torch.equal(finite, result.success)


class _RecordingPGD(PGD):
    """PGD that notes the budgets at which it met the goal (MinimalEps reports images only)."""

    successes: ClassVar[list[float]] = []

    def _run(self, model: Any, images: torch.Tensor, goal: Goal, progress: Any) -> _Tracker:
        tracker = super()._run(model, images, goal, progress)
        if bool(tracker.done.all()):
            _RecordingPGD.successes.append(self.eps)
        return tracker


def pgd_smallest_eps(
    clf: Classifier, images: torch.Tensor, labels: torch.Tensor, norm: str
) -> torch.Tensor:
    """Per image, the smallest budget (0-255 units) at which PGD-40 succeeds, by bisection."""
    max_eps = 2.5 if norm == "l2" else 64 / 255
    found = []
    for i in range(len(images)):
        _RecordingPGD.successes.clear()
        search = MinimalEps(_RecordingPGD, max_eps=max_eps, norm=norm, steps=40)  # type: ignore[arg-type]
        result = search(clf, images[i : i + 1], Untargeted(labels[i : i + 1]))
        assert bool(result.success[0]), "raise max_eps: PGD must succeed somewhere"
        found.append(min(_RecordingPGD.successes) * 255)
    return torch.tensor(found, dtype=torch.float64)


@pytest.fixture(scope="module")
def compared(digits_batch: Batch) -> Batch:
    images, labels = digits_batch
    return images[:COMPARED], labels[:COMPARED]


@pytest.fixture(scope="module")
def pgd_l2(digits_clf: Classifier, compared: Batch) -> torch.Tensor:
    return pgd_smallest_eps(digits_clf, *compared, "l2")


@pytest.fixture(scope="module")
def pgd_linf(digits_clf: Classifier, compared: Batch) -> torch.Tensor:
    return pgd_smallest_eps(digits_clf, *compared, "linf")


# -- the claim --------------------------------------------------------------------------


@pytest.mark.slow
def test_ddn_beats_pgd_bisection(
    digits_clf: Classifier, compared: Batch, pgd_l2: torch.Tensor
) -> None:
    images, labels = compared
    goal = Untargeted(labels)
    result = DDN()(digits_clf, images, goal)
    check_honest(digits_clf, result, goal)
    assert bool(result.success.all())
    # Measured: DDN 245.9 against PGD's 247.2 (0-255 units), below on 22 of the 24 digits.
    assert result.distances.median() < pgd_l2.median()
    assert torch.allclose(result.distances, result.norms.l2)


@pytest.mark.slow
def test_deepfool_l2_against_pgd_bisection(
    digits_clf: Classifier, compared: Batch, pgd_l2: torch.Tensor
) -> None:
    images, labels = compared
    goal = Untargeted(labels)
    # The default: one SuperDeepFool projection round after the first crossing.
    default = DeepFool(norm="l2")(digits_clf, images, goal)
    check_honest(digits_clf, default, goal)
    assert bool(default.success.all())
    assert default.distances.median() < pgd_l2.median()  # 245.0 against 247.2 measured
    # DeepFool as published stops at the first crossing of a linearised boundary: on this
    # small CNN that is about 0.6 % above PGD's bisection (248.6 against 247.2).
    plain = DeepFool(norm="l2", projections=0)(digits_clf, images, goal)
    check_honest(digits_clf, plain, goal)
    assert bool(plain.success.all())
    assert plain.distances.median() < 1.02 * pgd_l2.median()
    assert default.distances.median() < plain.distances.median()
    # More rounds: no larger (244.7 measured).
    more = DeepFool(norm="l2", projections=3)(digits_clf, images, goal)
    check_honest(digits_clf, more, goal)
    assert more.distances.median() <= default.distances.median()


@pytest.mark.slow
def test_deepfool_linf_against_pgd_bisection(
    digits_clf: Classifier, compared: Batch, pgd_linf: torch.Tensor
) -> None:
    images, labels = compared
    goal = Untargeted(labels)
    default = DeepFool(norm="linf")(digits_clf, images, goal)
    check_honest(digits_clf, default, goal)
    assert bool(default.success.all())
    assert torch.equal(default.distances, default.norms.linf)
    assert default.distances.median() < pgd_linf.median()  # 27 against 28
    # L-inf sizes are whole levels, and PGD's bisection is exact to the level: a tie is
    # the most DeepFool as published does here (28 and 28 measured).
    plain = DeepFool(norm="linf", projections=0)(digits_clf, images, goal)
    assert bool(plain.success.all())
    assert plain.distances.median() <= pgd_linf.median()


# -- every returned image is adversarial once saved ------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_every_image_adversarial(
    digits_clf: Classifier, digits_batch: Batch, norm: str
) -> None:
    images, labels = digits_batch
    goal = Untargeted(labels)
    result = DeepFool(norm=norm)(digits_clf, images, goal)  # type: ignore[arg-type]
    check_honest(digits_clf, result, goal)
    assert bool(result.success.all())
    assert bool((result.distances > 0).all())


def test_ddn_every_image_adversarial(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch
    goal = Untargeted(labels)
    result = DDN(steps=50)(digits_clf, images, goal)
    check_honest(digits_clf, result, goal)
    assert bool(result.success.all())


def test_deepfool_line_search_shrinks_the_change(
    digits_clf: Classifier, digits_batch: Batch
) -> None:
    """The 8-bit line search after the crossing only ever makes the change smaller."""
    images, labels = digits_batch[0][:24], digits_batch[1][:24]
    goal = Untargeted(labels)
    full = DeepFool(norm="l2")(digits_clf, images, goal)
    # One factor below 1 only (0.98), no bisection: close to the crossing point itself.
    short = DeepFool(norm="l2", search_steps=1, refine_steps=0)(digits_clf, images, goal)
    check_honest(digits_clf, short, goal)
    assert bool(full.success.all()) and bool(short.success.all())
    assert bool((full.distances <= short.distances + 1e-9).all())
    assert full.distances.median() < short.distances.median()
    # Without overshoot the crossing point sits on the boundary: the 8-bit iterates still get
    # every image across.
    assert bool(DeepFool(norm="l2", overshoot=0.0)(digits_clf, images, goal).success.all())


# -- goals ---------------------------------------------------------------------------------------


def test_ddn_reaches_per_image_targets(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch
    images, labels = images[:20], labels[:20]
    targets = (labels + 1 + torch.arange(20) % 9) % 10  # a different wrong class per image
    assert not bool((targets == labels).any())
    goal = Targeted(targets)
    result = DDN(steps=60)(digits_clf, images, goal)
    check_honest(digits_clf, result, goal)
    assert bool(result.success.all())
    assert torch.equal(result.probs_after.argmax(dim=1), targets)


def test_ddn_with_confidence(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch
    images, labels = images[:12], labels[:12]
    targets = (labels + 5) % 10
    plain = DDN(steps=60)(digits_clf, images, Targeted(targets))
    sure = DDN(steps=60)(digits_clf, images, Targeted(targets, confidence=0.9))
    assert bool(sure.success.all())
    assert bool((sure.probs_after.gather(1, targets[:, None]) >= 0.9).all())
    # A confident goal costs a larger change.
    assert sure.distances.median() > plain.distances.median()


def test_deepfool_with_confidence(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch
    images, labels = images[:12], labels[:12]
    goal = Untargeted(labels, confidence=0.9)
    result = DeepFool(norm="l2")(digits_clf, images, goal)
    check_honest(digits_clf, result, goal)
    assert bool(result.success.all())
    top = result.probs_after.max(dim=1)
    assert bool((top.values >= 0.9).all()) and not bool((top.indices == labels).any())


def test_deepfool_has_no_targeted_form(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch
    assert DeepFool.supports_targeted is False and DDN.supports_targeted is True
    with pytest.raises(InvalidArgumentError, match="no targeted form"):
        DeepFool()(digits_clf, images[:2], Targeted((labels[:2] + 1) % 10))


# -- engine rules --------------------------------------------------------------------------------


def test_counters_are_exact(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    goal = Untargeted(labels)
    plain = DeepFool(candidates=4, projections=0)(digits_clf, images, goal)
    # One gradient per candidate class other than the true one, per linearisation step.
    assert torch.equal(plain.gradients, 3 * plain.steps)
    # A projection round is a step that takes one gradient (the goal's margin), not three.
    deepfool = DeepFool(candidates=4)(digits_clf, images, goal)
    assert torch.equal(deepfool.gradients, 3 * deepfool.steps - 2)
    assert bool((deepfool.steps >= 1).all())
    # The loop evaluates each step and the crossing point; the line search adds its own.
    assert bool((deepfool.forwards >= deepfool.steps + 1 + 1 + 2).all())
    assert torch.equal(deepfool.queries, deepfool.forwards - 2)
    ddn = DDN(steps=7)(digits_clf, images, goal)
    assert torch.equal(ddn.gradients, torch.full((16,), 7))
    assert torch.equal(ddn.steps, torch.full((16,), 7))
    assert torch.equal(ddn.forwards, torch.full((16,), 7 + 1 + 2))  # steps, last check, engine


def test_deterministic(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    for attack in (DDN(steps=30, seed=3), DeepFool(norm="linf"), DeepFool(projections=2)):
        first = attack(digits_clf, images, Untargeted(labels))
        second = attack(digits_clf, images, Untargeted(labels))
        assert torch.equal(first.adversarial, second.adversarial), attack


def test_images_that_already_meet_the_goal(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:8], digits_batch[1][:8].clone()
    wrong = torch.tensor([1, 4, 6])
    labels[wrong] = (labels[wrong] + 1) % 10  # the model does not say these: goal met already
    for attack in (DeepFool(), DeepFool(norm="linf"), DDN(steps=20)):
        result = attack(digits_clf, images, Untargeted(labels))
        assert bool(result.success.all()), attack
        assert torch.equal(result.adversarial[wrong], images[wrong])
        assert bool((result.distances[wrong] == 0).all())
        assert bool((result.gradients[wrong] == 0).all())
        rest = torch.tensor([0, 2, 3, 5, 7])
        assert bool((result.distances[rest] > 0).all())
    # Targeted DDN with the current class as target for some images.
    targets = (digits_batch[1][:8] + 3) % 10
    targets[wrong] = digits_batch[1][:8][wrong]
    result = DDN(steps=30)(digits_clf, images, Targeted(targets))
    assert torch.equal(result.adversarial[wrong], images[wrong])
    assert bool(result.success.all())


def test_progress_is_reported(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:4], digits_batch[1][:4]
    seen: list[Progress] = []
    DDN(steps=5)(digits_clf, images, Untargeted(labels), progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4, 5] and seen[-1].total == 4
    seen.clear()
    DeepFool()(digits_clf, images, Untargeted(labels), progress=seen.append)
    assert seen and all(p.steps == 50 for p in seen)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DeepFool(candidates=1), "candidates"),
        (lambda: DeepFool(candidates=2.5), "candidates"),
        (lambda: DeepFool(steps=0), "steps"),
        (lambda: DeepFool(overshoot=-0.1), "overshoot"),
        (lambda: DeepFool(overshoot=math.nan), "overshoot"),
        (lambda: DeepFool(norm="l1"), "supports the l2, linf"),
        (lambda: DeepFool(norm="l3"), "norm must be one of"),
        (lambda: DeepFool(search_steps=0), "search_steps"),
        (lambda: DeepFool(refine_steps=-1), "refine_steps"),
        (lambda: DeepFool(projections=-2), "projections"),
        (lambda: DDN(norm="linf"), "supports the l2"),
        (lambda: DDN(steps=-5), "steps"),
        (lambda: DDN(init_epsilon=0), "init_epsilon"),
        (lambda: DDN(gamma=1.0), "gamma"),
        (lambda: DDN(gamma=-0.1), "gamma"),
        (lambda: DDN(step_size=0), "step_size"),
        (lambda: DDN(min_step_size=2.0), "min_step_size"),
    ],
)
def test_bad_hyper_parameters(make: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        make()


def test_params_are_plain(digits_batch: Batch) -> None:
    for attack in (DeepFool(norm="linf"), DDN()):
        params = attack.params()
        assert params["norm"] == attack.norm and "seed" in params
        assert all(isinstance(v, int | float | str | bool | type(None)) for v in params.values())
    assert DDN().params()["steps"] == 100 and DDN().params()["gamma"] == 0.05
    assert DeepFool().params()["candidates"] == 10 and DeepFool().params()["overshoot"] == 0.02
    assert DeepFool().params()["projections"] == 1


# -- the ImageNet model --------------------------------------------------------------------------


def _photo(clf: Classifier, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    image = trompe.images.load_image(trompe.images.example_path(name))[None]
    with torch.no_grad():
        label = clf(image).argmax(dim=1)
    return image, label


@pytest.mark.slow
def test_ddn_on_the_cat(imagenet_clf: Classifier) -> None:
    image, label = _photo(imagenet_clf, "chelsea")
    view = quantize(imagenet_clf.preprocess(image).clamp(0, 1))  # the model's 224 x 224 view
    goal = Untargeted(label)
    result = DDN(steps=10, init_epsilon=0.1)(imagenet_clf, view, goal)
    check_honest(imagenet_clf, result, goal)
    assert bool(result.success[0])
    # Measured: L2 18.3 in 0-255 units (17.3 with the default 100 steps from 1.0): about 330
    # of the 150528 values move by one level, and the cat becomes an Egyptian Mau.
    assert float(result.distances[0]) < 40


@pytest.mark.slow
def test_deepfool_on_the_full_size_photo(imagenet_clf: Classifier) -> None:
    image, label = _photo(imagenet_clf, "coffee")
    goal = Untargeted(label)
    result = DeepFool(norm="l2", candidates=4)(imagenet_clf, image, goal)  # any size: crops inside
    check_honest(imagenet_clf, result, goal)
    assert bool(result.success[0])
    assert result.adversarial.shape == image.shape
    # Measured: 108 in 0-255 units on the 400 x 600 photo (72.5 on the model's 224 x 224
    # view: the crop and resize average the change over about 2.4 photo pixels per input).
    assert float(result.distances[0]) < 160
