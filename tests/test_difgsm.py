"""DI-FGSM: the transform is really applied, through the gradient hook, within the budget.

The property suite of test_catalogue.py covers it as every registered attack; these tests pin
what is particular to it: p = 0 is MI-FGSM exactly, p = 1 is not, the transform is a shrunken
copy padded with zeros, and a full-size photo works as with the other iterative attacks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trompe.attacks import DIFGSM, MIFGSM, Untargeted, get_attack
from trompe.attacks.difgsm import input_diversity
from trompe.errors import InvalidArgumentError
from trompe.images import example_path, load_image, quantize
from trompe.models import Classifier


class _Recording(nn.Module):
    """Wraps a network and keeps every batch it is given (normalised, as the network sees it)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        out: torch.Tensor = self.net(x)
        return out


def _recording_clf(digits_clf: Classifier) -> Classifier:
    return Classifier(
        _Recording(digits_clf.model),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        labels=list(digits_clf.labels),
        name="digits-recorded",
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"early_stop": False},
        {"norm": "l2", "eps": 1.5},
        {"random_start": True, "restarts": 2, "seed": 5},
    ],
    ids=["default", "fixed-steps", "l2", "restarts"],
)
def test_without_diversity_it_is_mifgsm_exactly(
    options: dict[str, object],
    digits_clf: Classifier,
    digits_batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    settings: dict[str, object] = {"eps": 0.1, "steps": 6, **options}
    plain = MIFGSM(**settings)(digits_clf, images, Untargeted(labels))  # type: ignore[arg-type]
    diverse = DIFGSM(diversity_prob=0.0, **settings)(digits_clf, images, Untargeted(labels))  # type: ignore[arg-type]
    assert torch.equal(diverse.adversarial, plain.adversarial)
    assert torch.equal(diverse.forwards, plain.forwards)
    assert torch.equal(diverse.gradients, plain.gradients)


def test_with_diversity_every_step_transforms_and_counts_its_passes(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    # Lifted off black, so that a strip of zeros in a view can only be the padding.
    images = quantize(0.2 + 0.6 * digits_batch[0][:16])
    labels = digits_batch[1][:16]
    steps = 5
    settings = {"eps": 0.1, "steps": steps, "early_stop": False}
    plain = MIFGSM(**settings)(digits_clf, images, Untargeted(labels))  # type: ignore[arg-type]
    clf = _recording_clf(digits_clf)
    attack = DIFGSM(diversity_prob=1.0, min_scale=0.5, **settings)  # type: ignore[arg-type]
    diverse = attack(clf, images, Untargeted(labels))
    assert not torch.equal(diverse.adversarial, plain.adversarial)
    # Per step and image: a pass of the transformed view, one of the image itself.
    assert torch.equal(diverse.forwards, plain.forwards + steps)
    assert torch.equal(diverse.gradients, plain.gradients)
    recording = clf.model
    assert isinstance(recording, _Recording)
    assert sum(len(x) for x in recording.inputs) == int(diverse.forwards.sum())
    # The views the gradient was taken of: 8 x 8, with a zero-padded (normalised: -1) border
    # strip wherever the drawn size is below 8; at min_scale 0.5 most draws are.
    views = recording.inputs[1 : 2 * steps + 1 : 2]
    assert all(v.shape == images.shape for v in views)
    padded = sum(int(((v == -1).all(dim=(1, 3)).any(dim=1)).sum()) for v in views)
    assert padded >= len(images) * steps // 2


def test_same_seed_same_images_other_seed_other_images(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    settings = {"eps": 0.1, "steps": 5, "early_stop": False, "min_scale": 0.5}
    first = DIFGSM(seed=1, **settings)(digits_clf, images, Untargeted(labels))  # type: ignore[arg-type]
    again = DIFGSM(seed=1, **settings)(digits_clf, images, Untargeted(labels))  # type: ignore[arg-type]
    other = DIFGSM(seed=2, **settings)(digits_clf, images, Untargeted(labels))  # type: ignore[arg-type]
    assert torch.equal(first.adversarial, again.adversarial)
    assert not torch.equal(first.adversarial, other.adversarial)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_it_succeeds_on_the_digits_within_budget(
    norm: str, digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:32], digits_batch[1][:32]
    eps = {"linf": 0.2, "l2": 2.0}[norm]
    # On 8 x 8 digits a min_scale of 0.9 rounds back to 8 pixels: 0.7 draws 6, 7 or 8.
    attack = get_attack("m-di2-fgsm").create(eps=eps, norm=norm, diversity_prob=0.7, min_scale=0.7)
    result = attack(digits_clf, images, Untargeted(labels))
    assert isinstance(attack, DIFGSM)
    assert (result.norms.of(norm) <= eps * 255 + 1e-4).all()
    assert float(result.success.float().mean()) >= 0.8


def test_input_diversity_is_a_shrunken_copy_padded_with_zeros() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 20, 30) + 0.5  # no zeros of its own
    out = input_diversity(images, min_scale=0.6, generator=generator)
    assert out.shape == images.shape
    for original, view in zip(images, out, strict=True):
        rows = view.ne(0).any(dim=(0, 2)).nonzero().squeeze(1)
        cols = view.ne(0).any(dim=(0, 1)).nonzero().squeeze(1)
        top, height = int(rows[0]), len(rows)
        left, width = int(cols[0]), len(cols)
        assert 12 <= height <= 20 and width == round(height * 30 / 20)
        inner = view[:, top : top + height, left : left + width]
        expected = F.interpolate(
            original[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
        assert torch.allclose(inner, expected)
        assert int(view.ne(0).any(dim=0).sum()) == height * width
    whole = input_diversity(images, min_scale=1.0, generator=generator)
    assert torch.equal(whole, images)  # nothing to shrink: the identity


def test_input_diversity_is_differentiable() -> None:
    images = torch.rand(2, 3, 10, 10, dtype=torch.float64, requires_grad=True)

    def transform(x: torch.Tensor) -> torch.Tensor:
        return input_diversity(x, min_scale=0.7, generator=torch.Generator().manual_seed(1))

    assert torch.autograd.gradcheck(transform, (images,))


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="probability"):
        DIFGSM(eps=0.1, diversity_prob=1.5)
    with pytest.raises(InvalidArgumentError, match="min_scale"):
        DIFGSM(eps=0.1, min_scale=0)
    with pytest.raises(InvalidArgumentError, match="min_scale"):
        DIFGSM(eps=0.1, min_scale=1.2)


def test_full_size_photo(imagenet_clf: Classifier) -> None:
    """As the other iterative attacks: the photo at its own size, through the model's crop."""
    photo = load_image(example_path("chelsea")).unsqueeze(0)
    with torch.no_grad():
        label = imagenet_clf(photo).argmax(dim=1)
    attack = DIFGSM(eps=4 / 255, steps=5, diversity_prob=1.0)
    result = attack(imagenet_clf, photo, Untargeted(label))
    assert result.adversarial.shape == photo.shape
    assert float(result.norms.linf[0]) <= 4 + 1e-4
    assert bool(result.success[0])
    assert int(result.gradients[0]) >= 1
