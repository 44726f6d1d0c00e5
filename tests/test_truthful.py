"""What trompe reports must be true: non-finite logits, masked gradients, exit codes, units.

Real models throughout: the digits CNN, wrapped in small modules that misbehave as real models
do (an overflow to inf, a NaN, a quantising layer without a gradient).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import trompe
from trompe import units
from trompe.attacks import (
    FGSM,
    PGD,
    PGDL0,
    Attack,
    AttackInfo,
    CarliniWagnerL2,
    Square,
    Targeted,
    Untargeted,
    list_attacks,
)
from trompe.errors import (
    BudgetWarning,
    GradientMaskingWarning,
    InvalidArgumentError,
    ModelOutputError,
)
from trompe.models import Classifier
from trompe.report import result_summary
from trompe.report.figure import _title_parts


class Shifted(nn.Module):
    """The digits network, its logits shifted by ``value`` (inf, NaN) where ``where`` says."""

    def __init__(self, net: nn.Module, value: float, only_changed: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        self.value = value
        self.only_changed = only_changed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        if self.only_changed is None:
            return out + self.value
        # Only images that differ from the originals overflow, and only in class 1's logit.
        changed = (x[:, None] - self.only_changed.to(x)).flatten(2).abs().amax(dim=2) > 1e-6
        shift = torch.zeros_like(out)
        shift[changed.all(dim=1), 1] = self.value
        return out + shift


class Quantising(nn.Module):
    """The digits network behind an 8-bit rounding of its input: a gradient of exactly zero."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net((x * 255).round() / 255)
        return out


def wrap(clf: Classifier, net: nn.Module) -> Classifier:
    return Classifier(
        net,
        mean=tuple(clf.mean.flatten().tolist()),
        std=tuple(clf.std.flatten().tolist()),
        labels=clf.labels,
        input_size=clf.input_size,
        name="wrapped",
    )


def goal_of(labels: torch.Tensor, targeted: bool) -> Targeted | Untargeted:
    return Targeted((labels + 1) % 10) if targeted else Untargeted(labels)


# -- non-finite logits are never a success -----------------------------------------------------


@pytest.mark.parametrize("value", [float("inf"), float("nan"), float("-inf")])
@pytest.mark.parametrize(
    "attack",
    [PGD(eps=8 / 255, steps=3), FGSM(eps=8 / 255), CarliniWagnerL2(steps=3)],
    ids=lambda a: a.name,
)
def test_non_finite_logits_of_the_originals_are_an_error(
    digits_clf: Classifier,
    digits_batch: tuple[torch.Tensor, torch.Tensor],
    value: float,
    attack: PGD,
) -> None:
    images, labels = digits_batch[0][:4], digits_batch[1][:4]
    model = wrap(digits_clf, Shifted(digits_clf.model, value))
    with pytest.raises(ModelOutputError, match="logits for 4 of 4 images") as info:
        attack(model, images, goal_of(labels, targeted=True))
    assert isinstance(info.value, ValueError) and info.value.exit_code == 1
    assert ("NaN" if value != value else "inf") in str(info.value)


def test_a_target_logit_of_inf_on_the_output_is_an_error_not_a_success(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """A model that overflows on the changed images only: a margin of +inf looked like a
    success to the attack (a score-based one here: no gradient turns NaN first); the engine
    refuses to judge the images."""
    labels = digits_batch[1]
    images = digits_batch[0][labels != 1][:4]
    normalised = (images - digits_clf.mean) / digits_clf.std  # what the network sees
    model = wrap(digits_clf, Shifted(digits_clf.model, float("inf"), only_changed=normalised))
    with pytest.raises(ModelOutputError, match=r"for 4 of 4 images \(the adversarial images"):
        Square(eps=8 / 255, queries=20)(model, images, Targeted([1, 1, 1, 1]))


class Masked(nn.Module):
    """The digits network with class 9 masked out (-inf), as subset-of-classes models do."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out.index_fill(1, torch.tensor([9], device=out.device), float("-inf"))


def test_a_masked_class_of_minus_inf_is_allowed(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch
    keep = labels != 9
    model = wrap(digits_clf, Masked(digits_clf.model))
    result = PGD(eps=16 / 255, steps=5)(model, images[keep], Untargeted(labels[keep]))
    assert bool(result.success.any()) and not result.probs_after.isnan().any()
    assert not bool((result.probs_after[:, 9] > 0).any())


# -- masked gradients get a warning ------------------------------------------------------------


GRADIENT_ATTACKS = [info for info in list_attacks() if info.access == "gradients"]


def quick(info: AttackInfo) -> Attack:
    """A short run of a registered gradient attack, with its first threat model."""
    options = {o.name for o in info.options()}
    quick = {"steps": 2, "binary_search_steps": 1, "restarts": 1, "search_steps": 2}
    kwargs: dict[str, Any] = {k: v for k, v in quick.items() if k in options}
    norm = info.norms[0]
    if info.minimum_norm:
        return info.create(norm=norm, **kwargs)
    return info.create(eps=3 if norm == "l0" else 8 / 255, norm=norm, **kwargs)


def test_every_kind_of_gradient_attack_is_checked() -> None:
    families = {info.family for info in GRADIENT_ATTACKS}
    assert {"gradient", "minimum-norm", "sparse"} <= families
    assert {"cw", "deepfool", "fab", "ead", "ddn", "fmn", "jsma", "pgd-l0"} <= {
        info.name for info in GRADIENT_ATTACKS
    }


@pytest.mark.parametrize("info", GRADIENT_ATTACKS, ids=lambda i: i.name)
def test_zero_gradients_give_a_gradient_masking_warning(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor], info: AttackInfo
) -> None:
    """Every gradient attack of the registry warns, once per run, on a model whose gradient
    is zero everywhere (an 8-bit rounding of its input), naming the images of the batch."""
    images, labels = digits_batch[0][:6], digits_batch[1][:6]
    model = wrap(digits_clf, Quantising(digits_clf.model))
    # An image the model gets wrong already is not attacked: the others are counted.
    attacked = int((model(images).argmax(dim=1) == labels).sum())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        quick(info)(model, images, Untargeted(labels))
    masking = [w for w in record if issubclass(w.category, GradientMaskingWarning)]
    assert len(masking) == 1, [str(w.message) for w in record]
    assert f"zero for {attacked} of {attacked} images" in str(masking[0].message)
    assert repr(info.name) in str(masking[0].message)


@pytest.mark.parametrize("info", GRADIENT_ATTACKS, ids=lambda i: i.name)
def test_a_model_with_gradients_gives_no_warning(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor], info: AttackInfo
) -> None:
    images, labels = digits_batch[0][:6], digits_batch[1][:6]
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        quick(info)(digits_clf, images, Untargeted(labels))


def test_the_warning_names_images_by_their_place_in_the_batch(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Images that meet the goal already are not attacked; the others keep their numbers."""
    images, labels = digits_batch[0][:3], digits_batch[1][:3].clone()
    labels[0] = (labels[0] + 1) % 10  # image 0 is "misclassified" already: left out
    model = wrap(digits_clf, Quantising(digits_clf.model))
    with pytest.warns(
        GradientMaskingWarning, match=r"zero for 2 of 2 images attacked \(images 1, 2 "
    ):
        PGD(eps=8 / 255, steps=2)(model, images, Untargeted(labels))


def test_the_model_is_left_without_hooks(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:2], digits_batch[1][:2]
    PGD(eps=8 / 255, steps=2)(digits_clf, images, Untargeted(labels))
    assert not digits_clf._forward_pre_hooks


# -- autocast around the Python API ------------------------------------------------------------


def test_autocast_around_an_attack_gives_the_float32_result(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    attack = PGD(eps=16 / 255, steps=5, seed=0)
    plain = attack(digits_clf, images, Untargeted(labels))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = attack(digits_clf, images, Untargeted(labels))
    assert torch.equal(plain.adversarial, mixed.adversarial)
    assert torch.equal(plain.success, mixed.success) and bool(plain.success.any())
    assert mixed.probs_after.dtype == torch.float32


# -- budgets in their own units ----------------------------------------------------------------


def test_an_l0_budget_is_reported_in_pixels(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:2], digits_batch[1][:2]
    result = PGDL0(eps=5, steps=3, restarts=1)(digits_clf, images, Untargeted(labels))
    summary = result_summary(result)
    assert summary["params"]["eps"] == 5 and "eps_255" not in summary["params"]
    assert summary["budget"] == "5 pixels"
    title, _, _ = _title_parts(result, 0)
    assert "L0 eps 5 pixels" in title and "1275" not in title


def test_budgets_are_written_in_their_own_units() -> None:
    assert units.format_budget(10 / 255, "linf") == "10/255"
    assert units.format_budget(3.0, "l2") == "765 (0-255 units)"
    assert units.format_budget(1, "l0") == "1 pixel"
    assert units.max_budget("l2", (3, 2, 2)) == pytest.approx(12**0.5)


def test_linf_and_device_in_the_record(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:1], digits_batch[1][:1]
    result = FGSM(eps=8 / 255)(digits_clf, images, Untargeted(labels))
    summary = result_summary(result)
    assert summary["budget"] == "8/255" and summary["params"]["eps_255"] == 8
    assert summary["device"] == "cpu" and "cuda" not in summary


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_versions_in_the_record(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:1], digits_batch[1][:1]
    clf = wrap(digits_clf, digits_clf.model).to("cuda")
    summary = result_summary(FGSM(eps=8 / 255)(clf, images, Untargeted(labels)))
    assert summary["device"].startswith("cuda") and summary["cuda"] == torch.version.cuda
    assert summary["cudnn"] == torch.backends.cudnn.version() and summary["gpu"]


# -- budgets that do nothing or mean nothing ---------------------------------------------------


def test_a_budget_under_one_level_warns_and_names_the_units(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    image = digits_batch[0][0]
    with pytest.warns(BudgetWarning, match=r"under one 8-bit level.*--eps 0\.03 is this budget"):
        result = trompe.attack(image, model=digits_clf, eps=0.03 / 255, steps=2)
    assert torch.equal(result.adversarial, result.original)  # what the warning says
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)
        trompe.attack(image, model=digits_clf, eps=1 / 255, steps=2)
        trompe.attack(image, model=digits_clf, attack="pgd-l0", norm="l0", eps=1, steps=2)


@pytest.mark.parametrize(("norm", "eps"), [("l2", 1e38), ("l2", 1e308), ("l2", 2e4), ("l0", 1e5)])
def test_an_absurd_budget_is_refused(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor], norm: str, eps: float
) -> None:
    """8 x 8 RGB digits: 192 values, so at most sqrt(192) = 13.9 in L2, and 64 pixels; refused
    over 1000 times that. 1e38 used to overflow float32 and change nothing, silently."""
    images, labels = digits_batch[0][:2], digits_batch[1][:2]
    attack = PGDL0(eps=int(eps), steps=2) if norm == "l0" else PGD(eps=eps, norm=norm, steps=2)
    with pytest.raises(InvalidArgumentError, match=r"absurd.*largest") as info:
        attack(digits_clf, images, Untargeted(labels))
    assert info.value.exit_code == 2


def test_a_budget_above_any_change_is_no_bound(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:8], digits_batch[1][:8]
    unbounded = PGD(eps=1e4, norm="l2", steps=5)(digits_clf, images, Untargeted(labels))
    assert bool(unbounded.success.all()) and float(unbounded.norms.l2.max()) > 255


# -- the command line: one exit-code policy, warnings as one line ------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trompe", *args], capture_output=True, text=True, timeout=300
    )


def test_json_exits_1_when_the_goal_is_not_met(tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = ("--target", "lemon", "--eps", "1", "--steps", "1", "--resolution", "model")
    result = run_cli("attack", *common, "--out", str(out), "--json")
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)  # the JSON is still printed, and the files written
    assert not summary["success"] and not summary["verified_on_png"]["success"]
    assert (out / "result.json").exists()
    plain = run_cli("attack", *common, "--out", str(tmp_path / "plain"))
    assert plain.returncode == 1 and "goal not met" in plain.stdout


def test_cli_budget_under_one_level_warns_in_one_line_and_absurd_is_refused(
    tmp_path: Path,
) -> None:
    tiny = run_cli(
        "attack", "--eps", "0.03", "--steps", "1", "--resolution", "model", "--out",
        str(tmp_path / "tiny"), "--json",
    )  # fmt: skip
    warning = [line for line in tiny.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("trompe: warning: "), tiny.stderr
    assert "0-255 levels" in warning[0] and "Traceback" not in tiny.stderr
    assert tiny.returncode == 1  # nothing changed: the goal is not met
    absurd = run_cli("attack", "--eps", "1e38", "--norm", "l2", "--out", str(tmp_path / "a"))
    assert absurd.returncode == 2, absurd.stderr
    assert absurd.stderr.count("\n") == 1 and "absurd" in absurd.stderr
