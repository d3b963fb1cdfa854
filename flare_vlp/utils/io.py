"""Atomic file and folder writes: an interrupted or failed write never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "atomic_output_dir", "OutputPathError"]


class OutputPathError(ValueError):
    """An output path that cannot be written (missing parent folder, existing non-empty target, ...)."""


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """``write(tmp)`` to a temp file beside ``path``, then rename it into place: the one temp-file writer of the
    package (site store, checkpoints, caches, text files). A process killed mid-write, or a ``write`` that raises,
    leaves the previous ``path`` intact and no temp file behind. Returns ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically (:func:`atomic_write`)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    atomic_write(path, write)


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it is renamed to ``path``, on any error it is removed.

    Raises:
        OutputPathError: the parent folder does not exist, or ``path`` exists, is not empty and ``overwrite`` is False.
    """
    path = Path(path).absolute()
    if not path.parent.is_dir():
        raise OutputPathError(f"{path}: parent folder {path.parent} does not exist")
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputPathError(f"{path}: folder exists and is not empty (pass overwrite to replace it)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
