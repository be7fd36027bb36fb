"""Which files an inference command runs on (``fnl predict``, ``fnl run``); no numpy.

Files named explicitly are kept whatever their ending (a bad one is reported when it is read);
folders contribute their image and video files (not recursively) in file-name order; a file
named twice runs once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fnl_core.errors import InputError

#: File name endings read as images when a folder is given.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: File name endings read as videos.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def collect_inputs(inputs: list[str], command: str = "fnl") -> list[Path]:
    """Image and video files named, or found in the folders named; ``command`` prefixes the
    warning printed for a folder without any."""
    known = (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES)
    files: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(
                (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in known),
                key=lambda p: p.name,
            )
            if not found:
                print(f"{command}: warning: {path}: no image or video files", file=sys.stderr)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"input {text!r} is neither an image/video file nor a folder")
    unique = list(dict.fromkeys(files))
    if not unique:
        raise InputError(f"no image or video files ({', '.join(known)}) in {inputs}")
    return unique


__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "collect_inputs", "is_video"]
