"""An evaluation's files on disk: the configuration, append-only records, summary and figure.

Layout of an output folder::

    out/config.json                     the EvalConfig (and trompe's version), written first
    out/records/part-<i>-of-<n>.jsonl   one part per shard (``part-0-of-1`` for one process)
    out/summary.json                    the report's summary, written last
    out/figure.png                      the report's figure
    out/adversarial/<budget>/<position>_<id>.png   with ``save_adversarial``

A part file is JSON lines, appended one chunk at a time (the chunk's lines in one write, then
flushed and synced): a header line ``{"header": {...}}`` with the configuration; then, per
chunk, one line per image (:meth:`ImageRecord.to_json`, recognised by its ``"position"`` key),
the chunk's check warnings as ``{"checks": [...], "chunk": k}`` when it has any, and a closing
line ``{"done": k, "images": m, "seconds": s}``. A chunk counts only once its closing line is
there, so a process killed mid-write (a torn last line, a chunk half written) loses that chunk
only; a resume cuts the file back to the last closed chunk before appending.

Only files of these names are trompe's: ``force`` removes those and leaves anything else in the
folder alone.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from trompe._files import (
    TEMPORARY_PATTERN,
    all_or_nothing,
    move_into_place,
    prepare_directory,
    remove_stale_temporaries,
    short_reason,
    signals_deferred,
    stage,
)
from trompe._version import __version__
from trompe.errors import ImageError, InvalidArgumentError, OutputExistsError
from trompe.evaluation._types import CheckWarning, EvalConfig, ImageRecord
from trompe.units import budget_from_unit

__all__ = [
    "ChunkRecord",
    "PartFile",
    "Store",
    "adversarial_name",
    "budget_folder",
    "read_part",
]

CONFIG = "config.json"
SUMMARY = "summary.json"
FIGURE = "figure.png"
RECORDS = "records"
ADVERSARIAL = "adversarial"
PART_PATTERN = re.compile(r"^part-(?P<i>[0-9]+)-of-(?P<n>[0-9]+)\.jsonl$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def part_name(shard: tuple[int, int]) -> str:
    """The file name of a shard's records: ``part-<i>-of-<n>.jsonl``."""
    return f"part-{shard[0]}-of-{shard[1]}.jsonl"


def budget_folder(eps: float, norm: str) -> str:
    """A folder name for one budget: ``linf-8`` (levels out of 255), ``l2-127.5``."""
    levels = f"{round(budget_from_unit(eps, norm), 3):g}"
    return f"{norm}-{levels}"


def adversarial_name(position: int, image_id: str) -> str:
    """A safe file name for an image's adversarial example: its position (unique in the data
    set) and its id with every character outside ``[A-Za-z0-9._-]`` replaced, so that an id
    with slashes or ``..`` can never leave the folder."""
    slug = _SAFE.sub("_", image_id).strip("._-")[:80]
    return f"{position:06d}_{slug}.png" if slug else f"{position:06d}.png"


def normalised(config: EvalConfig) -> EvalConfig:
    """``config`` as it reads back from JSON (tuples become lists), for comparisons."""
    return EvalConfig.from_dict(json.loads(json.dumps(config.to_dict())))


def config_mismatch(found: EvalConfig, wanted: EvalConfig, what: str) -> InvalidArgumentError:
    """The one-line error that refuses to resume or merge runs of different configurations."""
    differences = "; ".join(normalised(found).differences(normalised(wanted)))
    return InvalidArgumentError(
        f"{what} has another configuration (recorded vs now: {differences}); "
        "use the same options, or another --out"
    )


@dataclass
class ChunkRecord:
    """One closed chunk of a part file."""

    index: int
    records: list[ImageRecord] = field(default_factory=list)
    warnings: list[CheckWarning] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class PartFile:
    """What a part file holds: its header and its closed chunks (in file order).

    Attributes:
        config: the header's configuration (``None`` when the file has no header yet).
        labels: the class names the header recorded.
        chunks: the closed chunks.
        end: the byte offset after the last closed chunk (or the header): where to append.
        torn: bytes after ``end`` that belong to no closed chunk (a killed write).
    """

    path: Path
    config: EvalConfig | None = None
    labels: list[str] | None = None
    shard: tuple[int, int] | None = None
    chunks: list[ChunkRecord] = field(default_factory=list)
    end: int = 0
    torn: int = 0


def read_part(path: Path) -> PartFile:
    """Read a part file, keeping only its closed chunks.

    Raises:
        InvalidArgumentError: the file is not an evaluation's part (no header where one must be,
            or a closed chunk whose lines are not records).
    """
    part = PartFile(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(f"cannot read the records '{path}': {short_reason(error)}") from None
    offset = 0
    pending: ChunkRecord | None = None
    for raw in data.splitlines(keepends=True):
        start, offset = offset, offset + len(raw)
        if not raw.endswith(b"\n"):
            break  # a torn last line
        try:
            line = json.loads(raw)
        except ValueError:
            break  # garbage from a killed write: nothing after it counts
        if not isinstance(line, dict):
            break
        if part.config is None:
            header = line.get("header")
            if start != 0 or not isinstance(header, dict):
                raise InvalidArgumentError(
                    f"'{path}' is not a trompe evaluation's records (no header line); "
                    "move it away or start over with --force"
                )
            try:
                part.config = EvalConfig.from_dict(header["config"])
                labels = header.get("labels")
                part.labels = None if labels is None else [str(x) for x in labels]
                i, n = header["shard"]
                part.shard = (int(i), int(n))
            except (KeyError, TypeError, ValueError):
                raise InvalidArgumentError(
                    f"'{path}' has a damaged header line; move it away or start over with --force"
                ) from None
            part.end = offset
            continue
        try:
            if "position" in line:
                record = ImageRecord.from_json(line)
                if pending is None:
                    pending = ChunkRecord(record.chunk)
                pending.records.append(record)
            elif "checks" in line:
                if pending is None:
                    pending = ChunkRecord(int(line["chunk"]))
                pending.warnings.extend(CheckWarning.from_json(w) for w in line["checks"])
            elif "done" in line:
                index = int(line["done"])
                chunk = pending if pending is not None else ChunkRecord(index)
                pending = None
                if chunk.index != index or len(chunk.records) != int(line["images"]):
                    break  # lines of another chunk: a damaged file; what follows is lost
                if any(r.chunk != index for r in chunk.records):
                    break
                chunk.seconds = float(line.get("seconds", 0.0))
                part.chunks.append(chunk)
                part.end = offset
            else:
                break
        except (KeyError, TypeError, ValueError):
            break
    part.torn = len(data) - part.end
    return part


class Store:
    """The files of one evaluation in ``out``, for one shard ``(i, n)``."""

    def __init__(self, out: Path, shard: tuple[int, int] = (0, 1)) -> None:
        self.out = Path(out)
        self.shard = shard
        self._file: BinaryIO | None = None

    @property
    def records_dir(self) -> Path:
        return self.out / RECORDS

    @property
    def part_path(self) -> Path:
        return self.records_dir / part_name(self.shard)

    def parts(self) -> list[Path]:
        """Every part file in ``out/records``, in shard order."""
        if not self.records_dir.is_dir():
            return []
        found = []
        for entry in self.records_dir.iterdir():
            match = PART_PATTERN.match(entry.name)
            if match and entry.is_file():
                found.append((int(match["n"]), int(match["i"]), entry))
        return [path for _, _, path in sorted(found)]

    # -- starting ------------------------------------------------------------------------------

    def open(
        self,
        config: EvalConfig,
        *,
        labels: Sequence[str] | None,
        resume: bool,
        force: bool,
        whole: bool = False,
        join: bool = False,
    ) -> list[ChunkRecord]:
        """Check the folder, prepare it and open this shard's part for appending.

        Args:
            config: the evaluation's configuration.
            labels: the class names, kept in the part's header for :func:`merge`.
            resume: continue this shard's part (a folder without one starts anew).
            force: start over, removing what an earlier evaluation left (trompe's files only).
            whole: the folder belongs to all shards of this run together (``torchrun``'s first
                process): checked and cleared as a single process's would be.
            join: the first process has checked and prepared the folder already (``torchrun``'s
                other processes): only the configuration is compared.

        Returns:
            The chunks already recorded (with ``resume``; empty otherwise).

        Raises:
            OutputExistsError: ``out`` holds an earlier evaluation and neither ``resume`` nor
                ``force`` was given.
            InvalidArgumentError: with ``resume``, the earlier evaluation had another
                configuration.
        """
        prepare_directory(self.out)
        remove_stale_temporaries(self.out)
        config = normalised(config)
        done: list[ChunkRecord] = []
        alone = whole or self.shard[1] == 1
        if join:
            earlier = self._earlier_config()
            if earlier is not None and earlier.differences(config):
                raise config_mismatch(earlier, config, f"cannot join the run in '{self.out}'")
            if resume:
                done = self._resumable(config)
        elif force:
            self._clear(config, alone)
        elif resume:
            done = self._resumable(config)
        else:
            self._refuse_earlier(config, alone)
        prepare_directory(self.records_dir)
        remove_stale_temporaries(self.records_dir)
        if not join:
            self.write_json(self.out / CONFIG, {**config.to_dict(), "trompe": __version__})
        keep = resume and (bool(done) or self._part_has_header(config))
        self._open_part(config, labels, keep=keep)
        return done

    def _part_has_header(self, config: EvalConfig) -> bool:
        if not self.part_path.exists():
            return False
        part = read_part(self.part_path)
        return part.config is not None and not part.config.differences(config)

    def _earlier_config(self) -> EvalConfig | None:
        path = self.out / CONFIG
        if not path.is_file():
            return None
        try:
            return EvalConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            raise InvalidArgumentError(
                f"'{path}' is not a trompe evaluation's configuration; move it away or start "
                "over with --force"
            ) from None

    def _ours(self, name: str) -> bool:
        return name in (CONFIG, SUMMARY, FIGURE, RECORDS, ADVERSARIAL) or bool(
            TEMPORARY_PATTERN.match(name)
        )

    def _refuse_earlier(self, config: EvalConfig, alone: bool) -> None:
        entries = sorted(p.name for p in self.out.iterdir() if not TEMPORARY_PATTERN.match(p.name))
        if not entries:
            return
        refuse = True
        if not alone:
            # Shards of one job array start into the same folder, in any order: joining one
            # whose configuration is the same is fine, as long as this shard's part is not
            # there yet and the shards were not merged already.
            earlier = self._earlier_config()
            if earlier is not None and earlier.differences(config) and SUMMARY not in entries:
                raise config_mismatch(earlier, config, f"cannot join the shards in '{self.out}'")
            refuse = (
                any(not self._ours(e) for e in entries)
                or SUMMARY in entries
                or (earlier is not None and bool(earlier.differences(config)))
                or (self.part_path.exists() and self.part_path.stat().st_size > 0)
            )
        if refuse:
            raise OutputExistsError(
                f"the output folder '{self.out}' is not empty (an earlier evaluation?); "
                "use --resume to continue or --force to start over"
            )

    def _resumable(self, config: EvalConfig) -> list[ChunkRecord]:
        earlier = self._earlier_config()
        if earlier is not None and earlier.differences(config):
            raise config_mismatch(earlier, config, f"cannot resume: '{self.out / CONFIG}'")
        if not self.part_path.exists():
            return []
        part = read_part(self.part_path)
        if part.config is not None and part.config.differences(config):
            raise config_mismatch(part.config, config, f"cannot resume: '{self.part_path}'")
        if part.torn:
            with signals_deferred(), open(self.part_path, "r+b") as file:
                file.truncate(part.end)
                file.flush()
                os.fsync(file.fileno())
        return part.chunks

    def _clear(self, config: EvalConfig, single: bool) -> None:
        """Remove what an earlier evaluation left that this one replaces, and nothing else."""
        stale = [self.out / SUMMARY, self.out / FIGURE]
        if single:
            stale += self.parts()
        else:
            stale.append(self.part_path)
            earlier = self._earlier_config() if (self.out / CONFIG).is_file() else None
            if earlier is not None and earlier.differences(config):
                stale += self.parts()  # parts of another configuration can never be merged
        if single:
            adversarial = self.out / ADVERSARIAL
            if adversarial.is_dir():
                for folder in adversarial.iterdir():
                    if folder.is_dir() and not folder.is_symlink():
                        stale += [
                            f for f in folder.iterdir() if re.match(r"^[0-9]{6}_?.*\.png$", f.name)
                        ]
        for path in stale:
            with signals_deferred():
                try:
                    if path.is_file() or path.is_symlink():
                        path.unlink()
                except OSError as error:
                    raise ImageError(
                        f"cannot remove '{path}' to start over: {short_reason(error)}"
                    ) from None

    def _open_part(self, config: EvalConfig, labels: Sequence[str] | None, *, keep: bool) -> None:
        header = {
            "header": {
                "trompe": __version__,
                "config": config.to_dict(),
                "fingerprint": config.fingerprint(),
                "shard": list(self.shard),
                "labels": None if labels is None else [str(x) for x in labels],
            }
        }
        try:
            # Open for the whole run (closed by close()), appended to chunk after chunk.
            if keep:
                self._file = open(self.part_path, "ab")  # noqa: SIM115
            else:
                self._file = open(self.part_path, "wb")  # noqa: SIM115
                self._append([header])
        except OSError as error:
            raise ImageError(
                f"cannot write the records '{self.part_path}': {short_reason(error)}"
            ) from None

    # -- going on ------------------------------------------------------------------------------

    def _append(self, lines: Iterable[Mapping[str, Any]]) -> None:
        assert self._file is not None
        text = "".join(json.dumps(line, allow_nan=False) + "\n" for line in lines)
        # One write, then synced: Ctrl-C waits for it, so only a killed process tears a line.
        with signals_deferred():
            self._file.write(text.encode())
            self._file.flush()
            os.fsync(self._file.fileno())

    def append_chunk(self, chunk: ChunkRecord) -> None:
        """Append one finished chunk's records, warnings and closing line, synced."""
        lines: list[Mapping[str, Any]] = [r.to_json() for r in chunk.records]
        if chunk.warnings:
            lines.append({"checks": [w.to_json() for w in chunk.warnings], "chunk": chunk.index})
        lines.append({"done": chunk.index, "images": len(chunk.records), "seconds": chunk.seconds})
        try:
            self._append(lines)
        except OSError as error:
            raise ImageError(
                f"cannot write the records '{self.part_path}': {short_reason(error)}"
            ) from None

    def save_adversarial(
        self,
        records: Sequence[ImageRecord],
        adversarial: Mapping[int, torch.Tensor],
        config: EvalConfig,
    ) -> None:
        """Write the adversarial image of every image broken by an attack, per budget."""
        from trompe.images import save_png

        readable = [r for r in records if r.skipped is None]
        for k, images in adversarial.items():
            folder = self.out / ADVERSARIAL / budget_folder(config.eps[k], config.norm)
            for row, record in enumerate(readable):
                outcome = record.budgets[k]
                if outcome.robust or outcome.broken_by in (None, "clean"):
                    continue
                save_png(
                    images[row].detach().cpu(),
                    folder / adversarial_name(record.position, record.id),
                    force=True,
                )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- finishing -----------------------------------------------------------------------------

    def write_json(self, target: Path, data: Mapping[str, Any]) -> None:
        """Write ``data`` as JSON to ``target`` atomically (replacing it)."""
        self.write_files({target: (json.dumps(data, indent=2, allow_nan=False) + "\n").encode()})

    def write_files(self, files: Mapping[Path, bytes]) -> None:
        """Write files atomically, all or none (replacing earlier ones)."""
        with all_or_nothing([]) as (staged, placed):
            temporaries = [(stage(t.parent, t, data, staged), t) for t, data in files.items()]
            for temporary, target in temporaries:
                move_into_place(temporary, target, True, placed)

    def finish(self, summary: Mapping[str, Any], figure: bytes) -> None:
        """Write the summary and the figure, atomically, both or neither."""
        self.write_files(
            {
                self.out / SUMMARY: (
                    json.dumps(summary, indent=2, allow_nan=False) + "\n"
                ).encode(),
                self.out / FIGURE: figure,
            }
        )


def read_all(out: Path) -> tuple[EvalConfig, list[str] | None, list[PartFile]]:
    """Read every part of ``out``: the one configuration they share, the labels, the parts.

    Raises:
        InvalidArgumentError: no parts, parts (or config.json) of different configurations.
    """
    store = Store(out)
    paths = store.parts()
    if not paths:
        raise InvalidArgumentError(
            f"'{out}' holds no evaluation records (records/part-*.jsonl); run the shards first"
        )
    parts = [read_part(p) for p in paths]
    config: EvalConfig | None = None
    labels: list[str] | None = None
    for part in parts:
        if part.config is None:
            continue
        if config is None:
            config, labels = part.config, part.labels
        elif part.config.differences(config):
            raise config_mismatch(part.config, config, f"cannot merge: '{part.path}'")
    if config is None:
        raise InvalidArgumentError(f"the records in '{out}' are empty; run the shards first")
    earlier = store._earlier_config()
    if earlier is not None and earlier.differences(config):
        raise config_mismatch(earlier, config, f"cannot merge: '{out / CONFIG}'")
    return config, labels, parts
