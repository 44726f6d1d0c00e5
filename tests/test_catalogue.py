"""One property suite over the whole attack registry, on the digits CNN (a real, trained model).

Every attack must: return images on the 8-bit grid in [0, 1] with the input's shape; stay within
its budget after rounding (fixed-budget attacks); report ``success`` equal to re-prediction;
return images that already meet the goal unchanged; give the same result for the same seed;
reach per-image targets when it has a targeted form; use no gradient when it needs only scores or
labels, with exact query counts; and refuse a model that gives less than it needs.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from _helpers import counted, counter_of
from trompe.attacks import (
    ATTACKS,
    Attack,
    AttackInfo,
    Norm,
    Targeted,
    Untargeted,
    get_attack,
    sweep,
)
from trompe.attacks._options import attack_options
from trompe.errors import AccessError, InvalidArgumentError
from trompe.models import Classifier

#: Per attack: the hyper-parameters that make it fast on 8x8 digits, the budget per norm (API
#: units; L0: pixels) for fixed-budget attacks, and the least untargeted success rate expected
#: on the batch at those settings (well below what each reaches, to catch a broken attack, not
#: to grade it). "targeted" overrides options for the targeted test (targets are harder).
FAST: dict[str, dict[str, Any]] = {
    "fgsm": {"options": {}, "eps": {"linf": 0.3, "l2": 3.0}, "rate": 0.5},
    "pgd": {"options": {"steps": 20}, "eps": {"linf": 0.2, "l2": 2.0}, "rate": 0.8},
    "mifgsm": {"options": {"steps": 10}, "eps": {"linf": 0.2, "l2": 2.0}, "rate": 0.8},
    "difgsm": {
        "options": {"steps": 10, "diversity_prob": 0.7, "min_scale": 0.7},
        "eps": {"linf": 0.2, "l2": 2.0},
        "rate": 0.8,
    },
    "cw": {
        "options": {"steps": 60, "binary_search_steps": 1},
        "targeted": {"steps": 200, "binary_search_steps": 1},
        "rate": 0.8,
    },
    "apgd-ce": {"options": {"steps": 20}, "eps": {"linf": 0.2, "l2": 2.0}, "rate": 0.8},
    "apgd-dlr": {"options": {"steps": 20}, "eps": {"linf": 0.2, "l2": 2.0}, "rate": 0.8},
    "apgd-t": {
        "options": {"steps": 10, "targets": 3},
        "eps": {"linf": 0.2, "l2": 2.0},
        "rate": 0.8,
    },
    "deepfool": {"options": {"steps": 10}, "rate": 0.9},
    "ddn": {"options": {"steps": 20}, "targeted": {"steps": 30}, "rate": 0.9},
    "fab": {"options": {"steps": 10}, "rate": 0.9},
    "fab-t": {"options": {"steps": 10, "targets": 3}, "rate": 0.9},
    "fmn": {"options": {"steps": 20}, "rate": 0.9},
    "ead": {"options": {"steps": 50, "c": 1.0, "binary_search_steps": 1}, "rate": 0.8},
    "pgd-l0": {"options": {"steps": 20, "restarts": 1}, "eps": {"l0": 10}, "rate": 0.5},
    "jsma": {"options": {}, "eps": {"l0": 10}, "rate": 0.5},
    "square": {"options": {"queries": 300}, "eps": {"linf": 0.2, "l2": 2.0}, "rate": 0.5},
    "simba": {
        "options": {"queries": 300},
        "targeted": {"queries": 1000},
        "eps": {"l2": 2.0},
        "rate": 0.5,
    },
    # Targeted one-pixel changes are rare on digits (3 of 64 pixels): the test asks for some.
    "one-pixel": {
        "options": {"population": 50, "steps": 10},
        "eps": {"l0": 3},
        "rate": 0.2,
        "targeted_rate": 0.05,
    },
    "hsj": {"options": {"queries": 300}, "rate": 0.9},
    "boundary": {"options": {"queries": 300}, "rate": 0.9},
}

BATCH = 8


def _build(info: AttackInfo, norm: Norm, **extra: Any) -> Attack:
    settings = FAST[info.name]
    options = {**settings["options"], **extra}
    eps = None if info.minimum_norm else settings["eps"][norm]
    return info.create(eps=eps, norm=norm, **options)


def _seeded(info: AttackInfo) -> dict[str, int]:
    return {"seed": 3} if any(o.name == "seed" for o in info.options()) else {}


def _model_for(info: AttackInfo, clf: Classifier) -> Classifier:
    return clf if info.access == "gradients" else clf.with_access(info.access)  # type: ignore[arg-type]


def _cases() -> list[tuple[str, str]]:
    return [(name, norm) for name, info in ATTACKS.items() for norm in info.norms]


def test_every_attack_has_fast_settings() -> None:
    assert set(FAST) == set(ATTACKS), "add the new attack's fast settings to FAST"
    for info in ATTACKS.values():
        assert info.summary, f"{info.name} needs a one-line summary"
        for option in attack_options(info.cls):
            assert option.help, f"{info.name}: document option {option.name} under Args:"
        assert get_attack(info.name) is info


@pytest.mark.parametrize(("name", "norm"), _cases())
def test_untargeted_properties(
    name: str, norm: Norm, digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    info = ATTACKS[name]
    images, labels = digits_batch[0][:BATCH], digits_batch[1][:BATCH].clone()
    # The last two images already meet the goal: their "true class" is not what the model says.
    labels[-2:] = (labels[-2:] + 1) % 10
    clf = counted(digits_clf, info.access)
    attack = _build(info, norm, **_seeded(info))
    result = attack(clf, images, Untargeted(labels))

    adv = result.adversarial
    assert adv.shape == images.shape and adv.dtype == torch.float32
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal((adv * 255).round() / 255, adv), "not on the 8-bit grid"
    with torch.no_grad():
        again = digits_clf(adv).argmax(dim=1)
    assert torch.equal(result.success, again != labels), "success must equal re-prediction"
    assert torch.equal(adv[-2:], images[-2:]) and bool(result.success[-2:].all())
    assert int(result.queries[-2:].sum()) == 0
    if not info.minimum_norm:
        eps = FAST[name]["eps"][norm]
        limit = eps if norm == "l0" else eps * 255
        assert (result.norms.of(norm) <= limit + 1e-4).all(), "budget exceeded after rounding"
    else:
        found = result.distances[result.success]
        assert torch.isfinite(found).all()
    rate = float(result.success[:-2].float().mean())
    assert rate >= FAST[name]["rate"], f"{name} {norm}: success {rate:.2f} on the digits"

    # Counts: the network saw exactly the images the result says (2 engine passes per image).
    counter = counter_of(clf)
    assert counter.images == int(result.forwards.sum())
    if info.access != "gradients":
        assert counter.graph_calls == 0 and int(result.gradients.sum()) == 0
        assert int(result.queries.sum()) == int(result.forwards.sum()) - 2 * BATCH
    assert not clf.training and not any(p.requires_grad for p in clf.parameters())

    # Same seed, same images.
    attack2 = _build(info, norm, **_seeded(info))
    assert torch.equal(attack2(clf, images, Untargeted(labels)).adversarial, adv)


@pytest.mark.parametrize("name", [n for n, i in ATTACKS.items() if i.targeted])
def test_targeted_runs_hit_per_image_targets(
    name: str, digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    info = ATTACKS[name]
    images, labels = digits_batch[0][:BATCH], digits_batch[1][:BATCH]
    targets = (labels + 1 + torch.arange(BATCH) % 9) % 10  # a different target per image
    norm = info.norms[0]
    clf = _model_for(info, digits_clf)
    result = _build(info, norm, **FAST[name].get("targeted", {}))(clf, images, Targeted(targets))
    with torch.no_grad():
        predicted = digits_clf(result.adversarial).argmax(dim=1)
    assert torch.equal(result.success, predicted == targets)
    wanted = FAST[name].get("targeted_rate", 0.5)
    assert float(result.success.float().mean()) >= wanted, f"{name}: targets reached too rarely"


@pytest.mark.parametrize("name", [n for n, i in ATTACKS.items() if not i.targeted])
def test_attacks_without_targeted_form_refuse_a_target(
    name: str, digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    info = ATTACKS[name]
    images, labels = digits_batch[0][:2], digits_batch[1][:2]
    with pytest.raises(InvalidArgumentError, match="no targeted form"):
        _build(info, info.norms[0])(_model_for(info, digits_clf), images, Targeted(labels))


@pytest.mark.parametrize("name", list(ATTACKS))
def test_access_levels_are_enforced(
    name: str, digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    info = ATTACKS[name]
    images, labels = digits_batch[0][:2], digits_batch[1][:2]
    attack = _build(info, info.norms[0])
    levels = ["gradients", "scores", "labels"]
    for weaker in levels[levels.index(info.access) + 1 :]:
        with pytest.raises(AccessError, match=f"needs {info.access}"):
            attack(digits_clf.with_access(weaker), images, Untargeted(labels))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", [n for n, i in ATTACKS.items() if not i.minimum_norm and "linf" in i.norms]
)
def test_unsupported_threat_model_is_refused(name: str) -> None:
    info = ATTACKS[name]
    missing = next(n for n in ("l0", "l1", "l2", "linf") if n not in info.norms)
    with pytest.raises(InvalidArgumentError, match="threat model"):
        info.cls(eps=0.1, norm=missing, **FAST[name]["options"])


def test_scores_only_model_refuses_gradients(digits_clf: Classifier) -> None:
    black_box = digits_clf.with_access("scores")
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    with pytest.raises(AccessError, match="no gradients"):
        black_box(x)
    with torch.no_grad():
        assert torch.equal(black_box(x), digits_clf(x))  # scores still flow
    assert digits_clf.access == "gradients"  # the original is untouched
    with pytest.raises(InvalidArgumentError, match="access"):
        digits_clf.with_access("everything")  # type: ignore[arg-type]


def test_sweep_fixed_budget_matches_single_runs(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    epsilons = [0.05, 0.1, 0.2]
    out = sweep("pgd", digits_clf, images, Untargeted(labels), epsilons, steps=10)
    assert out.success.shape == (3, 16)
    rates = out.success_rate
    assert rates == sorted(rates) and rates[-1] > rates[0]
    assert out.robust_accuracy == [1 - r for r in rates]
    # Later budgets attacked only the images still unbroken.
    assert len(out.results[0]) == 16
    assert all(len(b) <= len(a) for a, b in zip(out.results, out.results[1:], strict=False))
    # Each image's distance is within the first budget where it broke.
    for b in range(16):
        broken = out.success[:, b].nonzero()
        if len(broken):
            assert out.distances[b] <= epsilons[int(broken[0])] * 255 + 1e-6
        else:
            assert math.isinf(float(out.distances[b]))
    with torch.no_grad():
        fooled = digits_clf(out.adversarial).argmax(dim=1) != labels
    assert torch.equal(fooled, out.success[-1])


def test_sweep_of_a_minimum_norm_attack_thresholds_its_distances(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:8], digits_batch[1][:8]
    out = sweep(
        "cw",
        digits_clf,
        images,
        Untargeted(labels),
        [0.5, 1.0, 3.0],
        steps=60,
        binary_search_steps=1,
    )
    assert len(out.results) == 1
    found = out.results[0].distances
    for e, eps in enumerate(out.epsilons):
        assert torch.equal(out.success[e], found <= eps * 255 + 1e-6)
    with pytest.raises(InvalidArgumentError, match="above 0"):
        sweep("pgd", digits_clf, images, Untargeted(labels), [0.1, -1])
    with pytest.raises(InvalidArgumentError, match="at least one"):
        sweep("pgd", digits_clf, images, Untargeted(labels), [])
