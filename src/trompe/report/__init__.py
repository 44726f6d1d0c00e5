"""The files and pictures of an attack result: PNGs, a one-glance report figure, a JSON record.

- :func:`perturbation_image` shows the change amplified around mid-grey, as in the Foolbox and
  Keras demos.
- :func:`render_report` draws original | adversarial | perturbation with the model's top classes
  before and after, and the size of the change; :func:`report_png_bytes` gives it as PNG bytes
  (Jupyter shows an :class:`~trompe.attacks.result.AttackResult` with it).
- :func:`result_summary` is the JSON-ready record: versions, model, attack, parameters, goal,
  predictions before and after, norms.
- :func:`save_result` writes all of it to a directory, all or nothing, and checks the saved PNG
  by reading it back (and, given the model, by classifying it again).

The modules: :mod:`~trompe.report.record` (the JSON record), :mod:`~trompe.report.figure`
(the report figure, the only importer of matplotlib, on first use only),
:mod:`~trompe.report.perturbation` and :mod:`~trompe.report.save`. The report sits below the
attacks: it reads a result through the :class:`~trompe.report._types.ResultLike` protocol and
never imports :mod:`trompe.attacks`, so that ``AttackResult.save()`` can call it.

Example:
    >>> paths = save_result(result, "out", model=clf)                  # doctest: +SKIP
    >>> sorted(paths)                                                  # doctest: +SKIP
    ['adversarial', 'json', 'perturbation', 'report']
"""

from __future__ import annotations

from trompe.report.figure import render_report, report_png_bytes
from trompe.report.perturbation import perturbation_image
from trompe.report.record import result_summary
from trompe.report.save import save_result

__all__ = [
    "perturbation_image",
    "render_report",
    "report_png_bytes",
    "result_summary",
    "save_result",
]
