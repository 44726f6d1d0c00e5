"""Running an evaluation: chunks, records written as it goes, resume, shards, torchrun, merge.

The data set is cut into chunks of ``batch_size`` images (chunk ``k`` holds positions
``k * batch_size`` onwards); a chunk is the unit of work, of seeding and of resume. A shard
``(i, n)`` takes chunks ``i, i + n, ...``. Each chunk's records are appended to the shard's part
file as soon as it is done (see :mod:`trompe.evaluation._store` for the layout), so an
interruption loses at most the chunk under way, and ``resume`` picks up from there with the same
final numbers as an uninterrupted run (every chunk's seeds depend on the chunk alone).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from trompe.errors import InvalidArgumentError, OutputExistsError
from trompe.evaluation import _store, checks, distributed
from trompe.evaluation._store import ChunkRecord, Store
from trompe.evaluation._types import CheckWarning, EvalConfig, EvalProgress, ImageRecord
from trompe.evaluation.cascade import run_chunk
from trompe.evaluation.data import EvalData
from trompe.evaluation.report import EvaluationReport
from trompe.models.classifier import Classifier

__all__ = ["check_shard", "merge", "run_evaluation"]


def run_evaluation(
    model: Classifier,
    data: EvalData,
    config: EvalConfig,
    *,
    out: Path | None = None,
    resume: bool = False,
    force: bool = False,
    shard: tuple[int, int] | None = None,
    save_adversarial: bool = False,
    progress: Callable[[EvalProgress], None] | None = None,
) -> EvaluationReport:
    """Evaluate ``data`` chunk by chunk and return the report.

    With ``out``, the config is written first (``out/config.json``), each finished chunk's
    records are appended to ``out/records/part-<i>-of-<n>.jsonl`` (one JSON line per image,
    flushed and synced) and the summary and figure are written atomically at the end;
    ``resume`` skips the chunks already recorded, after checking the configuration is the same
    (else a one-line error naming the difference). ``shard=(i, n)`` evaluates chunks
    ``i, i + n, ...`` only; under ``torchrun`` (``WORLD_SIZE`` > 1) the shard is the process's
    rank, and rank 0 merges when all are done.

    A shard of a job array (``n`` > 1) writes its part only and returns the report of its own
    images; :func:`merge` makes the whole report once every shard is done. Under ``torchrun``
    the processes exchange their records at the end, so every rank returns the same report of
    the whole data set, and rank 0 alone writes the summary and figure (and calls ``progress``,
    with the images of its own shard).

    Args:
        model: the classifier, on its device.
        data: the data set (:func:`~trompe.evaluation.data.load_data`).
        config: what to run; ``config.data`` describes ``data``.
        out: the output folder, or ``None`` to keep everything in memory.
        resume: continue the evaluation recorded in ``out`` (a folder without one starts anew).
        force: start over in ``out``, replacing trompe's own files there (others are kept).
        shard: ``(i, n)``: evaluate the ``i``-th of ``n`` shards.
        save_adversarial: write the adversarial examples to ``out/adversarial/<budget>/``.
        progress: called after each chunk and before each stage.

    Returns:
        The report (clean and robust accuracy, records, warnings).

    Raises:
        OutputExistsError: ``out`` holds an earlier evaluation and neither ``resume`` nor
            ``force`` was given.
        InvalidArgumentError: a resume of another configuration, a bad shard, ``resume`` with
            ``force``, ``save_adversarial`` without ``out``.
    """
    if resume and force:
        raise InvalidArgumentError(
            "resume and force contradict each other: --resume continues the evaluation in the "
            "output folder, --force starts it over; give one"
        )
    if config.batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be at least 1, got {config.batch_size}")
    if save_adversarial and out is None:
        raise InvalidArgumentError(
            "save_adversarial writes images into the output folder; give out (CLI: --out)"
        )
    if (resume or force) and out is None:
        raise InvalidArgumentError("resume and force apply to an output folder; give out")
    env = distributed.detect()
    if env is not None and shard is not None:
        raise InvalidArgumentError(
            "--shard splits the work between separate jobs, torchrun between its processes; "
            "use one of them"
        )
    if env is not None:
        return _run_distributed(
            model, data, config, env, out, resume, force, save_adversarial, progress
        )
    shard = (0, 1) if shard is None else check_shard(shard)
    store = None if out is None else Store(Path(out), shard)
    labels = _labels(model)
    done = [] if store is None else store.open(config, labels=labels, resume=resume, force=force)
    try:
        chunks = _run_shard(model, data, config, shard, store, done, save_adversarial, progress)
    finally:
        if store is not None:
            store.close()
    report = _report(config, chunks, labels, None if out is None else Path(out))
    if store is not None and shard[1] == 1:
        store.finish(report.summary(), report.figure_png())
    return report


def merge(out: Path, *, force: bool = False) -> EvaluationReport:
    """Merge the part files of a sharded run in ``out`` (all shards, one configuration, every
    chunk once) into the summary and figure.

    Raises:
        InvalidArgumentError: no records, parts of different configurations, chunks missing
            (naming the shards to run) or recorded twice.
        OutputExistsError: ``out`` has a summary already and ``force`` is not given.
    """
    out = Path(out)
    config, labels, parts = _store.read_all(out)
    found: dict[int, ChunkRecord] = {}
    twice: set[int] = set()
    sizes: set[int] = set()
    for part in parts:
        if part.shard is not None:
            sizes.add(part.shard[1])
        for chunk in part.chunks:
            if chunk.index in found:
                twice.add(chunk.index)
            found[chunk.index] = chunk
    if twice:
        raise InvalidArgumentError(
            f"cannot merge '{out}': chunks {_listed(sorted(twice))} are recorded in more than one "
            "part (parts of runs split differently?); remove the stray parts from records/"
        )
    total = _num_chunks(config, found)
    missing = [k for k in range(total) if k not in found]
    if missing:
        n = max(sizes) if len(sizes) == 1 else None
        whose = (
            f" (shards {_listed(sorted({k % n for k in missing}))} of {n} unfinished)"
            if n is not None
            else ""
        )
        raise InvalidArgumentError(
            f"cannot merge '{out}': {len(missing)} of {total} chunks are missing{whose}; run "
            "those shards (with --resume) and merge again"
        )
    summary = out / _store.SUMMARY
    if summary.exists() and not force:
        raise OutputExistsError(
            f"'{summary}' exists already; pass --force to merge again and replace it"
        )
    chunks = [found[k] for k in range(total)]
    report = _report(config, chunks, labels, out)
    Store(out).finish(report.summary(), report.figure_png())
    return report


# -- the work ------------------------------------------------------------------------------------


def _run_shard(
    model: Classifier,
    data: EvalData,
    config: EvalConfig,
    shard: tuple[int, int],
    store: Store | None,
    done: Sequence[ChunkRecord],
    save_adversarial: bool,
    progress: Callable[[EvalProgress], None] | None,
) -> list[ChunkRecord]:
    """Evaluate this shard's chunks that ``done`` lacks; return all of the shard's chunks."""
    batch = config.batch_size
    mine = list(range(shard[0], data.num_chunks(batch), shard[1]))
    owned = set(mine)
    finished = {c.index: c for c in done if c.index in owned}
    tally = _Tally(
        total=sum(min(batch, len(data) - k * batch) for k in mine), budgets=len(config.eps)
    )
    for earlier in finished.values():
        tally.add(earlier.records)
    if progress is not None:
        progress(tally.progress(""))

    def on_stage(text: str) -> None:
        if progress is not None:
            progress(tally.progress(text))

    for index in mine:
        if index in finished:
            continue
        started = time.perf_counter()
        chunk = data.chunk(index, batch)
        warnings: list[CheckWarning] = []
        check_here = index == 0 and config.checks and len(chunk) > 0
        if check_here:
            warnings += checks.probe_model(model, chunk.images, chunk.labels, config)
        outcome = run_chunk(
            model, chunk, config, keep_adversarial=save_adversarial, on_stage=on_stage
        )
        if check_here:
            warnings += checks.stress(model, chunk.images, chunk.labels, outcome.records, config)
        record = ChunkRecord(index, list(outcome.records), warnings, time.perf_counter() - started)
        if store is not None:
            if save_adversarial:
                store.save_adversarial(outcome.records, outcome.adversarial, config)
            store.append_chunk(record)
        finished[index] = record
        tally.add(record.records)
        if progress is not None:
            progress(tally.progress(""))
    return [finished[k] for k in mine]


def _run_distributed(
    model: Classifier,
    data: EvalData,
    config: EvalConfig,
    env: distributed.DistributedEnv,
    out: Path | None,
    resume: bool,
    force: bool,
    save_adversarial: bool,
    progress: Callable[[EvalProgress], None] | None,
) -> EvaluationReport:
    shard = (env.rank, env.world)
    device = distributed.prepare_device(model, env)
    labels = _labels(model)
    with distributed.process_group(env, device) as group:
        store = None if out is None else Store(Path(out), shard)
        done: list[ChunkRecord] = []
        # Rank 0 clears or checks the folder before the others join it (a shared file system).
        if store is not None and env.rank == 0:
            done = store.open(config, labels=labels, resume=resume, force=force, whole=True)
        group.barrier()
        if store is not None and env.rank != 0:
            done = store.open(config, labels=labels, resume=resume, force=False, join=True)
        # One progress display for the job: the first process's, on its own shard.
        shown = progress if env.rank == 0 else None
        try:
            mine = _run_shard(model, data, config, shard, store, done, save_adversarial, shown)
        finally:
            if store is not None:
                store.close()
        gathered = group.all_gather_json([_chunk_json(c) for c in mine])
        chunks = sorted(
            (_chunk_from_json(c) for part in gathered for c in part), key=lambda c: c.index
        )
        report = _report(config, chunks, labels, None if out is None else Path(out))
        if store is not None and env.rank == 0:
            store.finish(report.summary(), report.figure_png())
        group.barrier()
    return report


def _report(
    config: EvalConfig,
    chunks: Sequence[ChunkRecord],
    labels: Sequence[str] | None,
    out: Path | None,
) -> EvaluationReport:
    ordered = sorted(chunks, key=lambda c: c.index)
    records = [r for c in ordered for r in c.records]
    warnings = [w for c in ordered for w in c.warnings]
    if config.checks:
        warnings += checks.from_records(records, config)
    return EvaluationReport.from_records(
        config,
        records,
        warnings=warnings,
        seconds=sum(c.seconds for c in ordered),
        labels=labels,
        out_dir=out,
    )


class _Tally:
    """The running numbers of the progress callback."""

    def __init__(self, total: int, budgets: int) -> None:
        self.total = total
        self.done = 0
        self.correct = 0
        self.robust = [0] * budgets
        self.started = time.perf_counter()

    def add(self, records: Sequence[ImageRecord]) -> None:
        for record in records:
            self.done += 1
            self.correct += record.correct
            for k, outcome in enumerate(record.budgets):
                self.robust[k] += outcome.robust

    def progress(self, stage: str) -> EvalProgress:
        return EvalProgress(
            done=self.done,
            total=self.total,
            correct=self.correct,
            robust=tuple(self.robust),
            seconds=time.perf_counter() - self.started,
            stage=stage,
        )


# -- small helpers -------------------------------------------------------------------------------


def check_shard(shard: object) -> tuple[int, int]:
    """``shard`` as ``(i, n)``: two whole numbers with ``0 <= i < n``; else a one-line
    :class:`InvalidArgumentError` (checked by :func:`trompe.evaluate` before any work)."""
    if (
        not isinstance(shard, tuple | list)
        or len(shard) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in shard)
    ):
        raise InvalidArgumentError(f"shard must be (i, n), two whole numbers, got {shard!r}")
    i, n = int(shard[0]), int(shard[1])
    if n < 1 or not 0 <= i < n:
        raise InvalidArgumentError(
            f"shard {i}/{n} does not exist; shards are numbered 0 to n-1 (--shard 0/{max(n, 1)})"
        )
    return i, n


def _labels(model: Classifier) -> list[str] | None:
    try:
        return [str(name) for name in model.labels]
    except Exception:  # a model without class names: the figure numbers the classes
        return None


def _num_chunks(config: EvalConfig, found: dict[int, ChunkRecord]) -> int:
    n = config.data.get("n")
    if isinstance(n, int) and n >= 0:
        return math.ceil(n / config.batch_size)
    return max(found) + 1 if found else 0


def _listed(values: Sequence[int], limit: int = 8) -> str:
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _chunk_json(chunk: ChunkRecord) -> dict[str, object]:
    return {
        "index": chunk.index,
        "records": [r.to_json() for r in chunk.records],
        "warnings": [w.to_json() for w in chunk.warnings],
        "seconds": chunk.seconds,
    }


def _chunk_from_json(data: dict[str, object]) -> ChunkRecord:
    records = data["records"]
    warnings = data["warnings"]
    assert isinstance(records, list) and isinstance(warnings, list)
    return ChunkRecord(
        int(str(data["index"])),
        [ImageRecord.from_json(r) for r in records],
        [CheckWarning.from_json(w) for w in warnings],
        float(str(data["seconds"])),
    )
