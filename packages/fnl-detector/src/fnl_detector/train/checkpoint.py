"""Checkpoints: weights in safetensors, trainer state in a weights-only torch file.

A run directory holds::

    RUN_DIR/checkpoints/iter_0000500/model.safetensors   weights (safetensors, metadata: iteration)
    RUN_DIR/checkpoints/iter_0000500/trainer_state.pt    optimizer, schedule, iteration, RNG
                                                         states, data-order position
    RUN_DIR/checkpoints/last_checkpoint                  name of the newest complete checkpoint
    RUN_DIR/model.safetensors                            final weights

Every file is written atomically (:mod:`fnl_core.files`; weights by :mod:`fnl_detector.weights`),
and a checkpoint folder as a whole too: its files go into a hidden temporary folder
(``.iter_0000500.<pid>.tmp``) that is renamed to ``iter_0000500`` once both are on disk, so a
checkpoint folder appears complete or not at all, whenever the process is stopped or killed.
``last_checkpoint`` is replaced atomically after that rename, so it always names a complete
pair. Temporary folders a killed run left behind are removed by the next save. The trainer
state only holds tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fnl_core.files import atomic_write_bytes, fsync_dir
from fnl_detector.weights import FORMAT, CheckpointError, restore_weights, save_weights

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
LAST_FILE = "last_checkpoint"


def save_state(state: dict[str, Any], path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"trainer state file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"trainer state file {path} is truncated or corrupt (torch.load failed): {exc}"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"trainer state file {path} is not an {FORMAT} trainer state")
    return state


class CheckpointDir:
    """The ``checkpoints/`` folder of a run: numbered checkpoints and the last-checkpoint marker."""

    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = Path(root)
        self.keep = keep

    @staticmethod
    def name(iteration: int) -> str:
        return f"iter_{iteration:07d}"

    def save(self, model: nn.Module, state: dict[str, Any], iteration: int) -> Path:
        """Write checkpoint ``iteration`` (into a temporary folder renamed into place), then
        point ``last_checkpoint`` at it and prune the oldest."""
        folder = self.root / self.name(iteration)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".iter_*"):  # left by a killed run (or this one's last try)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.root / f".{folder.name}.{os.getpid()}.tmp"
        tmp.mkdir()
        try:
            save_weights(model, tmp / WEIGHTS_FILE, {"iteration": str(iteration)})
            save_state({**state, "format": FORMAT, "iteration": iteration}, tmp / STATE_FILE)
            _replace_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_bytes(self.root / LAST_FILE, (folder.name + "\n").encode())
        self._prune(folder)
        return folder

    def _prune(self, newest: Path) -> None:
        folders = sorted(p for p in self.root.glob("iter_*") if p.is_dir())
        for old in folders[: max(0, len(folders) - self.keep)]:
            if old != newest:
                shutil.rmtree(old, ignore_errors=True)

    def last(self) -> Path | None:
        """The newest complete checkpoint folder, or None when there is none."""
        marker = self.root / LAST_FILE
        if not marker.is_file():
            return None
        folder = self.root / marker.read_text().strip()
        if not folder.is_dir():
            raise CheckpointError(f"{marker} names {folder}, which does not exist")
        missing = [n for n in (WEIGHTS_FILE, STATE_FILE) if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(f"checkpoint {folder} is incomplete: no {', '.join(missing)}")
        return folder

    def load(self, folder: Path, model: nn.Module) -> dict[str, Any]:
        """Load weights into ``model``; return the trainer state."""
        state = load_state(folder / STATE_FILE)
        restore_weights(model, folder / WEIGHTS_FILE)
        return state


def _replace_dir(tmp: Path, folder: Path) -> None:
    """Rename the finished folder ``tmp`` to ``folder``; a folder already there (the same
    iteration saved again) is moved aside first and removed after."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    fsync_dir(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
