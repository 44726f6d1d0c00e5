"""trompe.evaluate on tensors, its argument policy, and the report's figure from a real summary."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import trompe
from trompe.api import evaluation_budgets
from trompe.errors import BudgetWarning, InvalidArgumentError, UnknownAttackError
from trompe.evaluation import EvaluationReport
from trompe.models import Classifier, load_model
from trompe.models.digits import DigitsData
from trompe.report.figure import evaluation_png_bytes, render_evaluation

PNG = b"\x89PNG\r\n\x1a\n"
EPS = [32 / 255, 16 / 255]  # given out of order on purpose


@pytest.fixture(scope="module")
def robust_clf() -> Classifier:
    return load_model("digits_robust")


@pytest.fixture(scope="module")
def sample(digits: DigitsData) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.test_images[:30], digits.test_labels[:30]


@pytest.fixture(scope="module")
def report(robust_clf: Classifier, sample: tuple[torch.Tensor, torch.Tensor]) -> EvaluationReport:
    return trompe.evaluate(robust_clf, sample, eps=EPS, norm="linf", attacks="apgd-ce")


def test_evaluate_on_tensors(
    report: EvaluationReport, robust_clf: Classifier, sample: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = sample
    assert isinstance(report, trompe.EvaluationReport)
    assert report.config.eps == (16 / 255, 32 / 255)  # sorted
    assert [s.attack for s in report.config.stages] == ["apgd-ce"]
    assert len(report.records) == 30 and len(report.evaluated) == 30
    # Clean accuracy is the model's own, on the same images.
    with torch.no_grad():
        predicted = robust_clf(images).argmax(dim=1)
    assert report.clean_accuracy == pytest.approx((predicted == labels).float().mean().item())
    assert [r.clean_prediction for r in report.records] == predicted.tolist()
    # The sweep is monotone, robust never above clean, and a larger budget breaks something
    # on this model (PGD-trained at 32/255, it is not all robust at its training budget).
    small, large = report.robust_accuracy[16 / 255], report.robust_accuracy[32 / 255]
    assert large <= small <= report.clean_accuracy
    assert large < report.clean_accuracy
    for record in report.records:
        at_small, at_large = record.budgets
        assert at_large.robust <= at_small.robust
        if not record.correct:
            assert not at_small.robust and at_small.broken_by == "clean"
        for outcome in record.budgets:
            if not outcome.robust and outcome.broken_by != "clean":
                assert outcome.broken_by == "apgd-ce"
                assert outcome.prediction != record.label
                assert outcome.norms is not None
                assert outcome.norms["linf"] <= outcome.eps * 255 + 1e-6


def test_the_summary_counts_the_records(report: EvaluationReport) -> None:
    summary = report.summary()
    assert summary["evaluated"] == 30
    assert summary["correct"] == sum(r.correct for r in report.records)
    for k, budget in enumerate(summary["budgets"]):
        robust = sum(r.budgets[k].robust for r in report.records)
        assert budget["robust"] == robust
        assert budget["broken_by"]["apgd-ce"] == summary["correct"] - robust
        assert budget["robust_after"]["apgd-ce"] == pytest.approx(robust / 30)
    assert "16/255" in repr(report)


def test_the_figure_is_drawn_from_the_summary_alone(report: EvaluationReport) -> None:
    png = report.figure_png()
    assert png.startswith(PNG)
    assert report._repr_png_() == png  # what Jupyter shows
    # From summary.json as a reader gets it back: a JSON round trip.
    summary = json.loads(json.dumps(report.summary()))
    assert evaluation_png_bytes(summary).startswith(PNG)
    figure = render_evaluation(summary)
    texts = [t.get_text() for t in figure.texts]
    assert any("digits_robust" in t for t in texts)
    ticks = [t.get_text() for ax in figure.axes for t in ax.get_xticklabels()]
    assert {"clean", "16/255", "32/255"} <= set(ticks)


def test_the_figure_names_the_warnings(report: EvaluationReport) -> None:
    summary = json.loads(json.dumps(report.summary()))
    summary["warnings"] = [
        {"code": "black-box-beats-white-box", "message": "Square broke 3 images.", "details": {}}
    ]
    texts = [t.get_text() for t in render_evaluation(summary).texts]
    assert any("black-box-beats-white-box" in t for t in texts)
    summary["warnings"] = []
    texts = [t.get_text() for t in render_evaluation(summary).texts]
    assert not any("black-box-beats-white-box" in t for t in texts)


def test_the_figure_shows_at_most_20_classes(report: EvaluationReport) -> None:
    summary = json.loads(json.dumps(report.summary()))
    row = summary["per_class"][0]
    summary["per_class"] = [{**row, "class": k, "name": f"c{k}", "n": 1 + k % 3} for k in range(50)]
    figure = render_evaluation(summary)
    per_class = figure.axes[1]
    assert len(per_class.get_yticklabels()) == 20
    assert "20 of 50 classes" in per_class.get_title(loc="left")


def test_the_figure_refuses_what_is_not_a_summary() -> None:
    with pytest.raises(InvalidArgumentError, match="not an evaluation summary"):
        render_evaluation({"budgets": []})


# -- the argument policy ------------------------------------------------------------------------


def test_budgets_are_sorted_deduplicated_and_converted() -> None:
    assert evaluation_budgets([8 / 255, 2 / 255, 8 / 255], "linf") == (2 / 255, 8 / 255)
    assert evaluation_budgets(0.5, "l2") == (0.5,)
    assert evaluation_budgets([4, 1, 2, 2], "linf", levels=True) == (1 / 255, 2 / 255, 4 / 255)
    assert evaluation_budgets([255], "l2", levels=True) == (1.0,)
    assert evaluation_budgets([1.0], "linf") == (1.0,)  # the whole range is allowed


@pytest.mark.parametrize(
    ("eps", "norm", "words"),
    [
        (0, "linf", "above 0"),
        ([8 / 255, -1 / 255], "linf", "above 0"),
        (float("nan"), "linf", "above 0"),
        (8, "linf", "8 / 255"),  # 0-255 levels given to the Python API
        ([], "linf", "at least one"),
        (8 / 255, "l1", "linf or l2"),
        ("8", "linf", "numbers"),
    ],
)
def test_budgets_out_of_range_are_refused(eps: object, norm: str, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        evaluation_budgets(eps, norm)  # type: ignore[arg-type]


def test_command_line_budgets_are_checked_in_levels() -> None:
    with pytest.raises(InvalidArgumentError, match="--eps is in 0-255 levels, at most 255"):
        evaluation_budgets([300], "linf", levels=True, eps_name="--eps")


def test_evaluate_refuses_before_any_work(
    robust_clf: Classifier, sample: tuple[torch.Tensor, torch.Tensor]
) -> None:
    def call(**kwargs: object) -> None:
        options: dict[str, object] = {"eps": 8 / 255, "attacks": "apgd-ce"}
        options.update(kwargs)
        trompe.evaluate(robust_clf, sample, **options)  # type: ignore[arg-type]

    with pytest.raises(InvalidArgumentError, match="above 0"):
        call(eps=0)
    with pytest.raises(UnknownAttackError):
        call(attacks="apgd-xx")
    with pytest.raises(InvalidArgumentError, match="precision"):
        call(precision="fp8")
    with pytest.raises(InvalidArgumentError, match="shard"):
        call(shard=(2, 2), out="unused")
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        call(batch_size=0)
    with pytest.raises(InvalidArgumentError, match="give one"):
        call(resume=True, force=True, out="unused")
    with pytest.raises(InvalidArgumentError, match="needs an output folder"):
        call(resume=True)
    # L2 budget above any change of an 8x8 RGB image: sqrt(192) = 13.9 in [0, 1] units.
    with pytest.raises(InvalidArgumentError, match="larger than any change"):
        call(eps=20.0, norm="l2")


def test_a_budget_under_one_level_warns(
    robust_clf: Classifier, sample: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = sample
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = trompe.evaluate(
            robust_clf, (images[:4], labels[:4]), eps=0.5 / 255, attacks="apgd-ce"
        )
    assert any(issubclass(w.category, BudgetWarning) for w in caught)
    # Half a level changes no 8-bit pixel: nothing is broken that was right to begin with.
    assert out.robust_accuracy[0.5 / 255] == out.clean_accuracy
