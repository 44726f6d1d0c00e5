"""The outcome of an evaluation: numbers computed from the per-image records alone.

:class:`EvaluationReport` is frozen and built by :meth:`EvaluationReport.from_records`, the same
way after one uninterrupted run, a resumed run, a ``torchrun`` job or a merge of shards, so the
numbers cannot depend on how the work was split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trompe._version import __version__
from trompe.evaluation._types import CheckWarning, EvalConfig, ImageRecord
from trompe.units import budget_from_unit, format_budget

__all__ = ["EvaluationReport"]


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """Clean and robust accuracy of a model on a data set, per budget, with the evidence.

    Attributes:
        config: what was run.
        records: one record per image, in data set order.
        warnings: the gradient-masking checks' findings (and other evaluation warnings).
        seconds: wall-clock time of the work (summed over processes for a merged run).
        labels: the class names, for per-class figures.
        out_dir: where the records, summary and figure were written, if anywhere.
    """

    config: EvalConfig
    records: tuple[ImageRecord, ...]
    warnings: tuple[CheckWarning, ...] = ()
    seconds: float = 0.0
    labels: Sequence[str] | None = None
    out_dir: Path | None = None
    _summary: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_records(
        cls,
        config: EvalConfig,
        records: Sequence[ImageRecord],
        *,
        warnings: Sequence[CheckWarning] = (),
        seconds: float = 0.0,
        labels: Sequence[str] | None = None,
        out_dir: Path | None = None,
    ) -> EvaluationReport:
        ordered = tuple(sorted(records, key=lambda r: r.position))
        report = cls(config, ordered, tuple(warnings), float(seconds), labels, out_dir)
        report._summary.update(_summarise(report))
        return report

    # -- the numbers ---------------------------------------------------------------------------

    @property
    def evaluated(self) -> tuple[ImageRecord, ...]:
        """The records of the images that were read and attacked (not skipped)."""
        return tuple(r for r in self.records if r.skipped is None)

    @property
    def clean_accuracy(self) -> float:
        """Fraction of the evaluated images the model classifies correctly unattacked."""
        return float(self._summary["clean_accuracy"])

    @property
    def robust_accuracy(self) -> dict[float, float]:
        """Per budget ([0, 1] units), the fraction of the evaluated images still classified
        correctly after every attack of the cascade."""
        return {b["eps"]: b["robust_accuracy"] for b in self._summary["budgets"]}

    def summary(self) -> dict[str, Any]:
        """The summary as JSON-ready data (what ``summary.json`` holds)."""
        return dict(self._summary)

    def figure_png(self) -> bytes:
        """The figure as PNG bytes (:func:`trompe.report.figure.evaluation_png_bytes`)."""
        from trompe.report.figure import evaluation_png_bytes

        return evaluation_png_bytes(self.summary())

    def _repr_png_(self) -> bytes:
        """Jupyter shows a report as its figure."""
        return self.figure_png()

    def __repr__(self) -> str:
        robust = ", ".join(
            f"{format_budget(eps, self.config.norm)}: {acc:.1%}"
            for eps, acc in self.robust_accuracy.items()
        )
        return (
            f"EvaluationReport(model={self.config.model.get('id', '?')!r}, "
            f"n={len(self.evaluated)}, clean={self.clean_accuracy:.1%}, robust={{{robust}}}, "
            f"warnings={[w.code for w in self.warnings]})"
        )


def _summarise(report: EvaluationReport) -> dict[str, Any]:
    config = report.config
    done = report.evaluated
    n = len(done)
    correct = sum(r.correct for r in done)
    budgets = []
    for k, eps in enumerate(config.eps):
        robust = sum(r.budgets[k].robust for r in done)
        broken = Counter(
            r.budgets[k].broken_by for r in done if r.correct and not r.budgets[k].robust
        )
        remaining = correct
        after: dict[str, float] = {}
        for stage in config.stages:
            remaining -= broken.get(stage.attack, 0)
            after[stage.attack] = remaining / n if n else 0.0
        budgets.append(
            {
                "eps": eps,
                "eps_levels": budget_from_unit(eps, config.norm),
                "eps_text": format_budget(eps, config.norm),
                "robust": robust,
                "robust_accuracy": robust / n if n else 0.0,
                "broken_by": {s.attack: broken.get(s.attack, 0) for s in config.stages},
                "robust_after": after,
                "forwards": sum(r.budgets[k].forwards for r in done),
                "gradients": sum(r.budgets[k].gradients for r in done),
                "rejected": sum(r.budgets[k].rejected for r in done),
            }
        )
    return {
        "trompe": __version__,
        "config": config.to_dict(),
        "fingerprint": config.fingerprint(),
        "n": len(report.records),
        "evaluated": n,
        "skipped": [{"id": r.id, "reason": r.skipped} for r in report.records if r.skipped],
        "clean_accuracy": correct / n if n else 0.0,
        "correct": correct,
        "budgets": budgets,
        "per_class": _per_class(done, len(config.eps), report.labels),
        "seconds": report.seconds,
        "warnings": [w.to_json() for w in report.warnings],
    }


def _per_class(
    records: Sequence[ImageRecord], budgets: int, labels: Sequence[str] | None
) -> list[dict[str, Any]]:
    by_class: dict[int, list[ImageRecord]] = {}
    for record in records:
        by_class.setdefault(record.label, []).append(record)
    rows = []
    for label in sorted(by_class):
        group = by_class[label]
        rows.append(
            {
                "class": label,
                "name": labels[label] if labels is not None and label < len(labels) else None,
                "n": len(group),
                "clean_accuracy": sum(r.correct for r in group) / len(group),
                "robust_accuracy": [
                    sum(r.budgets[k].robust for r in group) / len(group) for k in range(budgets)
                ],
            }
        )
    return rows
