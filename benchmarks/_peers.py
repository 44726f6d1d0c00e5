"""The peer libraries' runners for the benchmark scripts: torchattacks, Foolbox 3 and ART.

Each function builds a runner of one peer attack with the settings a script gives; it imports
its library when called, so that a missing peer raises ImportError there (a row that says "not
installed": :func:`_harness.setup_row`). A runner returns the peer's output as a float tensor on
the images' device, scored afterwards by the script like trompe's own. The peers' query counts
come from :class:`Counting`, a wrapper around the network.

Imported as a top-level module, like ``_harness`` (see its docstring).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from _harness import package_version
from torch import nn

import trompe

# ART logs every attack's progress at INFO.
logging.getLogger("art").setLevel(logging.WARNING)


# -- shared ---------------------------------------------------------------------------------------


class Counting(nn.Module):
    """Wraps a network and counts the images it is given (the peers' queries).

    ``no_grad``: run the network without autograd (for peers that read only its outputs).
    ``float32``: cast the batch to float32 first (ART hands float64 batches from its NumPy
    arithmetic; the networks are float32).
    """

    def __init__(self, net: nn.Module, *, no_grad: bool = False, float32: bool = False) -> None:
        super().__init__()
        self.net = net
        self.no_grad = no_grad
        self.float32 = float32
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += int(x.shape[0])
        if self.float32:
            x = x.float()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.no_grad):
            out: torch.Tensor = self.net(x)
        return out


def counted(clf: trompe.Classifier, access: str) -> tuple[trompe.Classifier, Counting]:
    """``clf`` (its preprocessing, a new access level) with its network behind a counter."""
    other = clf.with_access(access)  # type: ignore[arg-type]
    other._modules = dict(other._modules)  # not the original's: the network is replaced
    counter = Counting(clf.model)
    other.model = counter
    return other, counter


def seed_global(seed: int) -> None:
    """Reseed torch's and NumPy's global generators, where the peers draw their noise."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def art_classifier(
    model: nn.Module, input_shape: Sequence[int], classes: int, device: torch.device
) -> Any:
    """ART's ``PyTorchClassifier`` around ``model``: inputs in [0, 1], cross-entropy loss."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def art_estimator(model: nn.Module, images: torch.Tensor, classes: int) -> Any:
    """:func:`art_classifier` for a batch like ``images``."""
    return art_classifier(model, images.shape[1:], classes, images.device)


def art_generate(
    attack: Any,
    images: torch.Tensor,
    y: torch.Tensor | np.ndarray | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """ART works on NumPy arrays (the conversions are part of its cost); ``seed``: NumPy's
    global state, where ART draws its noise."""
    if seed is not None:
        np.random.seed(seed)
    labels = y.cpu().numpy() if isinstance(y, torch.Tensor) else y
    out = attack.generate(x=images.cpu().numpy(), y=labels)
    return torch.from_numpy(out).to(images.device)


def foolbox_model(model: nn.Module, device: torch.device | str | None = None) -> Any:
    """Foolbox's ``PyTorchModel``: inputs in [0, 1] (a Classifier normalises inside)."""
    import foolbox as fb

    return fb.PyTorchModel(model, bounds=(0, 1), device=device)


def foolbox_criterion(classes: torch.Tensor, targeted: bool) -> Any:
    import foolbox as fb

    if targeted:
        return fb.criteria.TargetedMisclassification(classes)
    return fb.criteria.Misclassification(classes)


def torchattacks_targeted(attack: Any, targeted: bool) -> Any:
    """The attack, told to take its labels as targets when ``targeted``."""
    if targeted:
        attack.set_mode_targeted_by_label(quiet=True)
    return attack


def has_attack(package: str, module: str, *words: str) -> str:
    """``"package version: has [...]"`` or ``"... : no <words> attack"``: whether a peer's
    module has an attack whose name holds one of ``words``."""
    try:
        found = importlib.import_module(module)
    except ImportError:
        return f"{package} not installed"
    names = [n for n in dir(found) if any(w in n.lower() for w in words)]
    text = f"has {names}" if names else f"no {words[0].upper()} attack"
    return f"{package} {package_version(package)}: {text}"


# -- fixed budget: PGD, APGD ----------------------------------------------------------------------

# Runners of (images, classes, steps) -> adversarial images.
Stepped = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def torchattacks_pgd(clf: nn.Module, eps: float, step: float, seed: int) -> Stepped:
    """Targeted L-inf PGD with a random start."""
    import torchattacks

    def run(images: torch.Tensor, targets: torch.Tensor, steps: int) -> torch.Tensor:
        seed_global(seed)
        attack = torchattacks.PGD(clf, eps=eps, alpha=step, steps=steps, random_start=True)
        return torchattacks_targeted(attack, True)(images, targets)  # type: ignore[no-any-return]

    return run


def foolbox_pgd(
    clf: nn.Module, eps: float, step: float, seed: int, device: torch.device
) -> Stepped:
    """Targeted ``LinfPGD`` with a random start."""
    import foolbox as fb

    model = foolbox_model(clf, device)

    def run(images: torch.Tensor, targets: torch.Tensor, steps: int) -> torch.Tensor:
        seed_global(seed)
        attack = fb.attacks.LinfPGD(abs_stepsize=step, steps=steps, random_start=True)
        _, clipped, _ = attack(model, images, foolbox_criterion(targets, True), epsilons=eps)
        return clipped  # type: ignore[no-any-return]

    return run


def art_pgd(
    clf: trompe.Classifier, eps: float, step: float, seed: int, batch: int, device: torch.device
) -> Stepped:
    """Targeted ``ProjectedGradientDescentPyTorch``, one uniform random start."""
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    estimator = art_classifier(clf, (3, *(clf.input_size or (224, 224))), clf.num_classes, device)

    def run(images: torch.Tensor, targets: torch.Tensor, steps: int) -> torch.Tensor:
        seed_global(seed)
        attack = ProjectedGradientDescentPyTorch(
            estimator,
            norm=np.inf,
            eps=eps,
            eps_step=step,
            max_iter=steps,
            targeted=True,
            num_random_init=1,
            batch_size=batch,
            verbose=False,
        )
        return art_generate(attack, images, targets)

    return run


def torchattacks_apgd(
    clf: nn.Module, kind: str, norm: str, eps: float, restarts: int, targets: int, seed: int
) -> Stepped:
    """``APGD(loss="ce"|"dlr")`` or ``APGDT`` over ``targets`` classes, untargeted."""
    import torchattacks

    def run(images: torch.Tensor, labels: torch.Tensor, steps: int) -> torch.Tensor:
        common = {
            "norm": "Linf" if norm == "linf" else "L2",
            "eps": eps,
            "steps": steps,
            "n_restarts": restarts,
            "seed": seed,
        }
        if kind == "apgd-t":  # torchattacks tries n_classes - 1 target classes
            attack = torchattacks.APGDT(clf, n_classes=targets + 1, **common)
        else:
            attack = torchattacks.APGD(clf, loss=kind.removeprefix("apgd-"), **common)
        return attack(images, labels)  # type: ignore[no-any-return]

    return run


def art_apgd(
    clf: trompe.Classifier,
    kind: str,
    norm: str,
    eps: float,
    restarts: int,
    batch: int,
    seed: int,
    device: torch.device,
) -> Stepped:
    """``AutoProjectedGradientDescent``, cross-entropy or DLR loss, untargeted."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    estimator = art_classifier(clf, (3, *(clf.input_size or (8, 8))), clf.num_classes, device)

    def run(images: torch.Tensor, labels: torch.Tensor, steps: int) -> torch.Tensor:
        attack = AutoProjectedGradientDescent(
            estimator,
            norm=np.inf if norm == "linf" else 2,
            eps=eps,
            eps_step=2 * eps,  # ART's eps_step is APGD's initial step: 2 eps in the paper
            max_iter=steps,
            targeted=False,
            nb_random_init=restarts,
            batch_size=batch,
            loss_type="cross_entropy" if kind == "apgd-ce" else "difference_logits_ratio",
            verbose=False,
        )
        return art_generate(attack, images, labels, seed=seed)

    return run


# -- minimum norm: FAB, DeepFool, DDN, CW, EAD ----------------------------------------------------

# Runners of (images, classes) -> adversarial images.
Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def torchattacks_fab(
    clf: nn.Module, norm: str, steps: int, multi: bool = False
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``FAB`` (its ``eps`` large: it only sizes random restarts, off here); with targets, the
    targeted mode; ``multi``: FAB-T over 9 target classes."""
    import torchattacks

    attack = torchattacks.FAB(
        clf,
        norm={"linf": "Linf", "l2": "L2"}[norm],
        eps={"linf": 1.0, "l2": 100.0}[norm],  # large: torchattacks drops results above eps
        steps=steps,
        n_restarts=1,
        multi_targeted=multi,
        n_classes=10,
        seed=0,
    )

    def run(
        images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        with contextlib.redirect_stdout(sys.stderr):  # it prints the mode change
            if targets is None:
                attack.set_mode_default()
            else:  # it takes the true labels and computes the targets with a function
                attack.set_mode_targeted_by_function(lambda _images, _labels: targets)
        return attack(images, labels)  # type: ignore[no-any-return]

    return run


def torchattacks_deepfool(clf: nn.Module, steps: int, overshoot: float) -> Runner:
    import torchattacks

    attack = torchattacks.DeepFool(clf, steps=steps, overshoot=overshoot)
    return attack  # type: ignore[no-any-return]


def foolbox_runner(
    model: nn.Module,
    attack: Any,
    device: torch.device | None,
    *,
    targeted: bool = False,
    placeholder: bool = False,
) -> Runner:
    """A minimum-norm Foolbox attack (``epsilons=None``). ``placeholder``: where Foolbox's CW and
    EAD find nothing they return an all-zero image, not an attack result (a black image that the
    model happens to misclassify would score as a success): it goes back to the original image
    and scores as a failure."""
    fmodel = foolbox_model(model, device)

    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        raw, clipped, _ = attack(
            fmodel, images, foolbox_criterion(classes, targeted), epsilons=None
        )
        if not placeholder:
            return clipped  # type: ignore[no-any-return]
        empty = (raw.flatten(1) == 0).all(dim=1) & (images.flatten(1) != 0).any(dim=1)
        return torch.where(empty.view(-1, 1, 1, 1), images, raw)

    return run


def foolbox_deepfool(
    clf: nn.Module, norm: str, steps: int, candidates: int, overshoot: float, device: torch.device
) -> Runner:
    import foolbox as fb

    cls = fb.attacks.L2DeepFoolAttack if norm == "l2" else fb.attacks.LinfDeepFoolAttack
    return foolbox_runner(clf, cls(steps=steps, candidates=candidates, overshoot=overshoot), device)


def foolbox_ddn(
    clf: nn.Module, init_epsilon: float, steps: int, gamma: float, device: torch.device
) -> Runner:
    import foolbox as fb

    attack = fb.attacks.DDNAttack(init_epsilon=init_epsilon, steps=steps, gamma=gamma)
    return foolbox_runner(clf, attack, device)


def art_deepfool(
    clf: trompe.Classifier, steps: int, overshoot: float, candidates: int, batch: int
) -> Runner:
    """ART ``DeepFool`` (it attacks the model's own predictions: the classes are not used)."""
    from art.attacks.evasion import DeepFool

    state: dict[str, Any] = {}

    def run(images: torch.Tensor, _classes: torch.Tensor) -> torch.Tensor:
        if "attack" not in state:
            estimator = art_estimator(clf, images, clf.num_classes)
            state["attack"] = DeepFool(
                estimator,
                max_iter=steps,
                epsilon=overshoot,
                nb_grads=candidates,
                batch_size=batch,
                verbose=False,
            )
        return art_generate(state["attack"], images)

    return run


def torchattacks_cw(clf: nn.Module, steps: int, targeted: bool) -> Runner:
    """``CW`` with c = 1, kappa 0, learning rate 0.01 (no binary search)."""
    import torchattacks

    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        attack = torchattacks.CW(clf, c=1, kappa=0, steps=steps, lr=0.01)
        return torchattacks_targeted(attack, targeted)(images, classes)  # type: ignore[no-any-return]

    return run


def torchattacks_ead(clf: nn.Module, steps: int, runs: int, targeted: bool) -> Runner:
    import torchattacks

    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        attack = torchattacks.EADL1(
            clf,
            kappa=0,
            lr=0.01,
            binary_search_steps=runs,
            max_iterations=steps,
            abort_early=True,
            initial_const=1e-3,
            beta=1e-3,
        )
        return torchattacks_targeted(attack, targeted)(images, classes)  # type: ignore[no-any-return]

    return run


def foolbox_cw_ead(
    clf: nn.Module, kind: str, steps: int, runs: int, targeted: bool, device: torch.device
) -> Runner:
    """``L2CarliniWagnerAttack`` (``kind="cw"``) or ``EADAttack`` (``"ead"``, L1 decision
    rule), kappa 0, learning rate 0.01, initial constant 1e-3."""
    import foolbox as fb

    common = {"binary_search_steps": runs, "steps": steps, "confidence": 0, "initial_const": 1e-3}
    if kind == "cw":
        attack = fb.attacks.L2CarliniWagnerAttack(stepsize=0.01, abort_early=True, **common)
    else:
        attack = fb.attacks.EADAttack(
            initial_stepsize=0.01,
            regularization=1e-3,
            decision_rule="L1",
            abort_early=True,
            **common,
        )
    return foolbox_runner(clf, attack, device, targeted=targeted, placeholder=True)


def art_cw_ead(
    clf: trompe.Classifier, kind: str, steps: int, runs: int, targeted: bool, batch: int
) -> Runner:
    """``CarliniL2Method`` (``kind="cw"``) or ``ElasticNet`` (``"ead"``, L1 decision rule),
    kappa 0, learning rate 0.01."""
    from art.attacks.evasion import CarliniL2Method, ElasticNet

    cls = CarliniL2Method if kind == "cw" else ElasticNet
    own: dict[str, Any] = {"initial_const": 1e-2}
    if kind == "ead":
        own = {"initial_const": 1e-3, "beta": 1e-3, "decision_rule": "L1"}

    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        attack = cls(
            art_estimator(clf, images, clf.num_classes),
            confidence=0.0,
            targeted=targeted,
            learning_rate=0.01,
            binary_search_steps=runs,
            max_iter=steps,
            batch_size=batch,
            verbose=False,
            **own,
        )
        return art_generate(attack, images, classes)

    return run


# -- sparse: JSMA, SparseFool, Pointwise, one-pixel -----------------------------------------------


def torchattacks_jsma(clf: nn.Module, gamma: float, targeted: bool) -> Runner:
    """``JSMA`` with theta = 1; untargeted, it aims at class label + 1 by itself."""
    import torchattacks

    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        attack = torchattacks.JSMA(clf, theta=1.0, gamma=gamma)
        return torchattacks_targeted(attack, targeted)(images, classes)  # type: ignore[no-any-return]

    return run


def art_jsma(clf: nn.Module, gamma: float) -> Runner:
    """``SaliencyMapMethod`` with theta = 1, aimed at the given classes."""
    from art.attacks.evasion import SaliencyMapMethod

    def run(images: torch.Tensor, aims: torch.Tensor) -> torch.Tensor:
        attack = SaliencyMapMethod(
            art_estimator(clf, images, 10),
            theta=1.0,
            gamma=gamma,
            batch_size=len(images),
            verbose=False,
        )
        return art_generate(attack, images, aims)

    return run


def torchattacks_sparsefool(clf: nn.Module) -> Runner:
    """``SparseFool`` (built at each run: its set-up draws from torch's global generator, as
    Foolbox's Pointwise start does)."""
    import torchattacks

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        attack = torchattacks.SparseFool(clf, steps=10, lam=3, overshoot=0.02)
        return attack(images, labels)  # type: ignore[no-any-return]

    return run


def foolbox_pointwise(clf: nn.Module) -> Runner:
    """``PointwiseAttack`` from salt-and-pepper noise (torch's global generator)."""
    import foolbox as fb

    return lambda images, labels: foolbox_runner(clf, fb.attacks.PointwiseAttack(), None)(
        images, labels
    )


def torchattacks_onepixel(
    clf: nn.Module, pixels: int, generations: int
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]]:
    """``OnePixel`` with a population of 400; returns the output and the queries per image."""
    import torchattacks

    def run(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        counter = Counting(clf)
        attack = torchattacks.OnePixel(counter, pixels=pixels, steps=generations, popsize=400)
        return attack(images, labels), counter.images / len(images)

    return run


def art_pixel(
    clf: nn.Module, pixels: int, generations: int
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]]:
    """``PixelAttack`` (differential evolution); returns the output and the queries per image."""
    from art.attacks.evasion import PixelAttack

    def run(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        counter = Counting(clf)
        estimator = art_estimator(counter, images, 10)
        attack = PixelAttack(estimator, th=pixels, es=1, max_iter=generations, verbose=False)
        before = counter.images
        out = art_generate(attack, images, labels)
        return out, (counter.images - before) / len(images)

    return run


# -- score-based: Square, SimBA -------------------------------------------------------------------


def torchattacks_square(
    clf: nn.Module, norm: str, eps: float, queries: int
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]:
    """``Square`` with the reference's settings; returns the output and its per-image query
    counts (from its ``attack_single_run``)."""
    import torchattacks

    def run(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        attack = torchattacks.Square(
            clf,
            norm="Linf" if norm == "linf" else "L2",
            eps=eps,
            n_queries=queries,
            n_restarts=1,
            p_init=0.8,
            loss="margin",
            resc_schedule=True,
            seed=0,
        )
        reported: list[torch.Tensor] = []
        single_run = attack.attack_single_run

        def recorded(x: torch.Tensor, y: torch.Tensor) -> Any:
            counts, adversarial = single_run(x, y)
            reported.append(counts)
            return counts, adversarial

        attack.attack_single_run = recorded
        adversarial = attack(images, labels)
        return adversarial, reported[0].long().cpu() if len(reported) == 1 else None

    return run


def art_square(clf: trompe.Classifier, norm: str, eps: float, queries: int) -> Runner:
    from art.attacks.evasion import SquareAttack

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        estimator = art_estimator(clf, images, clf.num_classes)
        np.random.seed(0)  # before the attack is built, as its set-up may draw
        attack = SquareAttack(
            estimator,
            norm=np.inf if norm == "linf" else 2,
            max_iter=queries,
            eps=eps,
            p_init=0.8,
            nb_restarts=1,
            batch_size=len(images),
            verbose=False,
        )
        return art_generate(attack, images, labels)

    return run


def art_simba(
    clf: trompe.Classifier, counter: Counting, step: float, freq: int, stride: int, queries: int
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``SimBA`` (DCT) one image at a time (as it works anyway), on the probabilities it insists
    on; returns the output and the per-image query counts that ``counter`` saw."""
    from art.attacks.evasion import SimBA

    def run(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        estimator = art_estimator(nn.Sequential(clf, nn.Softmax(dim=1)), images, clf.num_classes)
        np.random.seed(0)
        attack = SimBA(
            estimator,
            attack="dct",
            max_iter=max(1, queries // 2),  # two queries per step, always
            order="random",  # not used by its DCT attack (always low frequencies first)
            epsilon=step,
            freq_dim=freq,
            stride=stride,
            targeted=False,
            verbose=False,
        )
        outputs, counts = [], []
        onehot = np.eye(clf.num_classes, dtype=np.float32)[labels.cpu().numpy()]
        for i in range(len(images)):
            before = counter.images
            outputs.append(art_generate(attack, images[i : i + 1], onehot[i : i + 1]))
            counts.append(counter.images - before)
        return torch.cat(outputs), torch.tensor(counts)

    return run


# -- decision-based: HopSkipJump, Boundary --------------------------------------------------------

# Runners of a number of iterations -> (adversarial images, mean queries per image).
Iterated = Callable[[int], tuple[torch.Tensor, float]]


def hsj_cost(iteration: int) -> float:
    """Probes of HopSkipJump's gradient estimate at ``iteration`` (the peers' defaults)."""
    return min(int(100 * math.sqrt(iteration)), 10_000)


def _decision(clf: nn.Module) -> Counting:
    """The network, counting: the peers read its decisions only (no autograd, float32)."""
    return Counting(clf, no_grad=True, float32=True).eval()


def foolbox_decision(
    clf: trompe.Classifier, images: torch.Tensor, labels: torch.Tensor, attack: str, norm: str
) -> Iterated:
    """Foolbox ``HopSkipJumpAttack`` (``constraint=norm``) or ``BoundaryAttack``."""
    import foolbox as fb

    counter = _decision(clf)
    model = foolbox_model(counter, images.device)
    criterion = fb.criteria.Misclassification(labels)

    def run(steps: int) -> tuple[torch.Tensor, float]:
        counter.images = 0
        torch.manual_seed(0)  # Foolbox draws its noise from torch's global generator
        if attack == "hsj":
            peer = fb.attacks.HopSkipJumpAttack(steps=steps, constraint=norm)
        else:
            peer = fb.attacks.BoundaryAttack(steps=steps)
        adversarial = peer.run(model, images, criterion)
        return adversarial.detach(), counter.images / len(images)

    return run


def art_decision(clf: trompe.Classifier, images: torch.Tensor, attack: str, norm: str) -> Iterated:
    """ART ``HopSkipJump`` or ``BoundaryAttack``, untargeted."""
    from art.attacks.evasion import BoundaryAttack, HopSkipJump

    counter = _decision(clf)
    estimator = art_estimator(counter, images, clf.num_classes)

    def run(steps: int) -> tuple[torch.Tensor, float]:
        counter.images = 0
        if attack == "hsj":
            peer = HopSkipJump(
                estimator,
                targeted=False,
                norm=2 if norm == "l2" else np.inf,
                max_iter=steps,
                verbose=False,
            )
        else:
            peer = BoundaryAttack(estimator, targeted=False, max_iter=steps, verbose=False)
        adversarial = art_generate(peer, images, seed=0)
        return adversarial, counter.images / len(images)

    return run


# -- whole evaluations: AutoAttack (official), torchattacks' AutoAttack ---------------------------


class CallCounting(Counting):
    """:class:`Counting` that also counts the images whose output a backward pass went through
    (``gradients``: a hook on the output, so a forward with autograd on but never
    differentiated is not counted)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net)
        self.gradients = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if out.requires_grad:
            size = int(x.shape[0])

            def seen(grad: torch.Tensor) -> None:
                self.gradients += size

            out.register_hook(seen)  # type: ignore[no-untyped-call]
        return out

    def reset(self) -> tuple[int, int]:
        """The counts so far, then zero."""
        counts = (self.images, self.gradients)
        self.images = self.gradients = 0
        return counts


#: AutoAttack's attack attributes and the names its log gives them.
AUTOATTACK_STAGES = {
    "apgd": "apgd-ce",
    "apgd_targeted": "apgd-t",
    "fab": "fab-t",
    "square": "square",
}


def autoattack_standard(
    net: nn.Module, norm: str, eps: float, batch: int, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, list[tuple[str, Any, Any]], str]]:
    """The official AutoAttack (``fra31/auto-attack``), ``version="standard"``, seed 0; a run
    returns its output, what each stage was given and returned (stage, inputs, outputs) and its
    log (what it prints)."""
    import io

    from autoattack import AutoAttack

    def run(
        images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[str, Any, Any]], str]:
        attack = AutoAttack(
            net,
            norm="Linf" if norm == "linf" else "L2",
            eps=eps,
            version="standard",
            seed=0,
            device=str(device),
        )
        calls: list[tuple[str, Any, Any]] = []
        for attribute, stage in AUTOATTACK_STAGES.items():
            inner = getattr(attack, attribute)
            perturb = inner.perturb

            def recorded(x: Any, y: Any, *a: Any, _p: Any = perturb, _s: str = stage) -> Any:
                out = _p(x, y, *a)
                calls.append((_s, x.detach().cpu(), out.detach().cpu()))
                return out

            inner.perturb = recorded
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            out = attack.run_standard_evaluation(images, labels, bs=batch)
        return out, calls, log.getvalue()

    return run


def torchattacks_autoattack(
    net: nn.Module, norm: str, eps: float, classes: int
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """torchattacks' ``AutoAttack``, ``version="standard"``, seed 0."""
    import torchattacks

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        attack = torchattacks.AutoAttack(
            net,
            norm="Linf" if norm == "linf" else "L2",
            eps=eps,
            version="standard",
            n_classes=classes,
            seed=0,
        )
        out: torch.Tensor = attack(images, labels)
        return out

    return run
