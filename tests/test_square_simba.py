"""Score-based black-box attacks: Square Attack and SimBA, on real models (digits CNN, ImageNet).

The issue's claim: Square Attack fools the pretrained ImageNet model from its scores alone, within
a stated query budget, without a single gradient, with exact query counts.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import counted, counter_of
from trompe.attacks import Progress, Targeted, Untargeted
from trompe.attacks.base import _seen_pixels, lp_norm
from trompe.attacks.oracle import Oracle
from trompe.attacks.simba import SimBA, _bands, _Directions, dct_matrix
from trompe.attacks.square import Square, _bump, p_schedule, round_l2, seen_box
from trompe.errors import AccessError, InvalidArgumentError
from trompe.images import example_path, load_image, quantize
from trompe.models import Classifier

Batch = tuple[torch.Tensor, torch.Tensor]


# -- the ImageNet model: the claim ------------------------------------------------------


def _photos(clf: Classifier) -> torch.Tensor:
    full = [load_image(example_path(name))[None] for name in ("chelsea", "coffee")]
    return torch.cat([quantize(clf.preprocess(image).clamp(0, 1)) for image in full])


def test_square_fools_the_imagenet_model_from_scores_alone(imagenet_clf: Classifier) -> None:
    """Square L-inf at 8/255 fools EfficientNet-Lite0 on the cat and the coffee (224 x 224)
    within 300 queries each (measured, seed 0: 1 and 106), with no gradient."""
    images = _photos(imagenet_clf)
    with torch.no_grad():
        labels = imagenet_clf(images).argmax(dim=1)
    assert labels.tolist() == [282, 967]  # tiger cat, espresso
    clf = counted(imagenet_clf)
    with pytest.raises(AccessError):  # the model really refuses gradients
        clf(images[:1].clone().requires_grad_(True))

    budget = 300
    result = Square(eps=8 / 255, queries=budget, seed=0)(clf, images, Untargeted(labels))

    assert bool(result.success.all())
    assert (result.queries >= 1).all() and (result.queries <= budget).all()
    assert int(result.gradients.sum()) == 0 and counter_of(clf).graph_calls == 0
    # Exact counts: the network saw the attack's queries plus the engine's two passes per image.
    assert counter_of(clf).images == int(result.queries.sum()) + 2 * len(images)
    assert torch.equal(result.forwards, result.queries + 2)
    assert float(result.norms.linf.max()) <= 8
    with torch.no_grad():
        again = imagenet_clf(result.adversarial).argmax(dim=1)
    assert torch.equal(result.success, again != labels)


def test_square_on_a_full_size_photo_changes_only_what_the_model_can_see(
    imagenet_clf: Classifier,
) -> None:
    cat = load_image(example_path("chelsea"))[None]  # 300 x 451
    clf = counted(imagenet_clf)
    result = Square(eps=8 / 255, queries=50, seed=0)(clf, cat, Untargeted([282]))
    assert bool(result.success.all())  # measured: 1 query, the stripes alone
    assert counter_of(clf).images == int(result.queries.sum()) + 2
    # The oracle tells the input size, not the crop fraction: the squares stay in the largest
    # centred square, which holds the model's crop.
    top, left, height, width = seen_box(Oracle(clf, "scores"), 300, 451)
    assert (top, left, height, width) == (0, 75, 300, 300)
    changed = (result.adversarial != cat).any(dim=1)[0]
    inside = torch.zeros_like(changed)
    inside[top : top + height, left : left + width] = True
    assert bool(changed.any()) and not bool((changed & ~inside).any())


def test_seen_box_is_the_region_the_preprocessing_reads(imagenet_clf: Classifier) -> None:
    for height, width in [(300, 451), (400, 600), (600, 400), (225, 224), (1000, 37)]:
        images = torch.rand(1, 3, height, width)
        mask = _seen_pixels(imagenet_clf, images)
        assert mask is not None
        top, left, h, w = seen_box(imagenet_clf, height, width)  # knows its crop fraction
        expected = torch.zeros(height, width, dtype=torch.bool)
        expected[top : top + h, left : left + w] = True
        assert torch.equal(mask[0, 0], expected)
        # Through an oracle (input size only): a larger box that holds the exact one.
        o_top, o_left, o_h, o_w = seen_box(Oracle(imagenet_clf, "scores"), height, width)
        assert o_top <= top and o_left <= left
        assert o_top + o_h >= top + h and o_left + o_w >= left + w
    assert seen_box(imagenet_clf, 224, 224) == (0, 0, 224, 224)


# -- digits: success, targets, budgets, counts ---------------------------------------------------


@pytest.mark.parametrize(
    ("attack", "rate", "median"),
    [
        (Square(eps=0.3, norm="linf", queries=200, seed=0), 0.95, 60),
        (Square(eps=3.0, norm="l2", queries=300, seed=0), 0.95, 60),
        (SimBA(eps=3.0, basis="dct", queries=500, seed=0), 0.95, 250),
        (SimBA(eps=3.0, basis="pixel", queries=500, seed=0), 0.9, 300),
    ],
    ids=["square-linf", "square-l2", "simba-dct", "simba-pixel"],
)
def test_untargeted_success_on_digits(
    attack: Square | SimBA,
    rate: float,
    median: int,
    digits_clf: Classifier,
    digits_batch: Batch,
) -> None:
    images, labels = digits_batch[0][:32], digits_batch[1][:32]
    clf = counted(digits_clf)
    result = attack(clf, images, Untargeted(labels))
    assert float(result.success.float().mean()) >= rate
    assert float(result.queries[result.success].float().median()) <= median
    assert (result.queries <= attack.queries).all()
    assert counter_of(clf).images == int(result.queries.sum()) + 2 * len(images)
    assert counter_of(clf).graph_calls == 0 and int(result.gradients.sum()) == 0
    limit = attack.eps * 255 + 1e-4
    assert (result.norms.of(attack.norm) <= limit).all()
    with torch.no_grad():
        again = digits_clf(result.adversarial).argmax(dim=1)
    assert torch.equal(result.success, again != labels)


@pytest.mark.parametrize(
    "attack",
    [
        Square(eps=0.3, norm="linf", queries=300, seed=0),
        Square(eps=3.0, norm="l2", queries=300, seed=0),
        SimBA(eps=3.0, queries=500, seed=0),
    ],
    ids=["square-linf", "square-l2", "simba-dct"],
)
def test_targeted_runs_reach_per_image_targets(
    attack: Square | SimBA, digits_clf: Classifier, digits_batch: Batch
) -> None:
    images, labels = digits_batch[0][:12], digits_batch[1][:12]
    targets = (labels + 1 + torch.arange(12) % 9) % 10  # a different target per image
    result = attack(digits_clf.with_access("scores"), images, Targeted(targets))
    with torch.no_grad():
        predicted = digits_clf(result.adversarial).argmax(dim=1)
    assert torch.equal(result.success, predicted == targets)
    assert float(result.success.float().mean()) >= 0.75


def test_a_targeted_confidence_is_reached(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:8], digits_batch[1][:8]
    targets = (labels + 3) % 10
    goal = Targeted(targets, confidence=0.9)
    result = Square(eps=0.3, queries=300, seed=1)(digits_clf.with_access("scores"), images, goal)
    assert float(result.success.float().mean()) >= 0.75
    reached = result.probs_after.gather(1, targets[:, None]).squeeze(1)
    assert (reached[result.success] > 0.9).all()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    norm=st.sampled_from(["linf", "l2"]),
    levels=st.floats(min_value=0.6, max_value=80.0),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    queries=st.integers(min_value=1, max_value=12),
)
def test_square_stays_within_its_budget_after_rounding(
    norm: str,
    levels: float,
    seed: int,
    queries: int,
    digits_clf: Classifier,
    digits_batch: Batch,
) -> None:
    eps = levels / 255 if norm == "linf" else levels / 25  # L2: 0.02 to 3.2
    images, labels = digits_batch[0][:6], digits_batch[1][:6]
    attack = Square(eps=eps, norm=norm, queries=queries, seed=seed)  # type: ignore[arg-type]
    result = attack(digits_clf.with_access("scores"), images, Untargeted(labels))
    adversarial = result.adversarial
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert torch.equal(quantize(adversarial), adversarial)
    size = lp_norm(adversarial - images, norm)  # type: ignore[arg-type]
    assert (size <= eps + 1e-6).all()
    assert (result.queries <= queries).all()
    with torch.no_grad():
        again = digits_clf(adversarial).argmax(dim=1)
    assert torch.equal(result.success, again != labels)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    eps=st.floats(min_value=0.05, max_value=4.0),
    basis=st.sampled_from(["dct", "pixel"]),
    step_size=st.sampled_from([None, 0.1, 0.2, 0.5]),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_simba_stays_within_its_budget_after_rounding(
    eps: float,
    basis: str,
    step_size: float | None,
    seed: int,
    digits_clf: Classifier,
    digits_batch: Batch,
) -> None:
    images, labels = digits_batch[0][:6], digits_batch[1][:6]
    attack = SimBA(eps=eps, basis=basis, step_size=step_size, queries=40, seed=seed)  # type: ignore[arg-type]
    result = attack(digits_clf.with_access("scores"), images, Untargeted(labels))
    assert torch.equal(quantize(result.adversarial), result.adversarial)
    assert (lp_norm(result.adversarial - images, "l2") <= eps + 1e-6).all()
    assert (result.queries <= 40).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: Square(eps=0.2, queries=60, seed=seed),
        lambda seed: Square(eps=2.0, norm="l2", queries=60, seed=seed),
        lambda seed: SimBA(eps=2.0, queries=80, seed=seed),
        lambda seed: SimBA(eps=2.0, basis="pixel", queries=80, seed=seed),
    ],
    ids=["square-linf", "square-l2", "simba-dct", "simba-pixel"],
)
def test_same_seed_same_result(make: object, digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:8], digits_batch[1][:8]
    clf = digits_clf.with_access("scores")
    first = make(5)(clf, images, Untargeted(labels))  # type: ignore[operator]
    second = make(5)(clf, images, Untargeted(labels))  # type: ignore[operator]
    other = make(6)(clf, images, Untargeted(labels))  # type: ignore[operator]
    assert torch.equal(first.adversarial, second.adversarial)
    assert torch.equal(first.queries, second.queries)
    assert not torch.equal(first.adversarial, other.adversarial)


@pytest.mark.parametrize(
    "attack",
    [
        Square(eps=0.2, queries=50),
        Square(eps=2.0, norm="l2", queries=50),
        SimBA(eps=2.0, queries=50),
    ],
    ids=["square-linf", "square-l2", "simba"],
)
def test_images_that_meet_the_goal_already_cost_nothing(
    attack: Square | SimBA, digits_clf: Classifier, digits_batch: Batch
) -> None:
    images, labels = digits_batch[0][:6], digits_batch[1][:6].clone()
    labels[[1, 4]] = (labels[[1, 4]] + 1) % 10  # the model does not say these: goal met
    clf = counted(digits_clf)
    result = attack(clf, images, Untargeted(labels))
    assert torch.equal(result.adversarial[[1, 4]], images[[1, 4]])
    assert bool(result.success[[1, 4]].all())
    assert result.queries[[1, 4]].tolist() == [0, 0]
    assert (result.queries[[0, 2, 3, 5]] >= 1).all()
    assert counter_of(clf).images == int(result.queries.sum()) + 2 * len(images)


def test_budget_exhausted_images_spend_exactly_their_queries(
    digits_clf: Classifier, digits_batch: Batch
) -> None:
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    for attack in (Square(eps=0.05, queries=7), SimBA(eps=0.3, queries=7)):
        clf = counted(digits_clf)
        result = attack(clf, images, Untargeted(labels))
        failed = ~result.success
        assert bool(failed.any())
        assert (result.queries[failed] == 7).all()
        assert (result.steps[failed] >= 1).all()
        assert counter_of(clf).images == int(result.queries.sum()) + 2 * len(images)


def test_labels_only_models_are_refused(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:2], digits_batch[1][:2]
    for attack in (Square(eps=0.1), SimBA(eps=1.0)):
        with pytest.raises(AccessError, match="needs scores"):
            attack(digits_clf.with_access("labels"), images, Untargeted(labels))


def test_progress_is_reported(digits_clf: Classifier, digits_batch: Batch) -> None:
    images, labels = digits_batch[0][:4], digits_batch[1][:4]
    for attack in (Square(eps=0.1, queries=20), SimBA(eps=1.0, queries=20)):
        seen: list[tuple[int, int, int]] = []

        def record(p: Progress, seen: list[tuple[int, int, int]] = seen) -> None:
            seen.append((p.step, p.done, p.total))

        attack(digits_clf.with_access("scores"), images, Untargeted(labels), progress=record)
        assert seen and all(step <= 20 and done <= total == 4 for step, done, total in seen)
        assert [s for s, _, _ in seen] == sorted(s for s, _, _ in seen)


def test_square_on_larger_images_keeps_to_the_seen_box(digits_clf: Classifier) -> None:
    """Digits blown up to 12 x 16 for a classifier that crops and resizes them back to 8 x 8."""
    from trompe.models.digits import load_digits

    data = load_digits()
    big = F.interpolate(data.test_images[:16], size=(12, 16), mode="nearest")
    clf = counted(digits_clf, input_size=8, crop_fraction=1.0, interpolation="bilinear")
    with torch.no_grad():
        labels = clf(big).argmax(dim=1)
    attacks = [(Square(eps=0.3, queries=150), 0.75), (SimBA(eps=3.0, queries=300), 0.5)]
    for attack, rate in attacks:
        result = attack(clf, big, Untargeted(labels))
        assert float(result.success.float().mean()) >= rate
        changed = (result.adversarial != big).any(dim=1)
        assert not bool(changed[:, :, :2].any()) and not bool(changed[:, :, 14:].any())
        assert bool(changed[:, :, 2:14].any())


# -- hyper-parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize("queries", [0, -5, 2.5, True])
def test_bad_query_budgets_are_refused(queries: object) -> None:
    with pytest.raises(InvalidArgumentError, match="queries"):
        Square(eps=0.1, queries=queries)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="queries"):
        SimBA(eps=1.0, queries=queries)  # type: ignore[arg-type]


def test_bad_hyper_parameters_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="threat model"):
        Square(eps=0.1, norm="l1")
    with pytest.raises(InvalidArgumentError, match="threat model"):
        SimBA(eps=0.1, norm="linf")
    with pytest.raises(InvalidArgumentError, match="norm must be one of"):
        Square(eps=0.1, norm="l3")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="eps"):
        Square(eps=0)
    with pytest.raises(InvalidArgumentError, match="p_init"):
        Square(eps=0.1, p_init=0)
    with pytest.raises(InvalidArgumentError, match="p_init"):
        Square(eps=0.1, p_init=1.5)
    with pytest.raises(InvalidArgumentError, match="basis"):
        SimBA(eps=1.0, basis="fft")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="step_size"):
        SimBA(eps=1.0, step_size=-0.2)
    with pytest.raises(InvalidArgumentError, match="freq_ratio"):
        SimBA(eps=1.0, freq_ratio=2.0)
    with pytest.raises(InvalidArgumentError, match="freq_ratio"):
        SimBA(eps=1.0, freq_ratio=0.0)


def test_hyper_parameters_are_reported() -> None:
    assert Square(eps=0.1).params() == {
        "eps": 0.1,
        "norm": "linf",
        "queries": 5000,
        "p_init": 0.8,
        "rescale": True,
        "seed": 0,
    }
    params = SimBA(eps=3.0).params()
    assert params["basis"] == "dct" and params["queries"] == 10000 and params["norm"] == "l2"
    assert Square.access == "scores" and SimBA.access == "scores"
    assert SimBA.norms == ("l2",) and not SimBA.minimum_norm


# -- the pieces, against the papers' definitions -------------------------------------------------


def test_p_schedule_is_the_reference_schedule() -> None:
    # For 10,000 queries: halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000.
    expected = {0: 0.8, 10: 0.8, 11: 0.4, 50: 0.4, 51: 0.2, 200: 0.2, 201: 0.1, 1001: 0.8 / 32}
    expected |= {8000: 0.8 / 256, 8001: 0.8 / 512, 9999: 0.8 / 512}
    for iteration, p in expected.items():
        assert p_schedule(0.8, iteration, 10_000) == pytest.approx(p)
    # Rescaled to the budget: with 1,000 queries, iteration 5 is the reference's 50.
    assert p_schedule(0.8, 5, 1000) == pytest.approx(0.4)
    assert p_schedule(0.8, 6, 1000) == pytest.approx(0.2)


def _reference_bump(side: int) -> torch.Tensor:
    """The L2 update shape written out as the paper's nested rectangles, loop by loop."""

    def rectangles(height: int, width: int) -> torch.Tensor:
        out = torch.zeros(height, width, dtype=torch.float64)
        for k in range(max(height // 2, width // 2) + 1):
            top, left = height // 2 - k, width // 2 - k
            out[max(top, 0) : top + 2 * k + 1, max(left, 0) : left + 2 * k + 1] += 1 / (k + 1) ** 2
        return out / out.norm() if height else out

    shape = torch.cat([rectangles(side // 2, side), -rectangles(side - side // 2, side)])
    out: torch.Tensor = shape / shape.norm()
    return out


@pytest.mark.parametrize("side", [1, 2, 3, 4, 7, 8, 44, 45])
def test_the_l2_bump(side: int) -> None:
    bump = _bump(side, torch.device("cpu"), torch.float64)
    assert bump.shape == (side, side)
    assert float(bump.norm()) == pytest.approx(1.0)
    assert torch.allclose(bump, _reference_bump(side))
    assert (bump[: side // 2] > 0).all() and (bump[side // 2 :] < 0).all()


def test_dct_basis_and_low_frequencies_first() -> None:
    for size in (1, 7, 8, 224):
        basis = dct_matrix(size, torch.device("cpu"), torch.float64)
        assert torch.allclose(basis @ basis.T, torch.eye(size, dtype=torch.float64), atol=1e-10)
    bands = _bands(224, 224, 0.125, torch.device("cpu")).view(224, 224)
    assert (bands[:28, :28] == 0).all() and bands[28, 0] == 1 and bands[34, 34] == 1
    assert bands[35, 0] == 2 and bands.max() == 28  # bands 7 wide, as the reference's stride
    attack = SimBA(eps=1.0, seed=0)
    directions = _Directions(
        attack,
        3,
        32,
        32,
        torch.device("cpu"),
        torch.float32,
        attack._generator(torch.device("cpu")),
    )
    # The first 3 x 4 x 4 directions are the lowest frequencies of the three channels.
    lowest = torch.stack([directions.next() for _ in range(48)])
    assert torch.allclose(lowest.flatten(1).norm(dim=1), torch.ones(48))
    coefficients = torch.einsum("ui,ncij,vj->ncuv", directions.rows, lowest, directions.cols)
    assert (
        coefficients[..., 4:, :].abs().max() < 1e-5 and coefficients[..., :, 4:].abs().max() < 1e-5
    )


def test_simba_pixel_steps_are_the_papers(digits_clf: Classifier, digits_batch: Batch) -> None:
    """Pixel basis, step 0.2 (51 levels), no binding budget, fewer queries than pixels: every
    value changes by exactly 51 levels or is clipped at black or white."""
    images, labels = digits_batch[0][:8], digits_batch[1][:8]
    attack = SimBA(eps=100.0, basis="pixel", queries=150, seed=0)
    result = attack(digits_clf.with_access("scores"), images, Untargeted(labels))
    change = (result.adversarial - images) * 255
    moved = change.abs() > 0.5
    assert bool(moved.any())
    exact = (change.abs() - 51).abs() < 1e-3
    clipped = (result.adversarial == 0) | (result.adversarial == 1)
    assert bool((exact | clipped)[moved].all())


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    eps=st.floats(min_value=0.05, max_value=20.0),
    size=st.sampled_from([(3, 8, 8), (3, 32, 32), (3, 17, 5)]),
)
def test_l2_rounding_keeps_the_budget_and_most_of_the_change(
    seed: int, eps: float, size: tuple[int, int, int]
) -> None:
    generator = torch.Generator().manual_seed(seed)
    images = quantize(torch.rand(4, *size, generator=generator))
    direction = torch.randn(4, *size, generator=generator)
    delta = direction / lp_norm(direction, "l2").view(-1, 1, 1, 1) * eps
    adversarial = (images + delta).clamp(0, 1)
    rounded = round_l2(SimBA(eps=eps), adversarial, images)
    assert torch.equal(quantize(rounded), rounded)
    sizes = lp_norm(rounded - images, "l2")
    assert (sizes <= eps + 1e-6).all()
    # Rounding towards the original would lose about half a level per value; this keeps more
    # than what the rounding noise of all values together can take.
    wanted = lp_norm(adversarial - images, "l2")
    noise = math.sqrt(math.prod(size)) / 255
    assert (sizes >= wanted - noise).all()


def test_the_unrescaled_schedule_is_autoattacks(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """AutoAttack's standard Square runs 5000 queries on its 10,000-query schedule: the squares
    halve at the same iterations whatever the query count (rescale=False); by default trompe fits
    the schedule to the queries."""
    assert [p_schedule(0.8, i, 10_000) for i in (10, 11, 50, 51, 4000, 4001)] == [
        0.8,
        0.4,
        0.4,
        0.2,
        0.8 / 2**6,
        0.8 / 2**7,
    ]
    assert p_schedule(0.8, 2001, 5000) == p_schedule(0.8, 4002, 10_000)
    with pytest.raises(InvalidArgumentError, match="rescale"):
        Square(eps=0.1, rescale=1)  # type: ignore[arg-type]
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    model = digits_clf.with_access("scores")
    fitted = Square(eps=16 / 255, queries=60, seed=3)(model, images, Untargeted(labels))
    kept = Square(eps=16 / 255, queries=60, seed=3, rescale=False)(
        model, images, Untargeted(labels)
    )
    # Same start, then other square sizes: the searches part ways.
    assert not torch.equal(fitted.adversarial, kept.adversarial)
