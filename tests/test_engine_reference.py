"""The engine's fixed-step loop does the textbook loop's work and nothing that changes it.

A fixed-step PGD (``early_stop=False``) must return exactly, bit for bit, what a plain loop
returns after the same random start, the same loss and the same projection, rounded to 8 bits
the way the engine rounds: the engine's bookkeeping may cost time but never change a result.
"""

from __future__ import annotations

import pytest
import torch

from trompe.attacks import MIFGSM, PGD, Goal, Targeted, Untargeted
from trompe.images import quantize
from trompe.models import Classifier


def reference_pgd(
    clf: Classifier,
    images: torch.Tensor,
    goal: Goal,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str,
    seed: int | None,
) -> torch.Tensor:
    """Textbook PGD with trompe's start, loss and projection; the last iterate, unrounded."""
    x = images.clone()
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        if norm == "linf":
            noise = torch.rand(images.shape, generator=generator)
            x = images + (2 * noise - 1) * eps
        else:
            direction = torch.randn(images.shape, generator=generator)
            direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            radius = torch.rand(images.shape[0], generator=generator)
            x = images + direction * (eps * radius ** (1 / images[0].numel())).view(-1, 1, 1, 1)
    x = project(x, images, eps, norm)
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(goal.loss(clf(x)).sum(), x)
        with torch.no_grad():
            if norm == "linf":
                moved = x + step_size * grad.sign()
            else:
                size = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                moved = x + step_size * (grad / size)
            x = project(moved, images, eps, norm)
    return x.detach()


def project(x: torch.Tensor, images: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    delta = x - images
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        factor = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * factor.view(-1, 1, 1, 1)
    return (images + delta).clamp(0.0, 1.0)


@pytest.mark.parametrize(
    ("norm", "eps", "random_start", "targeted"),
    [
        ("linf", 0.1, True, True),
        ("linf", 0.1, False, False),
        ("l2", 1.0, True, False),
        ("l2", 0.8, False, True),
    ],
)
def test_fixed_step_pgd_is_the_plain_loop_bit_for_bit(
    digits_clf: Classifier,
    digits_batch: tuple[torch.Tensor, torch.Tensor],
    norm: str,
    eps: float,
    random_start: bool,
    targeted: bool,
) -> None:
    images, labels = digits_batch
    goal: Goal = Targeted((labels + 3) % 10) if targeted else Untargeted(labels)
    attack = PGD(eps=eps, norm=norm, steps=15, random_start=random_start, early_stop=False)  # type: ignore[arg-type]
    result = attack(digits_clf, images, goal)
    last = reference_pgd(
        digits_clf,
        images,
        goal,
        eps=eps,
        step_size=attack.step_size,
        steps=15,
        norm=norm,
        seed=0 if random_start else None,
    )
    expected = quantize(attack.round_into_budget(last, images))
    # Images that met the goal before the attack are returned as they are.
    with torch.no_grad():
        met_before = goal.met(digits_clf(images))
    expected[met_before] = images[met_before]
    assert torch.equal(result.adversarial, expected)
    assert (result.steps[~met_before] == 15).all()
    assert (result.gradients[~met_before] == 15).all()
    assert (result.forwards[~met_before] == 17).all()  # + the evaluations before and after


def test_fixed_step_mifgsm_keeps_its_momentum_per_image(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Momentum is state indexed by image: the full-batch path must keep it the same."""
    images, labels = digits_batch
    goal = Targeted((labels + 5) % 10)
    eps, steps, decay = 0.1, 8, 1.0
    result = MIFGSM(eps=eps, steps=steps, decay=decay, early_stop=False)(digits_clf, images, goal)
    x, velocity = images.clone(), torch.zeros_like(images)
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(goal.loss(digits_clf(x)).sum(), x)
        with torch.no_grad():
            size = grad.flatten(1).abs().sum(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            velocity = decay * velocity + grad / size
            x = project(x + (eps / steps) * velocity.sign(), images, eps, "linf")
    attack = MIFGSM(eps=eps, steps=steps)
    assert torch.equal(result.adversarial, quantize(attack.round_into_budget(x, images)))
