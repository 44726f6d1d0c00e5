"""Writing files atomically, and all-or-nothing folders of files.

A leaf module (standard library and :mod:`trompe.errors` only) shared by
:func:`trompe.images.save_png` and :func:`trompe.report.save_result`. Every file is first
written to a hidden temporary file next to its target, then moved into place, so that a reader
never sees half a file; without ``force`` a hard link refuses to replace a file that appeared
meanwhile. Failures become an :class:`~trompe.errors.ImageError` (or
:class:`~trompe.errors.OutputExistsError`) with a one-line reason.

All or nothing at every instant: the steps that change the folder and the lists that record
them (create a temporary and note it, move a file into place and note it, undo) run in
:func:`signals_deferred`, so a Ctrl-C or a SIGTERM lands between steps, never between a change
and its record, and a second one cannot cut the undo short. A process killed outright
(SIGKILL, power loss) leaves its temporaries; their names hold the host and the process id
(:data:`TEMPORARY_PATTERN`), and :func:`remove_stale_temporaries` deletes those of processes
of this host that are gone, the next time trompe writes into that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import signal
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from trompe.errors import ImageError, OutputExistsError

__all__ = [
    "TEMPORARY_PATTERN",
    "all_or_nothing",
    "create_temporary",
    "exists_error",
    "move_into_place",
    "prepare_directory",
    "remove_stale_temporaries",
    "short_reason",
    "signals_deferred",
    "stage",
]

_log = logging.getLogger(__name__)

#: The signals that end a run politely: Ctrl-C, and what `kill`, `timeout` and schedulers send.
_POLITE_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: trompe's temporary files: ``.<target name>.<host tag>-<pid>-<8 hex>.trompe.tmp``.
TEMPORARY_PATTERN = re.compile(
    r"^\..+\.(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)-[0-9a-f]{8}\.trompe\.tmp$"
)


def _host_tag() -> str:
    # A process id means something only on its own machine (a folder may be shared over NFS).
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for a short step; deliver them, in order, when it ends.

    Outside the main thread (where Python cannot set handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous: dict[signal.Signals, Any] = {}
    try:
        for polite in _POLITE_SIGNALS:
            current = signal.getsignal(polite)
            if current is None:
                continue  # installed outside Python: it could not be put back
            previous[polite] = current
            signal.signal(polite, hold)
        yield
    finally:
        for polite, handler in previous.items():
            signal.signal(polite, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)  # the handler of the caller decides what it means


def short_reason(error: BaseException) -> str:
    """The first line of an error's message, at most 120 characters, for one-line errors."""
    text = str(error).strip().splitlines()
    reason = text[0] if text and text[0] else type(error).__name__
    return reason if len(reason) <= 120 else reason[:117] + "..."


def exists_error(target: Path) -> OutputExistsError:
    return OutputExistsError(
        f"'{target}' exists already; pass force=True (CLI: --force) to overwrite it"
    )


def create_temporary(directory: Path, name: str, into: list[Path] | None = None) -> Path:
    """Create an empty hidden file next to the target, with the permissions of a normal file.

    ``os.open`` with mode 0o666 lets the umask decide, like ``open(path, "w")``; mkstemp would
    leave the saved image readable by its owner only. Given ``into``, the path is appended to it
    in the same uninterruptible step that creates the file.
    """
    tag = f"{_host_tag()}-{os.getpid()}"
    for _ in range(16):
        temporary = directory / f".{name}.{tag}-{secrets.token_hex(4)}.trompe.tmp"
        try:
            with signals_deferred():
                descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                if into is not None:
                    into.append(temporary)
        except FileExistsError:
            continue
        except PermissionError:
            raise ImageError(
                f"cannot write to the directory '{directory}': permission denied; "
                "choose another output directory"
            ) from None
        except OSError as error:
            raise ImageError(
                f"cannot write to the directory '{directory}': {short_reason(error)}"
            ) from None
        os.close(descriptor)
        return temporary
    raise ImageError(f"cannot create a temporary file in '{directory}'")  # pragma: no cover


def stage(directory: Path, target: Path, data: bytes, into: list[Path] | None = None) -> Path:
    """Write ``data`` to a hidden temporary file next to ``target``; the caller renames it.

    Given ``into`` (the staged list of :func:`all_or_nothing`), the temporary is recorded there
    as it is created, so an interruption at any point leaves nothing unrecorded.
    """
    temporary = create_temporary(directory, target.name, into)
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ImageError(f"cannot write '{target}': {short_reason(error)}") from None
    return temporary


def move_into_place(
    temporary: Path, target: Path, force: bool, placed: list[Path] | None = None
) -> None:
    """Rename a staged file to ``target``; without ``force``, never replace an existing file.

    Given ``placed``, ``target`` is appended to it in the same uninterruptible step.
    """
    with signals_deferred():
        _move(temporary, target, force)
        if placed is not None:
            placed.append(target)


def _move(temporary: Path, target: Path, force: bool) -> None:
    if not force:
        # A hard link fails if the target appeared since the caller's check, where a rename
        # would silently replace it. File systems without hard links fall back to
        # check-and-rename.
        try:
            os.link(temporary, target)
            return
        except FileExistsError:
            raise exists_error(target) from None
        except OSError:
            if target.exists():
                raise exists_error(target) from None
    try:
        os.replace(temporary, target)
    except OSError as error:
        raise ImageError(f"cannot write '{target}': {short_reason(error)}") from None


def prepare_directory(directory: Path, into: list[Path] | None = None) -> list[Path]:
    """Create ``directory`` if missing; returns the directories created, deepest first.

    Given ``into`` (the list that :func:`all_or_nothing` undoes), they are appended to it in
    the same uninterruptible step that creates them.
    """
    missing: list[Path] = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    try:
        with signals_deferred():
            directory.mkdir(parents=True, exist_ok=True)
            if into is not None:
                into.extend(missing)
    except (FileExistsError, NotADirectoryError):
        raise ImageError(
            f"cannot create the output directory '{directory}': a part of its path is a file"
        ) from None
    except OSError as error:
        raise ImageError(
            f"cannot create the output directory '{directory}': {short_reason(error)}"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ImageError(
            f"cannot write to the output directory '{directory}': permission denied; "
            "choose another directory"
        )
    return missing


@contextlib.contextmanager
def all_or_nothing(created_dirs: list[Path]) -> Iterator[tuple[list[Path], list[Path]]]:
    """Yield lists of staged temporaries and of files moved into place, to undo on failure.

    The staged temporaries are always removed; on failure, so are the files already moved into
    place and the directories this call created (when empty).
    """
    staged: list[Path] = []
    placed: list[Path] = []
    failed = False
    try:
        yield staged, placed
    except BaseException:
        failed = True
        raise
    finally:
        # A second Ctrl-C must not cut the undo short: it is delivered once the undo is done.
        with signals_deferred():
            for path in staged:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            if failed:
                for path in placed:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                for directory in created_dirs:
                    with contextlib.suppress(OSError):
                        directory.rmdir()


def _process_is_gone(pid: int) -> bool:
    if os.name != "posix" or pid <= 0:
        return False  # os.kill(pid, 0) would end the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False  # alive under another user (or not a pid at all): leave it alone
    return False


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete trompe's temporaries in ``directory`` left by killed processes; returns them.

    Only files whose name matches :data:`TEMPORARY_PATTERN`, made on this host by a process
    that no longer runs, that are regular files (not links) and belong to this user. Anything
    else, and any error, leaves the file as it is.
    """
    removed: list[Path] = []
    host = _host_tag()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = TEMPORARY_PATTERN.match(entry.name)
        if match is None or match["host"] != host:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or not _process_is_gone(pid):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            mine = not hasattr(os, "getuid") or info.st_uid == os.getuid()
            if not stat.S_ISREG(info.st_mode) or not mine:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
        _log.info("removed %s, left by process %d that was killed", entry.path, pid)
    return removed
