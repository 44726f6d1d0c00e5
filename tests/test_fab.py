"""FAB, the fast adaptive boundary attack: projections, minimality, 8-bit honesty, targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trompe.attacks import PGD, MinimalEps, Targeted, Untargeted, get_attack
from trompe.attacks.base import Norm, Progress, _seen_pixels, lp_norm
from trompe.attacks.fab import FAB, FABT, project_on_hyperplane
from trompe.errors import InvalidArgumentError
from trompe.images import example_path, load_image, quantize
from trompe.models import Classifier

Batch = tuple[torch.Tensor, torch.Tensor]


def _size(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    return lp_norm(delta.view(len(delta), 1, 1, -1), norm)


# -- the projection onto a hyperplane within the box ---------------------------------------------


@pytest.mark.parametrize(
    ("point", "w", "r", "norm", "expected"),
    [
        # No bound in the way: the classic closed forms.
        ([0.5, 0.5], [2.0, 1.0], 0.2, "linf", [0.2 / 3, 0.2 / 3]),
        ([0.5, 0.5], [2.0, 1.0], 0.2, "l2", [0.08, 0.04]),
        ([0.5, 0.5], [2.0, 1.0], 0.2, "l1", [0.1, 0.0]),
        # The first coordinate hits the bound 1: the second one makes up the rest.
        ([0.95, 0.5], [1.0, 1.0], 0.3, "linf", [0.05, 0.25]),
        ([0.95, 0.5], [1.0, 1.0], 0.3, "l2", [0.05, 0.25]),
        ([0.9, 0.5], [2.0, 1.0], 0.5, "l1", [0.1, 0.3]),
        # A negative change moves the other way, towards 0.
        ([0.5, 0.02], [1.0, 1.0], -0.3, "linf", [-0.28, -0.02]),
        # Out of reach: every coordinate goes to the bound that helps; w = 0 never moves.
        ([0.9, 0.2, 0.5], [1.0, -1.0, 0.0], 5.0, "l2", [0.1, -0.2, 0.0]),
        ([1.0, 1.0], [1.0, 1.0], 0.1, "linf", [0.0, 0.0]),
    ],
)
def test_projection_small_cases_are_exact(
    point: list[float], w: list[float], r: float, norm: Norm, expected: list[float]
) -> None:
    move = project_on_hyperplane(
        torch.tensor([point], dtype=torch.float64),
        torch.tensor([w], dtype=torch.float64),
        torch.tensor([r], dtype=torch.float64),
        norm,
    )
    assert move[0].tolist() == pytest.approx(expected, abs=1e-12)


def _optimum(point: np.ndarray, w: np.ndarray, r: float, norm: str) -> float | None:
    """The smallest norm of a move onto the hyperplane within the box, by linear programming
    (L-inf, L1) or SLSQP (L2); None where no move reaches it."""
    from scipy.optimize import linprog, minimize

    dims = len(point)
    low, high = -point, 1 - point
    if not w.any():
        return 0.0 if r == 0 else None
    if norm == "linf":  # variables: the move and its bound lam
        cost = np.r_[np.zeros(dims), 1.0]
        bound = np.block(
            [[np.eye(dims), -np.ones((dims, 1))], [-np.eye(dims), -np.ones((dims, 1))]]
        )
        result = linprog(
            cost,
            A_ub=bound,
            b_ub=np.zeros(2 * dims),
            A_eq=np.r_[w, 0.0][None],
            b_eq=[r],
            bounds=[*zip(low, high, strict=True), (0, None)],
        )
    elif norm == "l1":  # variables: the positive and the negative parts of the move
        result = linprog(
            np.ones(2 * dims),
            A_eq=np.r_[w, -w][None],
            b_eq=[r],
            bounds=[(0, h) for h in high] + [(0, -lo) for lo in low],
        )
    else:
        result = minimize(
            lambda d: d @ d,
            np.zeros(dims),
            jac=lambda d: 2 * d,
            constraints=[{"type": "eq", "fun": lambda d: w @ d - r, "jac": lambda d: w}],
            bounds=list(zip(low, high, strict=True)),
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        return math.sqrt(result.fun) if result.success else None
    return float(result.fun) if result.status == 0 else None


@settings(max_examples=60, deadline=None)
@given(
    dims=st.integers(1, 10),
    seed=st.integers(0, 2**31 - 1),
    r=st.floats(-2, 2),
    norm=st.sampled_from(["linf", "l2", "l1"]),
    on_grid=st.booleans(),
)
def test_projection_is_feasible_and_minimal(
    dims: int, seed: int, r: float, norm: Norm, on_grid: bool
) -> None:
    r = round(r, 3)  # no changes of 1e-16: the solvers' tolerance is coarser
    generator = torch.Generator().manual_seed(seed)
    point = torch.rand(1, dims, generator=generator, dtype=torch.float64)
    if on_grid:  # pixels on a coarse grid: many at the bounds 0 and 1
        point = (point * 2).round() / 2
    w = torch.randn(1, dims, generator=generator, dtype=torch.float64)
    w[w.abs() < 0.3] = 0  # some coordinates the hyperplane ignores
    move = project_on_hyperplane(point, w, torch.tensor([r], dtype=torch.float64), norm)
    moved = point + move
    assert bool(((moved >= -1e-12) & (moved <= 1 + 1e-12)).all())
    assert bool((move[w == 0] == 0).all())
    best = _optimum(point[0].numpy(), w[0].numpy(), r, norm)
    reached = abs(float((w * move).sum()) - r) < 1e-9
    if best is None:
        # Out of reach: the move pushes every coordinate to the bound that helps.
        assert not reached
        helpful = torch.where(w * math.copysign(1, r) > 0, 1.0, 0.0).to(point.dtype)
        assert torch.allclose(moved[w != 0], helpful[w != 0])
    else:
        assert reached
        assert float(_size(move, norm)[0]) <= best + 1e-6


# -- the attack on the digits CNN -----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits24(digits_batch: Batch) -> Batch:
    images, labels = digits_batch
    return images[:24], labels[:24]


@pytest.mark.parametrize(
    ("norm", "max_eps", "precision"), [("linf", 0.5, 1 / 255), ("l2", 4.0, 0.01)]
)
def test_fab_is_adversarial_after_rounding_and_beats_pgd_bisection(
    digits_clf: Classifier, digits24: Batch, norm: Norm, max_eps: float, precision: float
) -> None:
    """The issue's claim: every image adversarial after 8-bit rounding, and FAB's median norm
    below the smallest eps at which PGD succeeds on the same images (found by bisection)."""
    images, labels = digits24
    goal = Untargeted(labels)
    result = FAB(norm=norm)(digits_clf, images, goal)
    assert torch.equal(result.adversarial, quantize(result.adversarial))
    with torch.no_grad():
        predicted = digits_clf(result.adversarial).argmax(dim=1)
    assert bool((predicted != labels).all())
    assert bool(result.success.all())
    pgd = MinimalEps(PGD, max_eps=max_eps, norm=norm, precision=precision, steps=20)(
        digits_clf, images, goal
    )
    assert bool(pgd.success.all())  # the bracket holds every image
    fab_median = float(result.norms.of(norm).median())
    pgd_median = float(pgd.norms.of(norm).median())
    assert fab_median < pgd_median, (fab_median, pgd_median)
    # The norms reported are those of the 8-bit images, measured here again.
    delta = (result.adversarial - images) * 255
    assert torch.allclose(lp_norm(delta, norm).double(), result.norms.of(norm), atol=1e-3)


def test_fab_l1_succeeds_with_sparse_changes(digits_clf: Classifier, digits24: Batch) -> None:
    images, labels = digits24
    result = FAB(norm="l1", steps=30)(digits_clf, images, Untargeted(labels))
    assert bool(result.success.all())
    # L1 moves few coordinates: far fewer channels change than under the L2 attack.
    l2 = FAB(norm="l2", steps=30)(digits_clf, images, Untargeted(labels))
    changed = ((result.adversarial != images).flatten(1).sum(dim=1)).float()
    changed_l2 = ((l2.adversarial != images).flatten(1).sum(dim=1)).float()
    assert float(changed.median()) < float(changed_l2.median())
    assert float(result.norms.l1.median()) < float(l2.norms.l1.median())


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_targeted_fab_reaches_each_images_target(
    digits_clf: Classifier, digits_batch: Batch, norm: Norm
) -> None:
    images, labels = digits_batch[0][:32], digits_batch[1][:32]
    targets = (labels + 1 + torch.arange(32) % 9) % 10  # every other class, per image
    result = FAB(norm=norm, steps=20)(digits_clf, images, Targeted(targets))
    with torch.no_grad():
        predicted = digits_clf(result.adversarial).argmax(dim=1)
    assert torch.equal(predicted, targets)
    assert bool(result.success.all())
    assert bool((result.gradients == 20).all())  # one boundary per step when targeted


def test_targeted_fab_with_confidence(digits_clf: Classifier, digits24: Batch) -> None:
    images, labels = digits24
    targets = (labels + 5) % 10
    result = FAB(norm="l2", steps=20)(digits_clf, images, Targeted(targets, confidence=0.9))
    assert bool(result.success.all())
    probs = result.probs_after.gather(1, targets[:, None]).squeeze(1)
    assert bool((probs >= 0.9).all())


def test_more_steps_do_not_give_larger_changes(digits_clf: Classifier, digits24: Batch) -> None:
    images, labels = digits24
    short = FAB(norm="linf", steps=5)(digits_clf, images, Untargeted(labels))
    long = FAB(norm="linf", steps=40)(digits_clf, images, Untargeted(labels))
    assert bool(short.success.all()) and bool(long.success.all())
    # The first 5 steps of the long run are the short run: it only keeps smaller changes.
    assert bool((long.norms.linf <= short.norms.linf).all())
    assert float(long.norms.linf.sum()) < float(short.norms.linf.sum())


def test_counters_are_exact(digits_clf: Classifier, digits24: Batch) -> None:
    """Forward rows and backward passes seen by the network equal the per-image counters."""
    images, labels = digits24[0][:8], digits24[1][:8]
    seen = {"forward": 0, "backward": 0}

    def on_forward(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        seen["forward"] += output.shape[0]

    def on_backward(
        module: torch.nn.Module, grad_in: object, grad_out: tuple[torch.Tensor]
    ) -> None:
        seen["backward"] += grad_out[0].shape[0]

    hooks = [
        digits_clf.model.register_forward_hook(on_forward),
        digits_clf.model.register_full_backward_hook(on_backward),
    ]
    try:
        for goal in (Untargeted(labels), Targeted((labels + 3) % 10)):
            seen.update(forward=0, backward=0)
            result = FAB(steps=6)(digits_clf, images, goal)
            assert seen["forward"] == int(result.forwards.sum())
            assert seen["backward"] == int(result.gradients.sum())
            per_step = 1 if goal.targeted else 9  # all nine rival classes of the digits
            assert bool((result.gradients == 6 * per_step).all())
            assert bool((result.steps == 6).all())
            # Each step: the linearisation, the test of the new iterate, then at most one
            # 8-bit test; the engine adds one evaluation before and one after.
            assert bool((result.forwards >= 2 + 2 * 6).all())
            assert bool((result.forwards <= 2 + 3 * 6 + 8).all())
    finally:
        for hook in hooks:
            hook.remove()


def test_deterministic_with_seed(digits_clf: Classifier, digits24: Batch) -> None:
    images, labels = digits24[0][:12], digits24[1][:12]
    attack = FAB(norm="l2", steps=8, restarts=3, seed=5)
    first = attack(digits_clf, images, Untargeted(labels))
    second = FAB(norm="l2", steps=8, restarts=3, seed=5)(digits_clf, images, Untargeted(labels))
    assert torch.equal(first.adversarial, second.adversarial)
    assert torch.equal(first.forwards, second.forwards)
    assert bool((first.gradients == 3 * 8 * 9).all())


def test_restarts_keep_the_best(digits_clf: Classifier, digits24: Batch) -> None:
    images, labels = digits24[0][:12], digits24[1][:12]
    one = FAB(norm="linf", steps=8)(digits_clf, images, Untargeted(labels))
    three = FAB(norm="linf", steps=8, restarts=3, eps=0.3)(digits_clf, images, Untargeted(labels))
    assert bool(three.success.all())
    assert bool((three.norms.linf <= one.norms.linf).all())


def test_batch_with_images_already_misclassified(digits_clf: Classifier, digits24: Batch) -> None:
    images, labels = digits24[0][:8], digits24[1][:8].clone()
    wrong = torch.tensor([1, 4, 6])
    labels[wrong] = (labels[wrong] + 1) % 10  # the model already disagrees with these labels
    progress: list[Progress] = []
    result = FAB(steps=10)(digits_clf, images, Untargeted(labels), progress=progress.append)
    assert bool(result.success.all())
    assert torch.equal(result.adversarial[wrong], images[wrong])
    assert bool((result.norms.linf[wrong] == 0).all())
    assert bool((result.gradients[wrong] == 0).all())
    assert bool((result.forwards[wrong] == 2).all())
    rest = torch.tensor([0, 2, 3, 5, 7])
    assert bool((result.norms.linf[rest] > 0).all())
    assert [p.step for p in progress] == list(range(1, 11))
    assert progress[-1].done == 5 and progress[-1].total == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"norm": "l0"}, "supports the linf, l2, l1"),
        ({"norm": "l3"}, "norm must be one of"),
        ({"steps": 0}, "steps must be"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"restarts": 0}, "restarts must be"),
        ({"candidates": 0}, "candidates must be"),
        ({"eps": -1.0}, "eps must be"),
        ({"eps": 8.0}, "eps is in [0, 1] units"),
        ({"alpha_max": 0}, "alpha_max must be"),
        ({"alpha_max": 1.5}, "alpha_max is a weight"),
        ({"eta": 0.9}, "eta overshoots"),
        ({"beta": 1.0}, "beta is a backward step"),
        ({"beta": float("nan")}, "beta must be"),
        ({"seed": 1.5}, "seed must be"),
    ],
)
def test_bad_hyper_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        FAB(**kwargs)  # type: ignore[arg-type]


def test_parameters_are_reported() -> None:
    params = FAB(norm="l2", steps=50).params()
    assert params == {
        "norm": "l2",
        "steps": 50,
        "restarts": 1,
        "eps": 1.0,
        "alpha_max": 0.1,
        "eta": 1.05,
        "beta": 0.9,
        "candidates": 9,
        "seed": 0,
    }
    assert FAB.minimum_norm and FAB.supports_targeted and FAB.name == "fab"


# -- FAB-T: targeted FAB towards the top classes in turn ------------------------------------------


@pytest.fixture(scope="module")
def robust_batch() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """The shipped PGD-trained digits model and 20 test digits it classifies correctly."""
    import trompe
    from trompe.models.digits import load_digits

    model = trompe.load_model("digits_robust")
    data = load_digits()
    with torch.no_grad():
        right = model(data.test_images[:40]).argmax(dim=1) == data.test_labels[:40]
    index = right.nonzero().squeeze(1)[:20]
    return model, data.test_images[index], data.test_labels[index]


def test_fab_t_is_registered() -> None:
    info = get_attack("fab-t")
    assert info.cls is FABT and info.minimum_norm and info.family == "minimum-norm"
    assert {o.name for o in info.options()} >= {"targets", "stop_at", "steps", "restarts"}
    assert "candidates" not in FABT(targets=3).params()
    assert FABT(targets=3, stop_at=0.1).params()["targets"] == 3


def test_fab_t_fools_the_robust_digits_and_beats_one_targeted_run(
    robust_batch: tuple[Classifier, torch.Tensor, torch.Tensor],
) -> None:
    model, images, labels = robust_batch
    result = FABT(steps=10, targets=3)(model, images, Untargeted(labels))
    assert bool(result.success.all())
    with torch.no_grad():
        assert bool((model(result.adversarial).argmax(dim=1) != labels).all())
        others = model(images).scatter(1, labels[:, None], -math.inf)
    # FAB-T's first target is the class ranked next; a success of its first run is kept
    # unless a later target gives a smaller change, so it never does worse than that run.
    first = FAB(steps=10)(model, images, Targeted(others.argmax(dim=1)))
    assert bool(first.success.all())
    assert bool((result.norms.linf <= first.norms.linf).all())
    # Trying every target (stop_at far below any change) finds changes at least as small.
    every = FABT(steps=10, targets=3, stop_at=1e-6)(model, images, Untargeted(labels))
    assert bool(every.success.all())
    assert bool((every.norms.linf <= result.norms.linf).all())
    assert int(every.gradients.sum()) > int(result.gradients.sum())


def test_fab_t_stop_at_spends_only_on_images_not_yet_within_it(
    robust_batch: tuple[Classifier, torch.Tensor, torch.Tensor],
) -> None:
    model, images, labels = robust_batch
    once = FABT(steps=10, targets=1)(model, images, Untargeted(labels))
    loose = FABT(steps=10, targets=3, stop_at=1.0)(model, images, Untargeted(labels))
    # Every image succeeds at the first target within a budget of 1: the others never run.
    assert torch.equal(loose.gradients, once.gradients)
    assert torch.equal(loose.adversarial, once.adversarial)
    threshold = float(once.norms.linf.median()) / 255
    tight = FABT(steps=10, targets=3, stop_at=threshold)(model, images, Untargeted(labels))
    within = once.norms.linf <= threshold * 255 + 1e-6
    assert torch.equal(tight.gradients[within], once.gradients[within])
    assert bool((tight.gradients[~within] > once.gradients[~within]).all())
    assert bool((tight.norms.linf <= once.norms.linf).all())


def test_fab_t_targeted_goal_is_plain_fab(
    robust_batch: tuple[Classifier, torch.Tensor, torch.Tensor],
) -> None:
    model, images, labels = robust_batch
    goal = Targeted((labels[:6] + 1) % 10)
    plain = FAB(steps=10)(model, images[:6], goal)
    fab_t = FABT(steps=10)(model, images[:6], goal)
    assert torch.equal(plain.adversarial, fab_t.adversarial)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": 0}, "targets must be"),
        ({"targets": 2.0}, "targets must be a whole number"),
        ({"stop_at": 0.0}, "stop_at must be"),
        ({"stop_at": float("inf")}, "stop_at must be"),
        ({"candidates": 3}, "candidates"),
    ],
)
def test_fab_t_bad_hyper_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((InvalidArgumentError, TypeError), match=message):
        FABT(**kwargs)  # type: ignore[arg-type]


# -- the ImageNet model ---------------------------------------------------------------------------


@pytest.mark.slow
def test_fab_linf_fools_imagenet_on_the_cat(imagenet_clf: Classifier) -> None:
    """Untargeted L-inf FAB on the cat at 224 x 224 (its top classes are close): fooled with a
    change of one level, the smallest 8-bit change there is (measured: 1/255 in L-inf; the
    float boundary is 0.02 levels away, so rounding alone would give the cat back). The image
    stops there, after one step."""
    image = quantize(imagenet_clf.preprocess(load_image(example_path("chelsea"))[None]))
    with torch.no_grad():
        label = imagenet_clf(image).argmax(dim=1)
    assert int(label) in (281, 282, 285)
    result = FAB(norm="linf", steps=10, candidates=3)(imagenet_clf, image, Untargeted(label))
    assert bool(result.success.all())
    assert float(result.norms.linf[0]) == 1
    assert int(result.steps[0]) < 10
    assert int(result.gradients[0]) == 3 * int(result.steps[0])


@pytest.mark.slow
def test_targeted_fab_on_a_full_size_photo(imagenet_clf: Classifier) -> None:
    """The cat at full size (300 x 451) becomes a lemon: the classifier crops and resizes, the
    attack changes only the pixels that the model sees."""
    image = load_image(example_path("chelsea"))[None]
    result = FAB(norm="l2", steps=10)(imagenet_clf, image, Targeted([951]))
    assert bool(result.success.all())
    assert result.adversarial.shape == image.shape
    assert int(result.probs_after[0].argmax()) == 951
    assert bool((result.gradients == 10).all())
    unseen = ~_seen_pixels(imagenet_clf, image)[0, 0]
    assert bool(unseen.any())
    assert torch.equal(result.adversarial[0][:, unseen], image[0][:, unseen])
