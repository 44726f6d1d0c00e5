"""Transfer (issue 13, part 2): the Ensemble classifier, the gradient hook's DI/TI/VT/MI parts
against their papers and trompe's own MI-FGSM and DI-FGSM, check_transfer and trompe.transfer
on digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import trompe
from trompe.attacks import MIFGSM, PGD, Targeted, Untargeted
from trompe.attacks.base import seen_pixels
from trompe.attacks.difgsm import DIFGSM
from trompe.attacks.gradient import GradientOptions, gaussian_kernel, objective, smooth
from trompe.errors import InvalidArgumentError, OutputExistsError
from trompe.evaluation.transfer import check_transfer
from trompe.images import load_image, save_png
from trompe.models import Classifier, Ensemble, load_model
from trompe.models.digits import DigitsData, train_digits_classifier


@pytest.fixture(scope="module")
def robust() -> Classifier:
    return load_model("digits_robust")


@pytest.fixture(scope="module")
def plain(digits: DigitsData) -> Classifier:
    """A second digits CNN, not adversarially trained (3 epochs, seed 1: about a second), at
    digits_robust's 8 x 8 input."""
    trained = train_digits_classifier(digits, epochs=3, seed=1)
    return Classifier(
        trained.model,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        labels=trained.labels,
        input_size=8,
        interpolation="area",
        name="digits-cnn",
    )


@pytest.fixture(scope="module")
def batch(digits: DigitsData) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.test_images[:24], digits.test_labels[:24]


def big(images: torch.Tensor) -> torch.Tensor:
    """Digits at 16 x 16 (nearest), so that the models' own resize has work to do."""
    return F.interpolate(images, size=(16, 16), mode="nearest")


# -- the ensemble ------------------------------------------------------------------------------


def test_ensemble_is_the_mean_of_its_members_logits(
    robust: Classifier, plain: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images = big(batch[0])
    ensemble = Ensemble([robust, plain])
    assert isinstance(ensemble, Classifier)
    assert ensemble.name == "digits_robust+digits-cnn"
    assert ensemble.input_size is None and ensemble.preprocess(images) is images
    with torch.no_grad():
        expected = (robust(images) + plain(images)) / 2
        assert torch.allclose(ensemble(images), expected, atol=1e-6)
    info = ensemble.describe()
    assert info["combine"] == "logits"
    assert [m["id"] for m in info["members"]] == ["digits_robust", "digits-cnn"]  # type: ignore[index]
    # predict() goes through the same fused logits
    top = ensemble.predict(images[:2], k=1)
    assert [t[0].index for t in top] == expected[:2].argmax(dim=1).tolist()


def test_loss_ensemble_ascends_the_mean_cross_entropy(
    robust: Classifier, plain: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = batch
    ensemble = Ensemble([robust, plain], combine="loss")
    goal = Untargeted(labels)
    x = images.clone().requires_grad_(True)
    logits, loss = objective(ensemble, goal, x)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    # The reference: Dong et al.'s loss ensemble, the mean of the members' cross-entropies.
    y = images.clone().requires_grad_(True)
    members = [F.cross_entropy(m(y), labels, reduction="none") for m in (robust, plain)]
    reference = (members[0] + members[1]) / 2
    (expected,) = torch.autograd.grad(reference.sum(), y)
    assert torch.allclose(loss, reference, atol=1e-6)
    assert torch.allclose(grad, expected, atol=1e-7)
    with torch.no_grad():
        mean_log_probs = (robust(images).log_softmax(1) + plain(images).log_softmax(1)) / 2
    assert torch.allclose(logits, mean_log_probs, atol=1e-6)
    # and every attack takes it: PGD's result is judged by the fused logits
    result = PGD(eps=32 / 255, steps=5)(ensemble, images, goal)
    with torch.no_grad():
        assert torch.equal(result.success, goal.met(ensemble(result.adversarial)))


def test_ensemble_refuses_models_of_other_classes(robust: Classifier) -> None:
    shuffled = Classifier(robust.model, labels=[str(9 - i) for i in range(10)], name="reversed")
    with pytest.raises(InvalidArgumentError, match="share their classes: class 0 is '0'"):
        Ensemble([robust, shuffled])
    fewer = Classifier(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 9)), input_size=8, name="nine"
    )
    with pytest.raises(InvalidArgumentError, match="'digits_robust' has 10, 'nine' 9"):
        Ensemble([robust, fewer])
    with pytest.raises(InvalidArgumentError, match="at least two models"):
        Ensemble([robust])
    with pytest.raises(InvalidArgumentError, match="combine must be one of logits, loss"):
        Ensemble([robust, robust], combine="probs")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="named twice"):
        load_model("digits_robust, digits_robust")
    with pytest.raises(InvalidArgumentError, match="empty model name"):
        load_model("digits_robust,,efficientnet_lite0")


def test_seen_pixels_of_an_ensemble_is_where_any_member_looks(robust: Classifier) -> None:
    def cropped(fraction: float) -> Classifier:
        return Classifier(
            robust.model,
            labels=robust.labels,
            input_size=8,
            crop_fraction=fraction,
            name=f"c{fraction}",
        )

    images = torch.rand(2, 3, 32, 32)
    small, large = cropped(0.5), cropped(0.75)
    union = seen_pixels(Ensemble([small, large]), images)
    expected = seen_pixels(large, images)
    assert union is not None and expected is not None
    assert torch.equal(union, expected)
    assert int(union[0].sum()) < 32 * 32  # the corners stay untouched by the random start
    assert seen_pixels(Ensemble([small, robust]), torch.rand(1, 3, 8, 8)) is None


# -- the gradient hook against the references ----------------------------------------------------


def test_momentum_hook_on_pgd_is_mifgsm_step_for_step(
    robust: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = batch
    eps = 64 / 255  # digits_robust is trained at 32 / 255
    hooked = PGD(
        eps=eps,
        steps=10,
        step_size=eps / 10,
        random_start=False,
        gradient=GradientOptions(momentum=1.0),
    )
    reference = MIFGSM(eps=eps, steps=10)
    for goal in (Untargeted(labels), Targeted((labels + 1) % 10)):
        a, b = hooked(robust, images, goal), reference(robust, images, goal)
        assert torch.equal(a.adversarial, b.adversarial)
        assert torch.equal(a.steps, b.steps)
        assert 0 < int(a.success.sum()) < len(images)  # a case where the steps matter


def test_diversity_hook_on_mifgsm_is_difgsm_step_for_step(
    robust: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = big(batch[0]), batch[1]  # DI acts on the model's 8 x 8 view of them
    goal = Untargeted(labels)
    for early_stop in (False, True):
        options = {"eps": 32 / 255, "steps": 8, "early_stop": early_stop, "seed": 3}
        hooked = MIFGSM(**options, gradient=GradientOptions(diversity=0.5, min_scale=0.5))
        reference = DIFGSM(**options, diversity_prob=0.5, min_scale=0.5)
        a, b = hooked(robust, images, goal), reference(robust, images, goal)
        assert torch.equal(a.adversarial, b.adversarial)
        assert torch.equal(a.success, b.success)
        plain = MIFGSM(**options)(robust, images, goal)
        assert not torch.equal(a.adversarial, plain.adversarial)


def test_translation_kernel_is_the_papers() -> None:
    from scipy import signal, stats

    for size in (7, 15):
        line = stats.norm.pdf(np.linspace(-3, 3, size))  # Dong et al. 2019's gkern(size, 3)
        paper = np.outer(line, line)
        paper /= paper.sum()
        assert np.allclose(gaussian_kernel(size).numpy(), paper, atol=1e-7)
    grad = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    smoothed = smooth(grad, 7)
    kernel = gaussian_kernel(7).double().numpy()
    for b in range(2):
        for c in range(3):
            # zero padding, same size: TensorFlow's depthwise conv with padding "SAME"
            ref = signal.convolve2d(grad[b, c].numpy(), kernel, mode="same", boundary="fill")
            assert np.allclose(smoothed[b, c].numpy(), ref, atol=1e-10)


def test_variance_tuning_follows_wang_and_he(
    robust: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """VMI-FGSM as Algorithm 1 of arXiv:2103.15571, written out here with the same draws."""
    images, labels = batch[0][:8], batch[1][:8]
    eps, steps, neighbours, beta = 24 / 255, 4, 3, 1.5
    attack = MIFGSM(
        eps=eps,
        steps=steps,
        early_stop=False,
        seed=5,
        gradient=GradientOptions(variance=neighbours, variance_radius=beta),
    )
    result = attack(robust, images, Untargeted(labels))

    def gradient(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(robust(x), labels, reduction="none").sum()
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    generator = torch.Generator().manual_seed(5)
    x, variance, velocity = images.clone(), torch.zeros_like(images), torch.zeros_like(images)
    for _ in range(steps):
        grad = gradient(x)  # g-hat_{t+1}
        total = torch.zeros_like(x)
        for _ in range(neighbours):  # V(x_t): neighbours drawn in [-beta eps, beta eps]^d
            noise = torch.rand(x.shape, generator=generator)
            total += gradient(x + (2 * noise - 1) * beta * eps)
        corrected = grad + variance
        variance = total / neighbours - grad
        l1 = corrected.flatten(1).abs().sum(dim=1).view(-1, 1, 1, 1)
        velocity = velocity + corrected / l1
        x = attack.project(x + eps / steps * velocity.sign(), images)
    expected = attack.round_into_budget(x, images)
    assert torch.equal(result.adversarial, expected)
    plain = MIFGSM(eps=eps, steps=steps, early_stop=False, seed=5)
    assert not torch.equal(plain(robust, images, Untargeted(labels)).adversarial, expected)


# -- measuring transfer ----------------------------------------------------------------------------


def test_check_transfer_judges_each_model_on_its_top1(
    robust: Classifier, plain: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = batch
    result = MIFGSM(eps=48 / 255, steps=10, early_stop=False)(robust, images, Untargeted(labels))
    check = check_transfer([plain], result.adversarial, result.goal, original=images)
    with torch.no_grad():
        clean = plain(images).argmax(dim=1)
        after = plain(result.adversarial).softmax(dim=1)
    assert torch.equal(check.met[0], after.argmax(dim=1) != clean)
    assert 0 < float(check.rate.mean()) < 1
    row = check.to_json(3)
    assert row["rate"] == float(check.met[0, 3])
    (only,) = row["models"]
    assert only["model"] == "digits-cnn"
    assert only["top1"]["index"] == int(after[3].argmax())
    assert only["top1"]["label"] == str(int(after[3].argmax()))
    assert only["goal_prob"] == pytest.approx(float(after[3, labels[3]]), abs=1e-6)
    assert only["clean_top1"]["index"] == int(clean[3])
    targeted = check_transfer([plain], result.adversarial, Targeted(torch.full((24,), 3)))
    assert torch.equal(targeted.met[0], after.argmax(dim=1) == 3)
    with pytest.raises(InvalidArgumentError, match="out of range"):
        check.to_json(24)


def write_digits(folder: Path, images: torch.Tensor) -> None:
    folder.mkdir()
    for i, image in enumerate(images):
        save_png(image, folder / f"digit{i}.png")


def test_transfer_over_a_folder_measures_the_saved_pngs(
    tmp_path: Path,
    robust: Classifier,
    plain: Classifier,
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    photos = tmp_path / "photos"
    write_digits(photos, big(batch[0][:6]))
    out = tmp_path / "out"
    report = trompe.transfer(
        photos, model=robust, to=[plain], eps=48 / 255, steps=10, out=out, save_adversarial=True
    )
    assert sorted(p.name for p in out.iterdir()) == ["adversarial", "result.json", "transfer.png"]
    record = json.loads((out / "result.json").read_text())
    assert record["held_out"] == ["digits-cnn"] and record["targeted"] is False
    assert [p["name"] for p in record["photos"]] == [f"digit{i}.png" for i in range(6)]
    met = []
    for photo in record["photos"]:
        saved = load_image(out / "adversarial" / photo["name"])[None]
        clean = load_image(photos / photo["name"])[None]
        with torch.no_grad():
            fooled = plain(saved).argmax(1) != plain(clean).argmax(1)
        assert photo["models"]["digits-cnn"]["met"] == bool(fooled)
        assert photo["linf_255"] <= 48
        met.append(bool(fooled))
    assert record["rates"]["digits-cnn"] == pytest.approx(sum(met) / 6, abs=1e-6)
    assert report.rates == pytest.approx(record["rates"], abs=1e-6)
    assert (out / "transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # never over files without force, and nothing written then
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(OutputExistsError):
        trompe.transfer(photos, model=robust, to=[plain], steps=1, out=out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # a held-out model the attack sees, an empty folder: one line, nothing written
    with pytest.raises(InvalidArgumentError, match="both attacked and held out"):
        trompe.transfer(photos, model=robust, to=[robust], steps=1, out=tmp_path / "o2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match="holds no photos"):
        trompe.transfer(tmp_path / "empty", model=robust, to=[plain], out=tmp_path / "o3")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_targeted_transfer_from_an_ensemble(
    robust: Classifier, plain: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images = big(batch[0][:4])
    other = Classifier(
        robust.model, labels=robust.labels, input_size=8, crop_fraction=0.75, name="robust-crop"
    )
    report = trompe.transfer(
        [("a.png", images[0]), ("b.png", images[1]), ("c.png", images[2])],
        "7",
        model=Ensemble([robust, other]),
        to=[plain],
        eps=64 / 255,
        steps=10,
        diversity=0.5,
        translation=3,
    )
    assert report.params["diversity"] == 0.5 and report.params["translation"] == 3
    ensemble = "digits_robust+robust-crop"
    assert report.models == (ensemble, "digits_robust", "robust-crop", "digits-cnn")
    assert report.target == {"index": 7, "label": "7"}
    for photo in report.photos:
        for model, row in photo.models.items():
            assert row["met"] == (row["top1"]["index"] == 7), model


def test_attack_with_the_hook_reports_transfer_to_held_out_models(
    robust: Classifier, plain: Classifier, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    image = big(batch[0][:1])[0]
    result = trompe.attack(
        image, model=robust, eps=64 / 255, momentum=1.0, variance=2, transfer_to=[plain]
    )
    assert result.params["momentum"] == 1.0 and result.params["variance"] == 2
    row = result.transfer.to_json(0)
    with torch.no_grad():
        top = int(plain(result.adversarial).argmax())
        clean = int(plain(image[None]).argmax())
    assert row["models"][0]["top1"]["index"] == top
    assert row["models"][0]["met"] == (top != clean)
    assert row["rate"] == float(top != clean)
