"""Writing files atomically, and all-or-nothing folders of files.

A leaf module (standard library and :mod:`trompe.errors` only) shared by
:func:`trompe.images.save_png` and :func:`trompe.report.save_result`. Every file is first
written to a hidden temporary file next to its target, then moved into place, so that a reader
never sees half a file; without ``force`` a hard link refuses to replace a file that appeared
meanwhile. Failures become an :class:`~trompe.errors.ImageError` (or
:class:`~trompe.errors.OutputExistsError`) with a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from trompe.errors import ImageError, OutputExistsError

__all__ = [
    "all_or_nothing",
    "create_temporary",
    "exists_error",
    "move_into_place",
    "prepare_directory",
    "short_reason",
    "stage",
]


def short_reason(error: BaseException) -> str:
    """The first line of an error's message, at most 120 characters, for one-line errors."""
    text = str(error).strip().splitlines()
    reason = text[0] if text and text[0] else type(error).__name__
    return reason if len(reason) <= 120 else reason[:117] + "..."


def exists_error(target: Path) -> OutputExistsError:
    return OutputExistsError(
        f"'{target}' exists already; pass force=True (CLI: --force) to overwrite it"
    )


def create_temporary(directory: Path, name: str) -> Path:
    """Create an empty hidden file next to the target, with the permissions of a normal file.

    ``os.open`` with mode 0o666 lets the umask decide, like ``open(path, "w")``; mkstemp would
    leave the saved image readable by its owner only.
    """
    for _ in range(16):
        temporary = directory / f".{name}.{secrets.token_hex(4)}.png.tmp"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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


def stage(directory: Path, target: Path, data: bytes) -> Path:
    """Write ``data`` to a hidden temporary file next to ``target``; the caller renames it."""
    temporary = create_temporary(directory, target.name)
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


def move_into_place(temporary: Path, target: Path, force: bool) -> None:
    """Rename a staged file to ``target``; without ``force``, never replace an existing file."""
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


def prepare_directory(directory: Path) -> list[Path]:
    """Create ``directory`` if missing; returns the directories created, deepest first."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
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
