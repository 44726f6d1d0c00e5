"""Train the small robust digits CNN that ships with trompe (``digits_robust``).

PGD adversarial training (Madry et al., "Towards deep learning models resistant to adversarial
attacks", ICLR 2018, arXiv:1706.06083) of trompe's digits network on the training split of
scikit-learn's digits (:func:`trompe.models.digits.load_digits`, seed 0, 80 %), at L-inf
``--eps`` (default 32/255), each batch replaced by its PGD examples (``--steps`` steps of
``--step-size``, random start). Seeded: a re-run here gave the same weights bit for bit, and
the same file when saved under the same name (``torch.save`` writes the file's name into the
archive, so ``--out /tmp/x.pt`` gives another SHA-256). Two to eight minutes on two cores.

Usage::

    python scripts/train_robust_digits.py --out /tmp/check/digits_robust.pt  # compare the digest

The file is the network's state dict (float32), read back with ``weights_only=True``; its
SHA-256 is printed, to be pinned in ``trompe/models/registry.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch import nn

from trompe.models.digits import _DigitsNet, load_digits


def pgd(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """L-inf PGD with a random start on inputs in [0, 1] (the network sees (x - 0.5) / 0.5)."""
    delta = (torch.rand(images.shape, generator=generator) * 2 - 1) * eps
    delta = ((images + delta).clamp(0, 1) - images).requires_grad_(True)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net((images + delta - 0.5) / 0.5), labels)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += step_size * grad.sign()
            delta.clamp_(-eps, eps)
            delta.copy_((images + delta).clamp(0, 1) - images)
    return (images + delta).detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--eps", type=float, default=32 / 255)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-size", type=float, default=8 / 255)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = load_digits()
    torch.manual_seed(args.seed)
    net = _DigitsNet()
    generator = torch.Generator().manual_seed(args.seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.epochs)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(data.train_labels), generator=generator)
        for batch in torch.split(order, 64):
            images, labels = data.train_images[batch], data.train_labels[batch]
            # Ramp the budget up over the first fifth of training: PGD training from the
            # start at the full budget can stall at chance on a network this small.
            eps = args.eps * min(1.0, (epoch + 1) / max(1, args.epochs // 5))
            adversarial = pgd(
                net,
                images,
                labels,
                eps=eps,
                steps=args.steps,
                step_size=args.step_size * eps / args.eps,
                generator=generator,
            )
            loss = nn.functional.cross_entropy(net((adversarial - 0.5) / 0.5), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        schedule.step()
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            with torch.no_grad():
                clean = net((data.test_images - 0.5) / 0.5).argmax(1) == data.test_labels
            attacked = pgd(
                net,
                data.test_images,
                data.test_labels,
                eps=args.eps,
                steps=20,
                step_size=args.eps / 4,
                generator=torch.Generator().manual_seed(1),
            )
            with torch.no_grad():
                robust = net((attacked - 0.5) / 0.5).argmax(1) == data.test_labels
            print(
                f"epoch {epoch + 1}: clean {clean.float().mean():.3f}, "
                f"PGD-20 robust {robust.float().mean():.3f}, {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    torch.save(state, args.out)
    print(f"{args.out}: sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
