"""The evaluation cascade on the shipped robust digits model: numbers equal to the attacks run
by hand, monotone budgets, honest adversarial images, seeds, precision, and what it refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

import trompe
from trompe.attacks import Untargeted, get_attack
from trompe.errors import GradientMaskingWarning, InvalidArgumentError, UnknownAttackError
from trompe.evaluation._types import Chunk, EvalConfig, ImageRecord, Stage, chunk_seed
from trompe.evaluation.cascade import CASCADES, resolve_cascade, run_chunk
from trompe.models import Classifier
from trompe.models.digits import load_digits

#: Small settings that keep each test to seconds on the 8x8 digits.
QUICK = (
    Stage("apgd-ce", {"steps": 10}),
    Stage("apgd-t", {"steps": 10, "targets": 3}),
    Stage("square", {"queries": 100}),
)
EPS = (16 / 255, 32 / 255, 48 / 255)


@pytest.fixture(scope="module")
def robust() -> Classifier:
    return trompe.load_model("digits_robust")


@pytest.fixture(scope="module")
def chunk() -> Chunk:
    """40 test digits, two of them with a wrong label (the model is "wrong" on them)."""
    data = load_digits()
    labels = data.test_labels[:40].clone()
    labels[3] = (labels[3] + 1) % 10
    labels[17] = (labels[17] + 5) % 10
    return _chunk(data.test_images[:40], labels, index=2, start=80)


def _chunk(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    index: int = 0,
    start: int = 0,
    skipped: tuple[tuple[int, str, str], ...] = (),
) -> Chunk:
    positions = tuple(range(start, start + len(images)))
    return Chunk(index, positions, tuple(f"#{p}" for p in positions), images, labels, skipped)


def _config(
    stages: Sequence[Stage] = QUICK,
    eps: tuple[float, ...] = EPS,
    norm: str = "linf",
    **kwargs: object,
) -> EvalConfig:
    return EvalConfig({"id": "digits_robust"}, {"id": "test"}, norm, eps, tuple(stages), **kwargs)  # type: ignore[arg-type]


def _robust(records: Sequence[ImageRecord], k: int) -> int:
    return sum(r.budgets[k].robust for r in records if r.skipped is None)


def test_numbers_equal_the_attacks_run_by_hand(robust: Classifier, chunk: Chunk) -> None:
    stages = (Stage("apgd-ce", {"steps": 10}), Stage("square", {"queries": 100}))
    config = _config(stages, eps=(32 / 255,), seed=7)
    records = run_chunk(robust, chunk, config).records

    with torch.no_grad():
        clean = robust(chunk.images).argmax(dim=1)
    alive = (clean == chunk.labels).nonzero().squeeze(1)
    expected: dict[int, tuple[str, int]] = {}
    spent = torch.zeros(len(chunk), dtype=torch.long)
    for s, stage in enumerate(stages):
        attack = get_attack(stage.attack).create(
            eps=32 / 255, norm="linf", seed=chunk_seed(7, chunk.index, 0, s), **stage.options
        )
        result = attack(robust, chunk.images[alive], Untargeted(chunk.labels[alive]))
        spent[alive] += result.forwards
        with torch.no_grad():
            after = robust(result.adversarial).argmax(dim=1)
        for j, i in enumerate(alive.tolist()):
            if after[j] != chunk.labels[i]:
                expected[i] = (stage.attack, int(after[j]))
        alive = alive[after == chunk.labels[alive]]

    assert sum(not r.correct for r in records) == 2
    for i, record in enumerate(records):
        outcome = record.budgets[0]
        if not record.correct:
            assert (outcome.broken_by, outcome.robust, outcome.forwards) == ("clean", False, 0)
        elif i in expected:
            assert (outcome.broken_by, outcome.prediction) == expected[i]
            assert not outcome.robust and outcome.norms is not None
        else:
            assert outcome.robust and outcome.broken_by is None and outcome.norms is None
        if record.correct:
            # Each stage saw only the images still robust: the counts are the attacks' own.
            assert outcome.forwards == int(spent[i])
    assert len(expected) >= 3  # a test that can fail: some images do break at 32/255


def test_budgets_are_monotone_and_adversarials_are_honest(robust: Classifier, chunk: Chunk) -> None:
    config = _config()
    outcome = run_chunk(robust, chunk, config, keep_adversarial=True)
    records = outcome.records
    counts = [_robust(records, k) for k in range(len(EPS))]
    assert counts[0] >= counts[1] >= counts[2]
    assert counts[0] > counts[2]  # the sweep does something
    labels = chunk.labels
    for k, eps in enumerate(EPS):
        adversarial = outcome.adversarial[k]
        levels = adversarial * 255
        assert torch.equal(levels, levels.round())
        change = (levels - chunk.images * 255).abs().flatten(1).amax(dim=1)
        assert bool((change <= eps * 255 + 1e-3).all())
        with torch.no_grad():
            predicted = robust(adversarial).argmax(dim=1)
        for i, record in enumerate(records):
            b = record.budgets[k]
            assert b.eps == eps
            assert (predicted[i] == labels[i]) == b.robust
            if b.robust:
                assert torch.equal(adversarial[i], chunk.images[i])
            elif record.correct:
                assert b.prediction == int(predicted[i])
                assert b.norms is not None and b.norms["linf"] <= eps * 255 + 1e-6
                assert set(b.norms) == {"linf", "l2", "l1", "l0"}
            if k and not record.budgets[k - 1].robust and record.correct:
                # Broken at the smaller budget: the same image, carried, at no cost.
                assert b.carried and b.forwards == 0 and b.gradients == 0
                assert b.broken_by == record.budgets[k - 1].broken_by
                assert torch.equal(adversarial[i], outcome.adversarial[k - 1][i])
    assert set(outcome.seconds) == {s.attack for s in QUICK}


def test_later_stages_see_only_the_images_still_robust(robust: Classifier, chunk: Chunk) -> None:
    seen: list[str] = []
    config = _config(eps=(48 / 255,))
    records = run_chunk(robust, chunk, config, on_stage=seen.append).records
    assert seen == ["apgd-ce at 48/255", "apgd-t at 48/255", "square at 48/255"]
    by_ce = [r.budgets[0] for r in records if r.budgets[0].broken_by == "apgd-ce"]
    alone = _config((QUICK[0],), eps=(48 / 255,))
    ce_only = {r.position: r.budgets[0] for r in run_chunk(robust, chunk, alone).records}
    assert by_ce
    for record in records:
        b = record.budgets[0]
        if b.broken_by == "apgd-ce":
            # Broken by the first stage: the others spent nothing on it.
            assert b.forwards == ce_only[record.position].forwards
        elif record.correct:
            assert b.forwards > ce_only[record.position].forwards


def _small() -> Chunk:
    data = load_digits()
    return _chunk(data.test_images[:12], data.test_labels[:12], index=5)


def test_same_chunk_same_records(robust: Classifier) -> None:
    small = _small()
    config = _config(QUICK[:2], eps=(32 / 255, 64 / 255), seed=3)
    first = [r.to_json() for r in run_chunk(robust, small, config).records]
    assert first == [r.to_json() for r in run_chunk(robust, small, config).records]
    other = _config(QUICK[:2], eps=(32 / 255, 64 / 255), seed=4)
    assert [r.to_json() for r in run_chunk(robust, small, other).records] != first


@pytest.mark.slow
def test_same_chunk_same_records_in_a_fresh_process(robust: Classifier, tmp_path: Path) -> None:
    """What a resumed run or another rank finds: the records of a chunk do not depend on the
    process (seeds come from the configuration and the chunk's index alone)."""
    config = _config((QUICK[0], QUICK[2]), eps=(32 / 255, 64 / 255), seed=3)
    first = [r.to_json() for r in run_chunk(robust, _small(), config).records]
    script = tmp_path / "again.py"
    script.write_text(
        "import json, sys, trompe\n"
        "from trompe.evaluation._types import Chunk, EvalConfig\n"
        "from trompe.evaluation.cascade import run_chunk\n"
        "from trompe.models.digits import load_digits\n"
        "d = load_digits()\n"
        "config = EvalConfig.from_dict(json.loads(sys.argv[1]))\n"
        "chunk = Chunk(5, tuple(range(12)), tuple(f'#{p}' for p in range(12)),\n"
        "              d.test_images[:12], d.test_labels[:12])\n"
        "records = run_chunk(trompe.load_model('digits_robust'), chunk, config).records\n"
        "print(json.dumps([r.to_json() for r in records]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(config.to_dict())],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    assert json.loads(done.stdout) == json.loads(json.dumps(first))
    assert any(not r["budgets"][1]["robust"] for r in first)


def test_bf16_attacks_are_rechecked_in_float32(robust: Classifier, chunk: Chunk) -> None:
    config = _config(QUICK[:2], eps=(48 / 255,), precision="bf16")
    outcome = run_chunk(robust, chunk, config, keep_adversarial=True)
    adversarial = outcome.adversarial[0]
    with torch.no_grad():
        predicted = robust(adversarial).argmax(dim=1)
    broken = [not r.budgets[0].robust for r in outcome.records]
    assert sum(broken) > 2  # more than the two clean-wrong ones
    for i in range(len(chunk)):
        assert (predicted[i] != chunk.labels[i]) == broken[i]
    fp32 = run_chunk(robust, chunk, _config(QUICK[:2], eps=(48 / 255,))).records
    # Not the same search, but about as strong.
    assert abs(_robust(fp32, 0) - _robust(outcome.records, 0)) <= 4


def test_l2_budgets(robust: Classifier, chunk: Chunk) -> None:
    eps = (0.5, 2.0)
    outcome = run_chunk(robust, chunk, _config(eps=eps, norm="l2"), keep_adversarial=True)
    counts = [_robust(outcome.records, k) for k in range(2)]
    assert counts[0] >= counts[1] and counts[1] < 38
    for k, budget in enumerate(eps):
        change = ((outcome.adversarial[k] - chunk.images) * 255).flatten(1).norm(dim=1)
        assert bool((change <= budget * 255 + 1e-3).all())
        for record in outcome.records:
            b = record.budgets[k]
            if b.norms is not None:
                assert b.norms["l2"] <= budget * 255 + 1e-3


def test_skipped_images_get_records(robust: Classifier) -> None:
    data = load_digits()
    chunk = _chunk(
        data.test_images[:3],
        data.test_labels[:3],
        skipped=((1, "bad.png", "not an image"),),
    )
    chunk = Chunk(
        0, (0, 2, 3), ("a.png", "c.png", "d.png"), chunk.images, chunk.labels, chunk.skipped
    )
    records = run_chunk(robust, chunk, _config(QUICK[:1], eps=(8 / 255,))).records
    assert [r.position for r in records] == [0, 1, 2, 3]
    assert records[1].skipped == "not an image" and records[1].budgets == ()
    assert records[1].clean_prediction is None
    assert all(len(r.budgets) == 1 for r in records if r.skipped is None)


def test_an_empty_chunk(robust: Classifier) -> None:
    chunk = _chunk(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))
    assert run_chunk(robust, chunk, _config()).records == ()


def test_resolve_named_and_listed_cascades() -> None:
    assert resolve_cascade("standard", "linf") == ("standard", CASCADES["standard"])
    assert resolve_cascade(" Fast ", "l2") == ("fast", CASCADES["fast"])
    name, stages = resolve_cascade("apgd-ce, square", "linf")
    assert name == "custom"
    assert stages == (
        Stage("apgd-ce", {"steps": 100, "restarts": 1}),
        Stage("square", {"queries": 5000, "p_init": 0.8, "rescale": False}),
    )
    # Aliases resolve to the registry's names; attacks outside the standard take defaults.
    assert resolve_cascade(["apgd", Stage("pgd", {"steps": 5})], "linf")[1] == (
        Stage("apgd-ce", {"steps": 100, "restarts": 1}),
        Stage("pgd", {"steps": 5}),
    )


@pytest.mark.parametrize(
    ("attacks", "norm", "error", "words"),
    [
        ("apgd-ce,nope", "linf", UnknownAttackError, "nope"),
        ("simba", "linf", InvalidArgumentError, "threat model"),
        ("", "linf", InvalidArgumentError, "empty"),
        ([], "linf", InvalidArgumentError, "empty"),
        ("apgd-ce,,square", "linf", InvalidArgumentError, "empty name"),
        ("apgd-ce,apgd", "linf", InvalidArgumentError, "twice"),
        ([Stage("apgd-ce", {"seed": 1})], "linf", InvalidArgumentError, "seed"),
        ([Stage("apgd-ce", {"stepz": 1})], "linf", InvalidArgumentError, "stepz"),
        ([Stage("apgd-ce", {"steps": 0})], "linf", InvalidArgumentError, "steps"),
        ("apgd-ce", "l0", InvalidArgumentError, "norm"),
    ],
)
def test_resolve_refuses(
    attacks: str | list[Stage], norm: str, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words) as caught:
        resolve_cascade(attacks, norm)
    assert "\n" not in str(caught.value)


class _WrongUnderAutocast(torch.nn.Module):
    """A model that turns its logits upside down under autocast: every attack run in reduced
    precision "succeeds" at once, and only the float32 re-check can tell."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.inner = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.inner(images)
        return -logits if torch.is_autocast_enabled(images.device.type) else logits


def test_reduced_precision_successes_are_rejected_by_the_float32_check(
    robust: Classifier, chunk: Chunk
) -> None:
    tricky = Classifier(_WrongUnderAutocast(robust), name="tricky")
    stages = (Stage("apgd-ce", {"steps": 5}), Stage("fab-t", {"steps": 5, "targets": 2}))
    records = run_chunk(tricky, chunk, _config(stages, eps=(8 / 255,), precision="bf16")).records
    for record in records:
        b = record.budgets[0]
        if record.correct:
            # The attacks ran under autocast and claimed every image; none was confirmed.
            assert b.robust and b.rejected == 2 and b.prediction == record.label
        else:
            assert b.broken_by == "clean" and b.rejected == 0
    fp32 = run_chunk(tricky, chunk, _config(stages, eps=(8 / 255,))).records
    assert all(r.budgets[0].rejected == 0 for r in fp32)


def test_fab_t_runs_once_per_image_across_budgets(robust: Classifier) -> None:
    data = load_digits()
    small = _chunk(data.test_images[:16], data.test_labels[:16], index=1)
    stages = (Stage("fab-t", {"steps": 10, "targets": 2}),)
    eps = (24 / 255, 64 / 255)
    records = run_chunk(robust, small, _config(stages, eps=eps, seed=9)).records
    # By hand: FAB-T with AutoAttack's stop at the first budget, seeded for it.
    attack = get_attack("fab-t").create(
        norm="linf", seed=chunk_seed(9, 1, 0, 0), steps=10, targets=2, stop_at=24 / 255
    )
    right = [r.correct for r in records]
    index = torch.tensor([i for i, ok in enumerate(right) if ok])
    result = attack(robust, small.images[index], Untargeted(small.labels[index]))
    size = {int(i): float(result.norms.linf[j]) for j, i in enumerate(index)}
    success = {int(i): bool(result.success[j]) for j, i in enumerate(index)}
    for i, record in enumerate(records):
        if not record.correct:
            continue
        first, second = record.budgets
        spent = int(result.forwards[(index == i).nonzero()[0, 0]])
        # The cascade re-predicts a change it had to project into the budget (one forward).
        assert first.forwards == spent + (size[i] > eps[0] * 255 + 1e-6)
        for b, budget in zip(record.budgets, eps, strict=True):
            within = success[i] and size[i] <= budget * 255 + 1e-6
            # A FAB-T change larger than the budget, projected into it, may still fool the
            # model; one within it always does.
            if within:
                assert not b.robust and b.broken_by == "fab-t"
        if first.robust:
            # Not run again at the larger budget: its result is projected into it and, if
            # that changed it, re-predicted (one forward pass).
            assert second.gradients == 0
            assert second.forwards == (size[i] > eps[1] * 255 + 1e-6)
    assert any(r.budgets[0].robust and not r.budgets[1].robust for r in records)


def test_fp16_gradients_do_not_underflow(robust: Classifier, chunk: Chunk) -> None:
    """Without loss scaling, float16 turns the small gradients of confident images into
    zeros (a masking warning on a model that masks nothing); the cascade scales them."""
    from trompe.evaluation.cascade import _attacked_model

    images, labels = chunk.images[:20], chunk.labels[:20]
    grads = {}
    for precision in ("fp32", "fp16"):
        x = images.clone().requires_grad_(True)
        logits = _attacked_model(robust, precision)(x)
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        (grads[precision],) = torch.autograd.grad(loss, x)
    a, b = grads["fp32"].flatten(1), grads["fp16"].flatten(1)
    assert bool((b.abs().amax(dim=1) > 0).all()) and bool(b.isfinite().all())
    cosine = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))
    assert float(cosine.min()) > 0.9
    ratio = b.norm(dim=1) / a.norm(dim=1)
    assert bool(((ratio > 0.5) & (ratio < 2)).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        run_chunk(robust, chunk, _config(QUICK[:1], eps=(16 / 255,), precision="fp16"))
