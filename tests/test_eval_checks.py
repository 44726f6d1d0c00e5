"""The gradient-masking checks of ``trompe evaluate`` on real models.

The shipped robust digits CNN (``digits_robust``) is the normal model: no check may fire on it.
Wrapped in small modules, it becomes the masked models the checks exist for: a quantising input
layer (round to 16 levels: an exactly zero gradient), noise added in ``forward`` (randomized),
a square root at the input (an infinite gradient at black pixels), a softmax at the output
(probabilities for logits), logits scaled up a thousandfold (a saturated cross-entropy). The
record-only checks run on hand-built records, one rule at a time, with their negatives.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import nn

import trompe
from trompe.errors import InvalidArgumentError
from trompe.evaluation import checks
from trompe.evaluation._types import (
    BudgetOutcome,
    CheckWarning,
    Chunk,
    EvalConfig,
    ImageRecord,
    Precision,
    Stage,
)
from trompe.evaluation.cascade import run_chunk
from trompe.models import Classifier
from trompe.models.digits import DigitsData

EPS = 32 / 255
Batch = tuple[torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def robust() -> Classifier:
    return trompe.load_model("digits_robust")


@pytest.fixture(scope="module")
def batch(digits: DigitsData) -> Batch:
    """The first 32 test digits."""
    return digits.test_images[:32], digits.test_labels[:32]


class Before(nn.Module):
    """The robust classifier (already normalising) behind ``change`` of its input."""

    def __init__(self, clf: Classifier, change: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.clf = clf
        self.change = change

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.clf(self.change(x))
        return out


def masked(clf: Classifier, change: Callable[[torch.Tensor], torch.Tensor]) -> Classifier:
    return Classifier(Before(clf, change), name="masked")


def quantising(clf: Classifier) -> Classifier:
    """Round the input to 16 levels first: the gradient is exactly zero everywhere."""
    return masked(clf, lambda x: (x * 15).round() / 15)


def config(*stages: Stage, eps: tuple[float, ...] = (EPS,), **kw: object) -> EvalConfig:
    return EvalConfig(
        model={"id": "digits_robust"},
        data={"kind": "tensors"},
        norm=str(kw.pop("norm", "linf")),
        eps=eps,
        stages=stages or (Stage("apgd-ce", {"steps": 10}), Stage("square", {"queries": 200})),
        **kw,  # type: ignore[arg-type]
    )


def chunk(images: torch.Tensor, labels: torch.Tensor) -> Chunk:
    n = len(images)
    return Chunk(0, tuple(range(n)), tuple(f"#{i}" for i in range(n)), images, labels)


def codes(found: Sequence[CheckWarning]) -> list[str]:
    return [w.code for w in found]


def well_formed(found: Sequence[CheckWarning]) -> None:
    """Each warning has a listed code, one sentence for people and JSON-ready details."""
    for warning in found:
        assert warning.code in checks.CHECKS
        assert "\n" not in warning.message and ". " not in warning.message
        assert CheckWarning.from_json(warning.to_json()) == warning


def test_every_code_is_kebab_case_with_one_line() -> None:
    for code, meaning in checks.CHECKS.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", code)
        assert meaning and "\n" not in meaning and len(meaning) < 100


# -- probe_model --------------------------------------------------------------------------------


def test_probe_is_silent_on_the_robust_model(robust: Classifier, batch: Batch) -> None:
    assert checks.probe_model(robust, *batch, config()) == []


def test_probe_finds_the_zero_gradient_of_a_quantising_layer(
    robust: Classifier, batch: Batch
) -> None:
    found = checks.probe_model(quantising(robust), *batch, config())
    well_formed(found)
    assert codes(found) == ["zero-gradients"]
    assert found[0].details["images"] == found[0].details["of"] == len(batch[0])


def test_probe_finds_a_randomized_model(robust: Classifier, batch: Batch) -> None:
    noisy = masked(robust, lambda x: (x + 0.02 * torch.randn_like(x)).clamp(0, 1))
    found = checks.probe_model(noisy, *batch, config())
    well_formed(found)
    assert codes(found) == ["randomized-outputs"]
    assert found[0].details["max_relative_difference"] > checks.RANDOM_TOLERANCE


def test_probe_finds_non_finite_gradients(robust: Classifier, batch: Batch) -> None:
    # d sqrt(x) / dx is infinite at the digits' black pixels; the logits stay finite.
    found = checks.probe_model(masked(robust, torch.sqrt), *batch, config())
    well_formed(found)
    assert codes(found) == ["non-finite-gradients"]


def test_probe_finds_probabilities_for_logits(robust: Classifier, batch: Batch) -> None:
    softmax = Classifier(nn.Sequential(robust, nn.Softmax(dim=1)), name="softmax")
    found = checks.probe_model(softmax, *batch, config())
    well_formed(found)
    assert codes(found) == ["probability-outputs"]
    # Log-probabilities are logits as good as any: no warning.
    log_softmax = Classifier(nn.Sequential(robust, nn.LogSoftmax(dim=1)), name="log")
    assert checks.probe_model(log_softmax, *batch, config()) == []


def test_probe_finds_a_saturated_cross_entropy_unless_a_dlr_stage_runs(
    robust: Classifier, batch: Batch
) -> None:
    class Scaled(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = robust(x) * 1000
            return out

    hot = Classifier(Scaled(), name="hot")
    found = checks.probe_model(hot, *batch, config(Stage("apgd-ce", {"steps": 10})))
    well_formed(found)
    assert codes(found) == ["saturated-cross-entropy"]
    with_dlr = config(Stage("apgd-ce"), Stage("apgd-t", {"targets": 3}))
    assert checks.probe_model(hot, *batch, with_dlr) == []


def test_probe_of_a_scores_only_model_checks_its_outputs_only(
    robust: Classifier, batch: Batch
) -> None:
    black_box = quantising(robust).with_access("scores")
    assert checks.probe_model(black_box, *batch, config()) == []


# -- a whole chunk: probe, cascade, stress, records ----------------------------------------------


def all_checks(model: Classifier, images: torch.Tensor, labels: torch.Tensor, cfg: EvalConfig):
    found = checks.probe_model(model, images, labels, cfg)
    outcome = run_chunk(model, chunk(images, labels), cfg)
    found += checks.stress(model, images, labels, outcome.records, cfg)
    found += checks.from_records(outcome.records, cfg)
    return found, outcome.records


def test_no_check_fires_on_the_robust_model(robust: Classifier, batch: Batch) -> None:
    cfg = config(
        Stage("apgd-ce", {"steps": 10}),
        Stage("apgd-t", {"steps": 10, "targets": 3}),
        Stage("square", {"queries": 100}),
    )
    found, records = all_checks(robust, *batch, cfg)
    assert found == []
    assert sum(r.budgets[0].robust for r in records) >= 16  # so stress had 16 images to try


@pytest.mark.filterwarnings("ignore::trompe.errors.GradientMaskingWarning")  # the cascade's
def test_a_quantising_model_raises_the_masking_checks(robust: Classifier, batch: Batch) -> None:
    found, records = all_checks(quantising(robust), *batch, config())
    well_formed(found)
    assert codes(found) == [
        "zero-gradients",
        "large-budget-not-broken",
        "black-box-beats-white-box",
    ]
    # APGD-CE broke nothing, Square did: the cascade's own records say so.
    assert not any(r.budgets[0].broken_by == "apgd-ce" for r in records)
    by_square = sum(r.budgets[0].broken_by == "square" for r in records)
    assert found[2].details["budgets"][0]["broken"] == by_square > 0


def test_stress_finds_images_a_stronger_run_breaks(robust: Classifier, batch: Batch) -> None:
    # Records as a cascade that never attacked would write: every correct image robust.
    images, labels = batch
    cfg = config(Stage("apgd-ce", {"steps": 10}))
    records = [record(i, int(y), robust=True) for i, y in enumerate(labels.tolist())]
    found = checks.stress(robust, images, labels, records, cfg)
    well_formed(found)
    assert codes(found) == ["restarts-change-result"]
    details = found[0].details
    assert details["tried"] == checks.STRESS_IMAGES
    assert details["broken"] >= checks.STRESS_MIN_IMAGES
    assert (details["steps"], details["restarts"]) == (20, 2)
    # The images it names are broken at that budget for real.
    attack = trompe.attacks.APGD(eps=EPS, steps=40, restarts=2)
    named = torch.tensor(details["positions"])
    assert bool(
        attack(robust, images[named], trompe.attacks.Untargeted(labels[named])).success.any()
    )


def test_stress_spends_nothing_without_robust_images(robust: Classifier, batch: Batch) -> None:
    images, labels = batch
    records = [record(i, int(y), robust=False) for i, y in enumerate(labels.tolist())]
    assert checks.stress(quantising(robust), images, labels, records, config()) == []
    l0 = config(Stage("pgd-l0"), eps=(3.0,), norm="l0")
    robust_records = [record(i, int(y), robust=True, eps=3.0) for i, y in enumerate(labels)]
    assert checks.stress(quantising(robust), images, labels, robust_records, l0) == []


def test_stress_refuses_records_of_other_images(robust: Classifier, batch: Batch) -> None:
    images, labels = batch
    records = [record(i, int(y), robust=True) for i, y in enumerate(labels.tolist())]
    with pytest.raises(InvalidArgumentError, match="one chunk's images"):
        checks.stress(robust, images[:5], labels[:5], records, config())
    with pytest.raises(InvalidArgumentError, match="labels that differ"):
        checks.stress(robust, images, (labels + 1) % 10, records, config())


# -- from_records on hand-built records ----------------------------------------------------------


def record(
    position: int,
    label: int,
    *,
    robust: bool = True,
    broken_by: str | None = None,
    carried: bool = False,
    rejected: int = 0,
    eps: float = EPS,
) -> ImageRecord:
    if broken_by is not None:
        robust = False
    outcome = BudgetOutcome(
        eps, robust=robust, broken_by=broken_by, carried=carried, rejected=rejected
    )
    return ImageRecord(position, f"#{position}", label, 0, label, (outcome,))


def records(n: int, **special: dict[str, object]) -> list[ImageRecord]:
    """``n`` records robust at EPS; ``special`` maps ``"i<position>"`` to record options."""
    return [record(i, i % 10, **special.get(f"i{i}", {})) for i in range(n)]  # type: ignore[arg-type]


def test_black_box_beats_white_box_from_the_records() -> None:
    cfg = config(Stage("apgd-ce"), Stage("apgd-t"), Stage("square"))
    found = checks.from_records(records(100, i3={"broken_by": "square"}), cfg)
    well_formed(found)
    assert codes(found) == ["black-box-beats-white-box"]
    assert found[0].details["budgets"][0]["broken"] == 1
    assert found[0].details["attacks"] == ["square"]


@pytest.mark.parametrize(
    ("stages", "n", "special"),
    [
        # The gradient stages broke the images: nothing to say.
        (("apgd-ce", "square"), 100, {"i3": {"broken_by": "apgd-ce"}}),
        # Square before any gradient stage: no gradient attack had failed on what it broke.
        (("square", "apgd-ce"), 100, {"i3": {"broken_by": "square"}}),
        # 1 image in 1000 is within AutoAttack's 0.2 %.
        (("apgd-ce", "square"), 1000, {"i3": {"broken_by": "square"}}),
        # An image carried from a smaller budget was not attacked again at this one.
        (("apgd-ce", "square"), 100, {"i3": {"broken_by": "square", "carried": True}}),
        # No black-box stage at all.
        (("apgd-ce", "apgd-t"), 100, {"i3": {"broken_by": "apgd-t"}}),
    ],
)
def test_black_box_check_is_silent_otherwise(
    stages: tuple[str, ...], n: int, special: dict[str, dict[str, object]]
) -> None:
    cfg = config(*(Stage(name) for name in stages))
    assert checks.from_records(records(n, **special), cfg) == []


def test_black_box_check_reads_every_budget_and_skips_skipped_images() -> None:
    cfg = config(Stage("apgd-ce"), Stage("square"), eps=(8 / 255, EPS))
    square = BudgetOutcome(EPS, robust=False, broken_by="square")
    robust = BudgetOutcome(8 / 255, robust=True)
    rows = [
        ImageRecord(i, f"#{i}", 1, 0, 1, (robust, BudgetOutcome(EPS, robust=True)))
        for i in range(50)
    ]
    rows.append(ImageRecord(50, "#50", 1, 0, 1, (robust, square)))
    rows.append(ImageRecord(51, "bad.png", -1, 0, None, skipped="not an image"))
    found = checks.from_records(rows, cfg)
    assert codes(found) == ["black-box-beats-white-box"]
    assert found[0].details["evaluated"] == 51
    assert [b["eps"] for b in found[0].details["budgets"]] == [EPS]


@pytest.mark.parametrize(
    ("precision", "code"),
    [
        ("bf16", "reduced-precision-rejected"),
        ("fp16", "reduced-precision-rejected"),
        ("fp32", "unconfirmed-successes"),
    ],
)
def test_rejected_successes_are_named(precision: Precision, code: str) -> None:
    cfg = config(Stage("apgd-ce"), precision=precision)
    found = checks.from_records(records(20, i4={"rejected": 2}, i7={"rejected": 1}), cfg)
    well_formed(found)
    assert codes(found) == [code]
    assert (found[0].details["rejected"], found[0].details["images"]) == (3, 2)


def test_from_records_is_silent_on_clean_records() -> None:
    cfg = config(Stage("apgd-ce"), Stage("square"), precision="bf16")
    assert checks.from_records(records(100), cfg) == []
    assert checks.from_records([], cfg) == []


def test_probe_does_not_call_non_finite_logits_random(robust: Classifier, batch: Batch) -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = robust(x).clone()
            out[::2, 3] = float("nan")
            out[1::2, 4] = float("inf")
            return out

    found = checks.probe_model(Classifier(Broken(), name="broken"), *batch, config())
    assert "randomized-outputs" not in codes(found)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_large_budget_check_in_both_norms(robust: Classifier, batch: Batch, norm: str) -> None:
    images, labels = batch
    eps = EPS if norm == "linf" else 1.0
    cfg = config(Stage("apgd-ce", {"steps": 10}), eps=(eps,), norm=norm)
    rows = [record(i, int(y), robust=True, eps=eps) for i, y in enumerate(labels.tolist())]
    found = checks.stress(quantising(robust), images, labels, rows, cfg)
    well_formed(found)
    assert "large-budget-not-broken" in codes(found)
    large = found[codes(found).index("large-budget-not-broken")].details["eps"]
    # Within that budget of every image lies the uniform image of level 128.
    grey = torch.full_like(images, 128 / 255)
    change = (grey - images).flatten(1)
    reach = change.abs().amax(dim=1) if norm == "linf" else change.norm(dim=1)
    assert bool((reach <= large + 1e-6).all())
