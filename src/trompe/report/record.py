"""The JSON record of a result: versions, model, attack, parameters, goal, predictions, norms.

No drawing here: the record needs neither matplotlib nor a model.
"""

from __future__ import annotations

import datetime
import enum
import importlib.metadata
import math
import operator
import os
import platform
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from trompe.errors import InvalidArgumentError
from trompe.metrics import Norms, measure
from trompe.report._types import ResultLike
from trompe.units import format_budget

__all__ = ["result_summary"]

#: Parameters given in [0, 1] pixel units that the JSON repeats in 0-255 levels (``eps_255``).
_PIXEL_PARAMS = ("eps", "step_size")


def _check_index(result: ResultLike, index: int) -> int:
    try:
        if isinstance(index, bool):
            raise TypeError
        index = operator.index(index)
    except TypeError:
        raise InvalidArgumentError(f"index must be an integer, got {index!r}") from None
    if not 0 <= index < len(result):
        raise InvalidArgumentError(
            f"index {index} is out of range for a result of {len(result)} image(s); "
            f"give 0 to {len(result) - 1}"
        )
    return index


def _label(result: ResultLike, index: int) -> str:
    labels = result.labels
    if labels is not None and 0 <= index < len(labels):
        return labels[index]
    return f"class {index}"


def _finite(value: float) -> float | None:
    """JSON has no infinity or NaN: they become null."""
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """Turn parameters and extras into plain JSON values (tensors, paths, enums, numpy...)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.generic | np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, torch.device | torch.dtype):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def _to_255(value: Any) -> Any:
    """A [0, 1] pixel quantity in 0-255 levels, without float noise (8/255 -> 8.0)."""
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _finite(round(float(value) * 255, 6))
    if isinstance(value, list):
        return [_to_255(v) for v in value]
    return None


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    l0 = str(params.get("norm", "")).lower() == "l0"
    for key, value in params.items():
        out[str(key)] = _jsonable(value)
        if key == "eps" and l0:
            continue  # an L0 budget is a number of pixels: no 0-255 version of it
        if key in _PIXEL_PARAMS and f"{key}_255" not in params:
            levels = _to_255(value)
            if levels is not None:
                out[f"{key}_255"] = levels
    return out


def _versions() -> dict[str, str]:
    import PIL

    from trompe._version import __version__

    return {
        "trompe": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        # From the installed metadata: the record does not import matplotlib to name it.
        "matplotlib": importlib.metadata.version("matplotlib"),
    }


def _budget(params: Mapping[str, Any]) -> str | None:
    """The budget in its own unit (``"10/255"``, ``"5 pixels"``), or None without one."""
    eps, norm = params.get("eps"), params.get("norm")
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps):
        return None
    return format_budget(float(eps), str(norm).lower() if norm is not None else "linf")


def _device(result: ResultLike) -> dict[str, Any]:
    """Where the attack ran: the device, and on a GPU its name and the CUDA and cuDNN versions."""
    device = getattr(result, "device", None)
    out: dict[str, Any] = {"device": None if device is None else str(device)}
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
        out["cuda"] = torch.version.cuda
        cudnn = torch.backends.cudnn
        out["cudnn"] = cudnn.version() if cudnn.is_available() else None  # type: ignore[no-untyped-call]
    return out


def _model_info(result: ResultLike) -> dict[str, Any]:
    """``{"model_info": ...}`` where the result describes its classifier (results of trompe's
    attacks do; other result-like objects may not), else nothing."""
    info = getattr(result, "model_info", None)
    return {} if not info else {"model_info": _jsonable(dict(info))}


def _top(result: ResultLike, index: int, k: int, *, after: bool) -> list[dict[str, Any]]:
    probs = (result.probs_after if after else result.probs_before)[index].detach().float().cpu()
    values, indices = probs.topk(min(k, probs.shape[0]))
    return [
        {"index": int(i), "label": _label(result, int(i)), "prob": float(p)}
        for p, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def _norms_dict(norms: Norms) -> dict[str, float | int | None]:
    return {
        "linf_255": float(norms.linf[0]),
        "l2_255": float(norms.l2[0]),
        "psnr_db": _finite(float(norms.psnr[0])),  # null: no change at all
        "l1_255": float(norms.l1[0]),
        "l0_pixels": int(norms.l0[0]),
    }


#: The fields of a summary that ``extra`` may not replace.
_SUMMARY_FIELDS = frozenset(
    {
        "created", "versions", "model", "model_info", "attack", "params", "index",
        "batch_size", "size", "goal", "success", "before", "after", "norms", "steps",
        "forwards", "gradients", "queries", "seconds", "verified_on_png", "device", "gpu",
        "cuda", "cudnn", "budget", "survival", "transfer",
    }
)  # fmt: skip


def _check_extra(extra: Mapping[str, Any]) -> None:
    clashes = sorted(str(key) for key in extra if str(key) in _SUMMARY_FIELDS)
    if clashes:
        raise InvalidArgumentError(
            f"extra must not replace the measured fields {', '.join(clashes)}; rename those keys"
        )


def _summary(
    result: ResultLike,
    index: int,
    *,
    extra: Mapping[str, Any] | None,
    norms: Norms | None = None,
    verified: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if extra:
        _check_extra(extra)
    goal_class = int(result.goal.classes[index])
    if norms is None:
        norms = measure(result.original[index : index + 1], result.adversarial[index : index + 1])
    height, width = (int(s) for s in result.adversarial.shape[-2:])
    summary: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "model": result.model,
        **_model_info(result),
        "attack": result.attack,
        "params": _params(result.params),
        "index": index,
        "batch_size": len(result),
        "size": [width, height],
        "goal": {
            "targeted": bool(result.goal.targeted),
            "class": goal_class,
            "class_name": _label(result, goal_class),
            "confidence": result.goal.confidence,
        },
        "success": bool(result.success[index]),
        "before": {
            "top5": _top(result, index, 5, after=False),
            "goal_prob": result.class_prob(goal_class, index, after=False),
        },
        "after": {
            "top5": _top(result, index, 5, after=True),
            "goal_prob": result.class_prob(goal_class, index, after=True),
        },
        "norms": _norms_dict(norms),
        "steps": int(result.steps[index]),
        "forwards": int(result.forwards[index]),
        "gradients": int(result.gradients[index]),
        "queries": int(result.queries[index]),
        "seconds": float(result.seconds),
        **_device(result),
    }
    budget = _budget(result.params)
    if budget is not None:
        summary["budget"] = budget
    if verified is not None:
        summary["verified_on_png"] = verified
    # The real-world checks (issue 13): measured on the 8-bit images, per image.
    for key in ("survival", "transfer"):
        check = getattr(result, key, None)
        if check is not None:
            summary[key] = check.to_json(index)
    if extra:
        summary.update({str(key): _jsonable(value) for key, value in extra.items()})
    return summary


def result_summary(
    result: ResultLike, index: int = 0, *, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything needed to reproduce and audit one image of a result, as a JSON-ready dict.

    Keys (probabilities in [0, 1]; norms in 0-255 pixel levels, measured on 8-bit values):

    - ``created`` (UTC, ISO 8601), ``versions`` (trompe, python, torch, numpy, pillow,
      matplotlib), ``model`` (the classifier's name), ``attack``.
    - ``model_info``: ``{"id", "source", "arch", "num_classes", "access", "preprocessing":
      {"mean", "std", "input_size", "crop_fraction", "interpolation"}, "overrides"}``: where
      the model came from and the preprocessing it ran with (``overrides`` holds the fields the
      user set, and ``labels`` for a label file); absent for results that do not carry it.
    - ``params``: the attack's hyper-parameters as given (``eps`` in [0, 1]; L0: pixels), plus
      ``eps_255`` and ``step_size_255``, the same in 0-255 levels, where those parameters are
      present (no ``eps_255`` for an L0 budget: it counts pixels).
    - ``budget``: the budget in its own unit, for people (``"10/255"``, ``"765 (0-255
      units)"``, ``"5 pixels"``), where the attack has one.
    - ``device`` (where the attack ran); on a GPU also ``gpu`` (its name), ``cuda`` and
      ``cudnn`` (the versions PyTorch runs with).
    - ``index``, ``batch_size``, ``size`` ([width, height] in pixels).
    - ``goal``: ``{"targeted", "class", "class_name", "confidence"}`` (``class`` is the target,
      or for an untargeted goal the true class to move away from).
    - ``success``; ``before`` and ``after``: ``{"top5": [{"index", "label", "prob"}, ...],
      "goal_prob"}``.
    - ``norms``: ``{"linf_255", "l2_255", "psnr_db"}`` (``psnr_db`` is null for no change).
    - ``steps``, ``forwards``, ``gradients``, ``queries`` (this image; ``queries`` leaves out
      the engine's evaluation before and after), ``seconds`` (the whole attack).
    - ``survival`` (with ``survive``): the saved image under the real transforms
      (:meth:`~trompe.evaluation.survival.Survival.to_json`); ``transfer`` (with
      ``transfer_to``): what the held-out models see
      (:meth:`~trompe.evaluation.transfer.Transfer.to_json`).
    - the keys of ``extra`` (source image, seed, command line...), at the top level.

    Args:
        result: an attack's result.
        index: which image of the batch.
        extra: more fields to record; tensors, paths and numpy values are converted.

    Returns:
        A dict that :func:`json.dumps` accepts with ``allow_nan=False``.

    Raises:
        InvalidArgumentError: ``index`` out of range, or a key of ``extra`` that would replace
            one of the fields above.

    Example:
        >>> result_summary(result, extra={"seed": 0})["norms"]        # doctest: +SKIP
        {'linf_255': 10.0, 'l2_255': 1873.2, 'psnr_db': 39.6}
    """
    return _summary(result, _check_index(result, index), extra=extra)
