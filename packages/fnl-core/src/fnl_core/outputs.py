"""Checking a command's ``--out`` before any work (standard library only).

Every command that writes calls :func:`check_output_dir` (a folder) or :func:`check_output_file`
(one file) first, before it builds a model, reads data or scores anything: a path that cannot
be written (a file where a folder is expected or the reverse, a path under a regular file, a
folder without write permission, a read-only file system) is reported as one
:class:`OutputError` line within the command's start-up time, not as a traceback after the work.

The same rule protects earlier results everywhere: an output that already holds what the
command writes (``results.json``, ``model_int8.pt``, ``manifest.json``, a metrics file...) is
refused unless ``--overwrite`` is given; with it, those earlier outputs are removed first (other
files in the folder are left alone), so results of two runs never mix.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fnl_core.errors import FnLError

__all__ = ["OutputError", "add_overwrite_argument", "check_output_dir", "check_output_file"]


class OutputError(FnLError):
    """An output path cannot be written, or would replace earlier results."""


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _existing_folder(path: Path, option: str) -> Path:
    """The nearest existing ancestor of ``path``; it must be a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{option} {path}: {parent} is a file, not a folder")
            return parent
    return Path.cwd()


def _probe(folder: Path, option: str, path: Path) -> None:
    """Create and remove a temporary file in ``folder``: proof that it can be written. Nothing
    is left behind (a command that fails later leaves no empty output folder)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".fnl-write-check-", dir=folder)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write there ({_reason(exc)})") from None
    os.close(fd)
    Path(name).unlink(missing_ok=True)


def check_output_dir(
    path: str | Path,
    *,
    option: str = "--out",
    outputs: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Make sure the output folder ``path`` can be written (it is not created here).

    ``outputs``: glob patterns of what the command writes there; if the folder already holds
    any, raise :class:`OutputError` unless ``overwrite``, which removes them. Returns the path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file, not a folder")
    existing = path if path.is_dir() else _existing_folder(path, option)
    found: list[Path] = []
    if path.is_dir():
        found = sorted({p for pattern in outputs for p in path.glob(pattern)})
    if found and not overwrite:
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise OutputError(
            f"{option} {path} already holds the results of an earlier run ({names}); pick a "
            f"new {option}, or replace them with --overwrite"
        )
    _probe(existing, option, path)
    for p in found:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(f"--overwrite: cannot remove {p} ({_reason(exc)})") from None
    return path


def check_output_file(
    path: str | Path, *, option: str = "--out", overwrite: bool | None = None
) -> Path:
    """Make sure the output file ``path`` can be written (its folder is not created here).

    ``overwrite``: None writes over an existing file; False refuses an existing file (raise
    :class:`OutputError` naming ``--overwrite``); True allows it. Returns the path.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder, not a file")
    existing = _existing_folder(path, option)
    if overwrite is False and path.exists():
        raise OutputError(
            f"{option} {path} already exists; pick a new {option}, or replace it with --overwrite"
        )
    _probe(existing, option, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option} {path}: cannot write there (read-only file)")
    return path


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str = "folder") -> None:
    """The shared ``--overwrite`` flag of the commands whose ``--out`` may hold earlier results."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace what an earlier run wrote in the --out {what} (refused without it)",
    )
