"""Data-parallel evaluation under ``torchrun``: one shard per process, records gathered at the end.

``torchrun --nproc-per-node N -m trompe evaluate ...`` starts N processes with ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` in their environment. :func:`detect` reads them;
:func:`process_group` joins the group (gloo on the CPU, NCCL when the model is on a GPU, each
process then on ``cuda:LOCAL_RANK``), and :meth:`Group.all_gather_json` exchanges each shard's
records as JSON bytes in tensors (no pickle), so that every process ends with all the records
and the same report, and rank 0 alone writes the summary and figure.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from trompe.errors import InvalidArgumentError
from trompe.models.classifier import Classifier

__all__ = ["DistributedEnv", "Group", "detect", "prepare_device", "process_group"]

#: How long a process waits for the others at a collective: shards are even, but one may hold
#: the largest images or the slowest chunk; a process that died ends the job through torchrun.
TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process stands in a ``torchrun`` job."""

    rank: int
    world: int
    local_rank: int


def detect() -> DistributedEnv | None:
    """The ``torchrun`` job this process belongs to, or ``None`` when it runs alone.

    Raises:
        InvalidArgumentError: ``WORLD_SIZE``, ``RANK`` or ``LOCAL_RANK`` are not integers in
            range.
    """
    world_text = os.environ.get("WORLD_SIZE", "").strip()
    if not world_text:
        return None
    try:
        world = int(world_text)
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise InvalidArgumentError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them); "
            "unset them to run in one process"
        ) from None
    if world <= 1:
        return None
    if not 0 <= rank < world or local_rank < 0:
        raise InvalidArgumentError(
            f"RANK={rank} is outside WORLD_SIZE={world}; start the processes with torchrun"
        )
    return DistributedEnv(rank, world, local_rank)


def prepare_device(model: Classifier, env: DistributedEnv) -> torch.device:
    """Put a GPU model on this process's GPU (``cuda:LOCAL_RANK``); a CPU model stays."""
    device = model.device
    if device.type != "cuda":
        return device
    if env.local_rank >= torch.cuda.device_count():
        raise InvalidArgumentError(
            f"LOCAL_RANK={env.local_rank} but this machine has {torch.cuda.device_count()} GPUs; "
            "start at most one process per GPU (torchrun --nproc-per-node)"
        )
    device = torch.device("cuda", env.local_rank)
    torch.cuda.set_device(device)
    model.to(device)
    return device


class Group:
    """The collectives an evaluation needs, on the default process group."""

    def __init__(self, env: DistributedEnv, device: torch.device) -> None:
        self.env = env
        # NCCL exchanges CUDA tensors only; gloo takes CPU tensors.
        self.device = device if device.type == "cuda" else torch.device("cpu")

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def all_gather_json(self, payload: Any) -> list[Any]:
        """Every process's ``payload`` (JSON-ready), in rank order, on every process."""
        import torch.distributed as dist

        data = json.dumps(payload, allow_nan=False).encode()
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.env.world)]
        dist.all_gather(sizes, size)
        lengths = [int(s.item()) for s in sizes]
        padded = torch.zeros(max(lengths), dtype=torch.uint8, device=self.device)
        if data:
            padded[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        gathered = [torch.zeros_like(padded) for _ in range(self.env.world)]
        dist.all_gather(gathered, padded)
        return [
            json.loads(g[:n].cpu().numpy().tobytes().decode())
            for g, n in zip(gathered, lengths, strict=True)
        ]


@contextlib.contextmanager
def process_group(env: DistributedEnv, device: torch.device) -> Iterator[Group]:
    """Join the job's process group (``env://``: ``MASTER_ADDR``, ``MASTER_PORT``) for the
    evaluation, and leave it at the end; a group the caller made already is used and kept."""
    import torch.distributed as dist

    if not dist.is_available():
        raise InvalidArgumentError(
            "this PyTorch build has no torch.distributed; run in one process or use --shard i/n"
        )
    owned = not dist.is_initialized()
    if owned:
        if device.type == "cuda":
            dist.init_process_group(
                backend="nccl",
                rank=env.rank,
                world_size=env.world,
                timeout=TIMEOUT,
                device_id=device,
            )
        else:
            dist.init_process_group(
                backend="gloo", rank=env.rank, world_size=env.world, timeout=TIMEOUT
            )
    try:
        yield Group(env, device)
    finally:
        if owned:
            dist.destroy_process_group()
