"""Auto-PGD (APGD-CE, APGD-DLR, APGD-T) on the digits CNN and the pretrained ImageNet model."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from trompe.attacks import PGD, Targeted, Untargeted
from trompe.attacks.apgd import (
    APGD,
    APGDDLR,
    APGDT,
    checkpoints,
    dlr_loss,
    targeted_dlr_loss,
)
from trompe.attacks.base import FixedBudgetAttack
from trompe.errors import InvalidArgumentError
from trompe.images import example_path, load_image, quantize
from trompe.models import Classifier
from trompe.models.digits import DigitsData

Batch = tuple[torch.Tensor, torch.Tensor]
LEMON = 951


def robust_accuracy(result_success: torch.Tensor) -> float:
    return 1.0 - float(result_success.float().mean())


@pytest.fixture(scope="module")
def test_digits(digits: DigitsData) -> Batch:
    """The first 200 test digits, right or wrong: robust accuracy is measured on these."""
    return digits.test_images[:200], digits.test_labels[:200]


def all_variants(eps: float, norm: str = "linf", steps: int = 10) -> list[APGD]:
    return [
        APGD(eps=eps, norm=norm, steps=steps, seed=1),  # type: ignore[arg-type]
        APGDDLR(eps=eps, norm=norm, steps=steps, seed=1),  # type: ignore[arg-type]
        APGDT(eps=eps, norm=norm, steps=steps, targets=3, seed=1),  # type: ignore[arg-type]
    ]


# -- the schedule and the losses ---------------------------------------------------------------


def test_checkpoints_follow_the_paper() -> None:
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then 1.05, past the end)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(200) == [44, 82, 114, 140, 160, 174, 186, 198]
    for steps in range(1, 60):
        found = checkpoints(steps)
        assert found == sorted(set(found))
        assert all(0 < w < steps for w in found)
    assert checkpoints(1) == []


def test_dlr_losses_on_real_logits(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch
    with torch.no_grad():
        logits = digits_clf(images[:32])
    labels = labels[:32]
    loss = dlr_loss(logits, labels)
    # right-classified digits: negative; scale- and shift-invariant
    assert (loss < 0).all()
    assert torch.allclose(dlr_loss(3 * logits + 7, labels), loss, atol=1e-5)
    wrong = (labels + 1) % 10
    assert (dlr_loss(logits, wrong) > 0).all()  # the top class is not `wrong`
    # targeted: towards the true class, it is positive; towards another, negative
    assert (targeted_dlr_loss(logits, labels) > 0).all()
    assert (targeted_dlr_loss(logits, wrong) < 0).all()
    assert torch.allclose(
        targeted_dlr_loss(2 * logits - 1, wrong, labels), targeted_dlr_loss(logits, wrong, labels)
    )


# -- what the paper claims ---------------------------------------------------------------------


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_apgd_at_least_as_strong_as_pgd_and_apgd_t_at_least_as_strong_as_apgd_ce(
    digits_clf: Classifier, test_digits: Batch, norm: str, eps: float
) -> None:
    images, labels = test_digits
    goal = Untargeted(labels)
    common = {"eps": eps, "norm": norm, "steps": 20, "seed": 0}
    pgd = robust_accuracy(PGD(**common)(digits_clf, images, goal).success)  # type: ignore[arg-type]
    ce = robust_accuracy(APGD(**common)(digits_clf, images, goal).success)  # type: ignore[arg-type]
    t = robust_accuracy(APGDT(**common)(digits_clf, images, goal).success)  # type: ignore[arg-type]
    assert 0.2 < pgd < 0.9, "the budget must leave room to tell the attacks apart"
    assert ce <= pgd
    assert t <= ce


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 1.5)])
def test_apgd_strictly_stronger_than_pgd_with_few_steps(
    digits_clf: Classifier, test_digits: Batch, norm: str, eps: float
) -> None:
    # PGD's fixed step (eps / 4) needs several steps to cross the ball; APGD's first step
    # (2 eps) crosses it at once, then shrinks where progress stalls.
    images, labels = test_digits
    goal = Untargeted(labels)
    common = {"eps": eps, "norm": norm, "steps": 5, "seed": 0}
    pgd = robust_accuracy(PGD(**common)(digits_clf, images, goal).success)  # type: ignore[arg-type]
    ce = robust_accuracy(APGD(**common)(digits_clf, images, goal).success)  # type: ignore[arg-type]
    assert ce <= pgd - 0.05


def test_apgd_t_more_targets_never_weaker(digits_clf: Classifier, test_digits: Batch) -> None:
    images, labels = test_digits
    goal = Untargeted(labels)
    one = APGDT(eps=0.1, steps=10, targets=1)(digits_clf, images, goal)
    nine = APGDT(eps=0.1, steps=10, targets=9)(digits_clf, images, goal)
    assert bool((nine.success | ~one.success).all()), "a later target only adds successes"
    assert int(nine.success.sum()) > int(one.success.sum())
    assert int(nine.gradients.sum()) > int(one.gradients.sum())


# -- properties of every attack ----------------------------------------------------------------


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    eps_levels=st.integers(min_value=1, max_value=80),
    seed=st.integers(min_value=0, max_value=2**16),
    norm=st.sampled_from(["linf", "l2"]),
    variant=st.sampled_from(["apgd-ce", "apgd-dlr", "apgd-t"]),
)
def test_budget_grid_range_and_honest_success(
    digits_clf: Classifier,
    digits_batch: Batch,
    eps_levels: int,
    seed: int,
    norm: str,
    variant: str,
) -> None:
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    eps = eps_levels / 255 if norm == "linf" else eps_levels / 40
    cls = {"apgd-ce": APGD, "apgd-dlr": APGDDLR, "apgd-t": APGDT}[variant]
    attack = cls(eps=eps, norm=norm, steps=4, seed=seed)
    goal = Untargeted(labels)
    result = attack(digits_clf, images, goal)
    adv = result.adversarial
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(quantize(adv), adv)
    delta = (adv - images).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert (delta.norm(dim=1) <= eps + 1e-5).all()
    with torch.no_grad():
        assert torch.equal(result.success, goal.met(digits_clf(adv)))
    assert torch.equal(result.steps, result.gradients)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_deterministic_with_a_seed(digits_clf: Classifier, digits_batch: Batch, norm: str) -> None:
    images, labels = digits_batch[0][:12], digits_batch[1][:12]
    eps = 0.03 if norm == "linf" else 0.3  # small: most digits never succeed, every step runs
    for attack in all_variants(eps, norm, steps=6):
        first = attack(digits_clf, images, Untargeted(labels))
        second = attack(digits_clf, images, Untargeted(labels))
        assert torch.equal(first.adversarial, second.adversarial)
        assert torch.equal(first.gradients, second.gradients)
        other = type(attack)(eps=eps, norm=norm, steps=6, seed=2)  # type: ignore[arg-type]
        assert not torch.equal(
            other(digits_clf, images, Untargeted(labels)).adversarial, first.adversarial
        )


def test_already_misclassified_images_come_back_unchanged(
    digits_clf: Classifier, digits: DigitsData, digits_batch: Batch
) -> None:
    with torch.no_grad():
        predicted = digits_clf(digits.test_images).argmax(dim=1)
    wrong = (predicted != digits.test_labels).nonzero().squeeze(1)[:3]
    assert len(wrong) == 3
    images = torch.cat([digits_batch[0][:5], digits.test_images[wrong]])
    labels = torch.cat([digits_batch[1][:5], digits.test_labels[wrong]])
    for attack in all_variants(0.1):
        result = attack(digits_clf, images, Untargeted(labels))
        assert torch.equal(result.adversarial[5:], images[5:])
        assert result.success[5:].all()
        assert (result.gradients[5:] == 0).all() and (result.forwards[5:] == 2).all()
        assert (result.gradients[:5] > 0).all()


def test_exact_counts_without_early_stop(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:8], digits_batch[1][:8]
    steps = 12
    result = APGD(eps=0.02, steps=steps, early_stop=False)(digits_clf, images, Untargeted(labels))
    # a gradient at the start and after each step but the last; a forward pass at each of
    # the steps + 1 points; one before and one after the attack, in the engine
    assert (result.gradients == steps).all()
    assert (result.forwards == steps + 3).all()


def test_early_stop_saves_work(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:32], digits_batch[1][:32]
    goal = Untargeted(labels)
    fast = APGD(eps=0.2, steps=20)(digits_clf, images, goal)
    full = APGD(eps=0.2, steps=20, early_stop=False)(digits_clf, images, goal)
    assert fast.success.float().mean() >= 0.9 and full.success.float().mean() >= 0.9
    assert int(fast.gradients.sum()) < int(full.gradients.sum()) / 3
    assert int(fast.gradients.max()) <= 20


def test_per_image_targets_reached(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:32], digits_batch[1][:32]
    goal = Targeted((labels + 1) % 10)
    for attack in all_variants(0.3, steps=30):
        result = attack(digits_clf, images, goal)
        with torch.no_grad():
            predicted = digits_clf(result.adversarial).argmax(dim=1)
        assert torch.equal(predicted == goal.classes, result.success)
        assert result.success.float().mean() >= 0.95, attack.name
        assert (result.norms.linf <= round(0.3 * 255)).all()


def test_targeted_with_a_confidence(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    goal = Targeted((labels + 3) % 10, confidence=0.9)
    result = APGD(eps=0.3, steps=30)(digits_clf, images, goal)
    probs = result.probs_after.gather(1, goal.classes[:, None]).squeeze(1)
    assert result.success.float().mean() >= 0.9
    assert (probs[result.success] >= 0.9).all()


def test_progress_is_reported(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:4], digits_batch[1][:4]
    seen: list[tuple[int, int]] = []
    attack = APGDT(eps=0.01, steps=5, targets=2, early_stop=False)
    attack(
        digits_clf, images, Untargeted(labels), progress=lambda p: seen.append((p.step, p.steps))
    )
    assert seen == [(i, 10) for i in range(1, 11)]
    # more targets than other classes: capped at the 9 other digits
    seen.clear()
    attack = APGDT(eps=0.01, steps=1, targets=50, early_stop=False)
    attack(
        digits_clf, images, Untargeted(labels), progress=lambda p: seen.append((p.step, p.steps))
    )
    assert seen == [(i, 9) for i in range(1, 10)]


# -- ImageNet ----------------------------------------------------------------------------------


def test_imagenet_full_size_photo_targeted_with_apgd_t(imagenet_clf: Classifier) -> None:
    photo = load_image(example_path("chelsea"))[None]
    eps = 10 / 255
    result = APGDT(eps=eps, steps=40)(imagenet_clf, photo, Targeted([LEMON]))
    assert result.adversarial.shape == photo.shape
    assert bool(result.success[0])
    assert float(result.norms.linf[0]) <= 10
    assert int(result.gradients[0]) < 40, "early stop: the lemon takes a few steps"


def test_imagenet_untargeted_l2(imagenet_clf: Classifier) -> None:
    photo = quantize(imagenet_clf.preprocess(load_image(example_path("coffee"))[None]).clamp(0, 1))
    result = APGD(eps=0.5, norm="l2", steps=20, loss="dlr")(imagenet_clf, photo, Untargeted([967]))
    assert bool(result.success[0])
    assert float(result.norms.l2[0]) <= 0.5 * 255 + 1e-3


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (APGD, {"loss": "foo"}, "loss must be one of ce, dlr"),
        (APGDT, {"targets": 0}, "targets must be a whole number above 0"),
        (APGDT, {"targets": 2.5}, "targets must be a whole number above 0"),
        (APGD, {"norm": "l1"}, "supports the linf, l2 threat model"),
        (APGDDLR, {"norm": "l0"}, "supports the linf, l2 threat model"),
        (APGD, {"steps": 0}, "steps must be a whole number above 0"),
        (APGD, {"restarts": -1}, "restarts must be a whole number above 0"),
        (APGD, {"rho": 1.5}, "rho is a fraction"),
        (APGD, {"rho": 0}, "rho must be a number above 0"),
        (APGDT, {"momentum": 0}, "momentum must be a number above 0"),
        (APGD, {"momentum": 2}, "momentum is the weight"),
        (APGD, {"restarts": 3, "random_start": False}, "restarts need random_start=True"),
        (APGD, {"eps": 8}, "eps is in [0, 1] units"),
        (APGDT, {"eps": -0.1}, "eps must be a number above 0"),
    ],
)
def test_bad_hyper_parameters(
    cls: type[FixedBudgetAttack], kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, Any] = {"eps": 0.1, **kwargs}
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        cls(**args)


class _FirstClasses(nn.Module):
    """The digits model restricted to its first few classes: a real model with fewer classes."""

    def __init__(self, clf: Classifier, classes: int) -> None:
        super().__init__()
        self.clf = clf
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.clf(x)[:, : self.classes]
        return out


@pytest.mark.parametrize(
    ("attack", "classes", "goal"),
    [
        (APGDDLR(eps=0.1), 2, Untargeted([0])),
        (APGDT(eps=0.1), 3, Untargeted([0])),
        (APGDDLR(eps=0.1), 3, Targeted([1])),
    ],
)
def test_dlr_needs_enough_classes(
    digits_clf: Classifier, digits_batch: Batch, attack: APGD, classes: int, goal: Untargeted
) -> None:
    small = Classifier(_FirstClasses(digits_clf, classes), labels=[str(i) for i in range(classes)])
    images, labels = digits_batch
    image = images[labels == 0][:1]  # a zero: class 0 is top-1 of the small model too
    with pytest.raises(InvalidArgumentError, match=f"at least {3 if classes == 2 else 4} classes"):
        attack(small, image, goal)
    # the cross-entropy works with two classes
    APGD(eps=0.1, steps=2)(small, image, Untargeted([0]))


def test_registry_attributes() -> None:
    assert (APGD.name, APGDDLR.name, APGDT.name) == ("apgd-ce", "apgd-dlr", "apgd-t")
    for cls in (APGD, APGDDLR, APGDT):
        assert cls.norms == ("linf", "l2") and cls.supports_targeted
        assert "Croce & Hein 2020" in cls.summary
    assert APGDDLR(eps=0.1).loss == "dlr" and APGD(eps=0.1).loss == "ce"
    params = APGDT(eps=0.1).params()
    assert "loss" not in params  # APGD-T always uses the targeted DLR loss
    assert params["targets"] == 9 and params["steps"] == 100 and params["restarts"] == 1
    assert params["rho"] == 0.75 and params["momentum"] == 0.75 and params["seed"] == 0
