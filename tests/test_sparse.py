"""Sparse (L0) attacks: PGD-L0, JSMA and the one-pixel attack, on the digits CNN (real model)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trompe.attacks import AttackResult, Progress, Targeted, Untargeted
from trompe.attacks.base import Attack, _seen_pixels, project_l0
from trompe.attacks.onepixel import OnePixel
from trompe.attacks.sparse import JSMA, PGDL0, project_l0_box
from trompe.errors import AccessError, InvalidArgumentError
from trompe.images import example_path, load_image, quantize
from trompe.models import Classifier

Batch = tuple[torch.Tensor, torch.Tensor]


def check_honest(
    attack: Attack, clf: Classifier, images: torch.Tensor, goal: object
) -> AttackResult:
    """The output is 8-bit, in [0, 1], within the pixel budget, and success is re-prediction."""
    assert isinstance(goal, Targeted | Untargeted)
    result = attack(clf, images, goal)
    adv = result.adversarial
    assert torch.equal(quantize(adv), adv)
    assert adv.min() >= 0 and adv.max() <= 1
    budget = int(attack.eps)  # type: ignore[attr-defined]
    assert (result.norms.l0 <= budget).all(), result.norms.l0
    changed = (quantize(images) != adv).any(dim=1).flatten(1).sum(dim=1)
    assert (changed <= budget).all()
    with torch.no_grad():
        assert torch.equal(result.success, goal.met(clf(adv)))
    return result


# -- the projection ----------------------------------------------------------------------------


def test_box_projection_is_the_exact_euclidean_projection() -> None:
    """Brute force over every set of k pixels: project_l0_box attains the smallest distance."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        images = torch.rand((1, 3, 2, 3), generator=generator)
        delta = 3 * torch.randn((1, 3, 2, 3), generator=generator)
        for k in (1, 2, 4):
            ours = project_l0_box(delta, images, k)
            changed = (ours != 0).any(dim=1).sum()
            assert changed <= k
            assert ((images + ours) >= -1e-6).all() and ((images + ours) <= 1 + 1e-6).all()
            clipped = (images + delta).clamp(0, 1) - images
            best = min(
                float((delta - clipped * mask).square().sum())
                for subset in itertools.combinations(range(6), k)
                for mask in [torch.zeros(6).index_fill(0, torch.tensor(subset), 1).view(1, 1, 2, 3)]
            )
            assert float((delta - ours).square().sum()) <= best + 1e-5


def test_box_projection_prefers_the_pixel_that_can_move() -> None:
    """A white pixel pushed further up cannot change; the plain L0 projection keeps it anyway."""
    images = torch.zeros(1, 3, 1, 2)
    images[..., 0] = 1.0  # pixel 0 is white
    delta = torch.zeros(1, 3, 1, 2)
    delta[..., 0] = 5.0  # pushed far beyond white: no feasible change
    delta[..., 1] = 0.5  # black pixel pushed halfway up: a real change
    plain = project_l0(delta, 1)
    assert plain[..., 0].abs().sum() > 0 and plain[..., 1].abs().sum() == 0
    ours = project_l0_box(delta, images, 1)
    assert ours[..., 0].abs().sum() == 0
    assert torch.allclose(ours[..., 1], torch.full((1, 3, 1), 0.5))


# -- PGD-L0 --------------------------------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(eps=st.integers(1, 12), seed=st.integers(0, 10_000), targeted=st.booleans())
def test_pgd_l0_respects_the_pixel_budget_after_rounding(
    digits_clf: Classifier, digits_batch: Batch, eps: int, seed: int, targeted: bool
) -> None:
    images, labels = digits_batch[0][:6], digits_batch[1][:6]
    goal = Targeted((labels + 3) % 10) if targeted else Untargeted(labels)
    attack = PGDL0(eps=eps, steps=5, restarts=2, step_size=1.0, seed=seed)
    check_honest(attack, digits_clf, images, goal)


def test_pgd_l0_untargeted_succeeds_with_few_pixels(
    digits_clf: Classifier, digits_batch: Batch
) -> None:
    images, labels = digits_batch
    result = PGDL0(eps=3, steps=20, restarts=1, step_size=1.0)(
        digits_clf, images, Untargeted(labels)
    )
    # Measured: 58 of 64 digits with 3 of 64 pixels (seed 0).
    assert result.success_rate >= 0.8
    assert (result.norms.l0 <= 3).all()
    assert (result.gradients >= 1).all() and (result.queries == result.forwards - 2).all()


def test_pgd_l0_per_image_targets(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:32], digits_batch[1][:32]
    targets = (labels + 1 + torch.arange(32) % 9) % 10  # a different offset per image
    goal = Targeted(targets)
    result = PGDL0(eps=10, steps=20, restarts=1, step_size=1.0)(digits_clf, images, goal)
    # Measured: 32 of 32 digits reach their own target with 10 pixels (seed 0).
    assert result.success_rate >= 0.85
    with torch.no_grad():
        predicted = digits_clf(result.adversarial).argmax(dim=1)
    assert torch.equal(predicted[result.success], targets[result.success])


def test_pgd_l0_is_deterministic_and_seed_matters(
    digits_clf: Classifier, digits_batch: Batch
) -> None:
    images, labels = digits_batch[0][:8], digits_batch[1][:8]
    goal = Untargeted(labels)

    def run(seed: int) -> torch.Tensor:
        return PGDL0(eps=2, steps=5, restarts=2, seed=seed)(digits_clf, images, goal).adversarial

    first = run(1)
    assert torch.equal(first, run(1))
    assert not torch.equal(first, run(2))


def test_pgd_l0_without_early_stop_still_in_budget(
    digits_clf: Classifier, digits_batch: Batch
) -> None:
    images, labels = digits_batch[0][:8], digits_batch[1][:8]
    attack = PGDL0(eps=4, steps=6, restarts=1, early_stop=False)
    result = attack(digits_clf, images, Untargeted(labels))
    assert (result.norms.l0 <= 4).all()
    assert (result.gradients == 6).all()


def test_sparse_attacks_on_images_larger_than_the_model_input(
    digits_clf: Classifier, digits_batch: Batch
) -> None:
    """Digits at 20 x 24, which the model crops and resizes to 8 x 8: budget on the big image."""
    clf = Classifier(
        digits_clf.model, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=8, crop_fraction=0.9
    )
    images = quantize(torch.nn.functional.interpolate(digits_batch[0][:4], size=(12, 16)))
    with torch.no_grad():
        labels = clf(images).argmax(dim=1)
    goal = Untargeted(labels)
    jsma = JSMA(eps=4)
    jsma.max_candidates = 100  # pairs among the 100 best of 576 values, as on large images
    for attack in (PGDL0(eps=4, steps=10, restarts=1, step_size=1.0), jsma):
        result = check_honest(attack, clf, images, goal)
        assert result.adversarial.shape == images.shape
    scores = clf.with_access("scores")
    check_honest(OnePixel(eps=6, population=20, steps=3), scores, images, goal)


# -- JSMA ----------------------------------------------------------------------------------------


@settings(max_examples=6, deadline=None)
@given(eps=st.integers(1, 8), theta=st.sampled_from([1.0, -1.0, 0.4]), targeted=st.booleans())
def test_jsma_respects_the_pixel_budget(
    digits_clf: Classifier, digits_batch: Batch, eps: int, theta: float, targeted: bool
) -> None:
    images, labels = digits_batch[0][:6], digits_batch[1][:6]
    goal = Targeted((labels + 5) % 10) if targeted else Untargeted(labels)
    check_honest(JSMA(eps=eps, theta=theta), digits_clf, images, goal)


def test_jsma_targeted_and_untargeted(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    targets = (labels + 1 + torch.arange(16) % 9) % 10
    targeted = JSMA(eps=15)(digits_clf, images, Targeted(targets))
    untargeted = JSMA(eps=5)(digits_clf, images, Untargeted(labels))
    # Measured: 14 of 16 targeted with 15 pixels; 15 of 16 untargeted with 5 pixels.
    assert targeted.success.sum() >= 11 and untargeted.success.sum() >= 12
    with torch.no_grad():
        predicted = digits_clf(targeted.adversarial).argmax(dim=1)
    assert torch.equal(predicted[targeted.success], targets[targeted.success])
    assert (targeted.norms.l0 <= 15).all() and (untargeted.norms.l0 <= 5).all()
    # Per move: one forward pass and two backward passes; then one forward pass finds success.
    won = untargeted.success
    assert torch.equal(untargeted.gradients[won], 2 * untargeted.steps[won])
    assert torch.equal(untargeted.forwards[won], untargeted.steps[won] + 1 + 2)


def test_jsma_softmax_saliency(digits_clf: Classifier, digits_batch: Batch) -> None:
    """C&W's JSMA-F: one backward pass per move, and more targets reached with 10 pixels."""
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    targets = (labels + 1 + torch.arange(16) % 9) % 10
    goal = Targeted(targets)
    softmax = check_honest(JSMA(eps=10, saliency="softmax"), digits_clf, images, goal)
    logits = JSMA(eps=10)(digits_clf, images, goal)
    # Measured: softmax 15 of 16, logits 10 of 16 (on 64 digits: 88 % against 53 %).
    assert softmax.success.sum() >= 11
    assert softmax.success.sum() > logits.success.sum()
    won = softmax.success
    assert torch.equal(softmax.gradients[won], softmax.steps[won])


# -- the one-pixel attack ------------------------------------------------------------------------


def test_one_pixel_needs_scores_only_and_counts_queries(
    digits_clf: Classifier, digits_batch: Batch
) -> None:
    scores = digits_clf.with_access("scores")
    images, labels = digits_batch[0][:32], digits_batch[1][:32]
    with pytest.raises(AccessError):  # this model refuses gradients...
        PGDL0(eps=3, steps=2)(scores, images, Untargeted(labels))
    # ... and the one-pixel attack runs on it.
    attack = OnePixel(eps=3, population=40, steps=20, queries=300, seed=0)
    result = attack(scores, images, Untargeted(labels))
    assert (result.gradients == 0).all()
    assert (result.queries <= 300).all()
    assert torch.equal(result.queries, result.forwards - 2)
    # Exact counts: 40 at the start, 40 per generation, the last generation cut to the budget.
    done_at = {40 * g for g in range(1, 8)} | {300}
    assert set(result.queries.tolist()) <= done_at
    assert (result.queries[~result.success] == 300).all()
    # Measured: 7 of 32 digits with 3 pixels and 300 queries.
    assert result.success.sum() >= 4
    assert (result.norms.l0 <= 3).all()


@pytest.mark.parametrize("pixels", [pytest.param(1, marks=pytest.mark.slow), 3])
def test_one_pixel_success_rate(digits_clf: Classifier, digits_batch: Batch, pixels: int) -> None:
    images, labels = digits_batch
    attack = OnePixel(eps=pixels, population=100, steps=10, seed=0)
    result = check_honest(attack, digits_clf.with_access("scores"), images, Untargeted(labels))
    # Measured on these 64 digits, 1,100 queries at most: 1 pixel 10, 3 pixels 28. (Trying
    # every pixel in each of the 8 corner colours finds a 1-pixel change for 15 of the 64.)
    assert result.success.sum() >= {1: 6, 3: 20}[pixels]
    assert (result.norms.l0 <= pixels).all()


def test_one_pixel_targeted_and_deterministic(digits_clf: Classifier, digits_batch: Batch) -> None:
    scores = digits_clf.with_access("scores")
    images = digits_batch[0][:16]
    with torch.no_grad():
        targets = digits_clf(images).topk(2, dim=1).indices[:, 1]  # each digit's runner-up
    attack = OnePixel(eps=5, population=40, steps=10, seed=3)
    first = attack(scores, images, Targeted(targets))
    again = attack(scores, images, Targeted(targets))
    assert torch.equal(first.adversarial, again.adversarial)
    assert torch.equal(first.queries, again.queries)
    with torch.no_grad():
        predicted = digits_clf(first.adversarial).argmax(dim=1)
    assert torch.equal(first.success, predicted == targets)
    # Measured: 7 of 16 reach their own target with 5 pixels.
    assert first.success.sum() >= 4


def test_already_misclassified_images_are_left_alone(
    digits_clf: Classifier, digits_batch: Batch
) -> None:
    images, labels = digits_batch[0][:8], digits_batch[1][:8].clone()
    wrong = torch.tensor([1, 4, 6])
    labels[wrong] = (labels[wrong] + 1) % 10  # the model does not predict these labels
    goal = Untargeted(labels)
    attacks: list[Attack] = [PGDL0(eps=3, steps=5, restarts=1), JSMA(eps=3)]
    scores = digits_clf.with_access("scores")
    for attack, model in [
        *((a, digits_clf) for a in attacks),
        (OnePixel(eps=2, population=20, steps=3), scores),
    ]:
        result = attack(model, images, goal)
        assert torch.equal(result.adversarial[wrong], images[wrong])
        assert (result.queries[wrong] == 0).all() and (result.steps[wrong] == 0).all()
        assert (result.queries[[0, 2, 3, 5, 7]] > 0).all()
        assert result.success[wrong].all()


def test_progress_is_reported(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:4], digits_batch[1][:4]
    scores = digits_clf.with_access("scores")
    runs: list[tuple[Attack, Classifier]] = [
        (PGDL0(eps=2, steps=3, restarts=1), digits_clf),
        (JSMA(eps=2), digits_clf),
        (OnePixel(eps=1, population=8, steps=3), scores),
    ]
    for attack, model in runs:
        seen: list[Progress] = []
        attack(model, images, Untargeted(labels), progress=seen.append)
        assert seen, attack.name
        assert all(p.total == 4 and 0 <= p.done <= 4 for p in seen)
        assert [p.step for p in seen] == sorted(p.step for p in seen)
        assert all(0 <= p.goal_prob <= 1 for p in seen)


@pytest.mark.slow
def test_one_pixel_on_the_imagenet_model(imagenet_clf: Classifier) -> None:
    """A photo at 224 x 224, scores only: exact queries within the budget."""
    photo = load_image(example_path("chelsea"))[None]
    image = quantize(imagenet_clf.preprocess(photo).clamp(0, 1))
    scores = imagenet_clf.with_access("scores")
    with torch.no_grad():
        label = int(imagenet_clf(image).argmax())
    attack = OnePixel(eps=3, population=30, steps=10, queries=90, seed=0)
    result = attack(scores, image, Untargeted([label]))
    assert int(result.queries[0]) == 90 and int(result.gradients[0]) == 0
    assert float(result.norms.l0[0]) <= 3
    # The fittest candidate lowers the cat's probability (the paper's fitness). Success needs
    # more: 300 queries took "tabby" from 0.424 to 0.395 only (3 pixels), still top-1.
    assert result.probs_after[0, label] < result.probs_before[0, label]


@pytest.mark.slow
def test_pgd_l0_on_a_full_size_photo(imagenet_clf: Classifier) -> None:
    """The 451 x 300 photo through the model's crop and resize: 30 pixels, where it looks."""
    photo = load_image(example_path("chelsea"))[None]
    result = PGDL0(eps=30, steps=30, restarts=1)(imagenet_clf, photo, Untargeted([282]))
    # Measured: "tabby" (0.42) becomes "Egyptian cat" after 6 steps.
    assert bool(result.success[0]) and float(result.norms.l0[0]) <= 30
    assert result.adversarial.shape == photo.shape
    seen = _seen_pixels(imagenet_clf, photo)
    assert seen is not None
    changed = (result.adversarial != quantize(photo)).any(dim=1, keepdim=True)
    assert not (changed & ~seen).any(), "pixels outside the model's crop were changed"


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PGDL0(eps=3, norm="linf"), "supports the l0"),
        (lambda: PGDL0(eps=2.5), "number of pixels"),
        (lambda: PGDL0(eps=0), "eps must be"),
        (lambda: PGDL0(eps=3, steps=0), "steps must be"),
        (lambda: JSMA(eps=3, norm="l2"), "supports the l0"),
        (lambda: JSMA(eps=3, theta=0.0), "theta"),
        (lambda: JSMA(eps=3, theta=1.5), "theta"),
        (lambda: JSMA(eps=3, saliency="probs"), "saliency must be"),  # type: ignore[arg-type]
        (lambda: OnePixel(eps=1, queries=0), "queries must be"),
        (lambda: OnePixel(eps=1, queries=-5), "queries must be"),
        (lambda: OnePixel(eps=1, population=3), "population must be at least 4"),
        (lambda: OnePixel(eps=1, mutation=0), "mutation must be"),
        (lambda: OnePixel(eps=1, norm="linf"), "supports the l0"),
    ],
)
def test_bad_hyper_parameters(make: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        make()  # type: ignore[operator]
