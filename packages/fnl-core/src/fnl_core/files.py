"""Atomic file writes: readers see either the old file or the whole new one, never a part.

Every FnL file that another process (or a later run) may read while it is being written goes
through here: weights and checkpoints, downloads, results and index JSON, generated datasets,
caches. The data goes to a temporary file in the destination's folder (same file system), is
flushed to disk, given the mode a plainly created file would get (0o666 less the umask, not
``mkstemp``'s 0600) and renamed over the destination with ``os.replace``; on any error the
temporary file is removed and the destination is left as it was. Standard library only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_output(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``path`` to write; renamed to ``path`` when the block ends
    without an error, removed when it raises (the destination is then untouched).

    >>> with atomic_output("out/results.json") as tmp:  # doctest: +SKIP
    ...     tmp.write_text(text)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, default_file_mode())  # mkstemp creates 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see the module docstring)."""
    atomic_write_bytes(path, text.encode(encoding))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | Path) -> None:
    """Flush the entries of ``directory`` (a rename into it) to disk, where directories can be
    opened (not on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = [
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "default_file_mode",
    "fsync_dir",
]
