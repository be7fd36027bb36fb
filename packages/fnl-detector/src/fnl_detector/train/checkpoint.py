"""Checkpoints: weights in safetensors, trainer state in a weights-only torch file.

A run directory holds::

    RUN_DIR/checkpoints/iter_0000500/model.safetensors   weights (safetensors, metadata: iteration)
    RUN_DIR/checkpoints/iter_0000500/trainer_state.pt    optimizer, schedule, iteration, RNG
                                                         states, data-order position
    RUN_DIR/checkpoints/last_checkpoint                  name of the newest complete checkpoint
    RUN_DIR/model.safetensors                            final weights

Every file is written atomically (temporary file in the same directory, fsync, ``os.replace``)
with the mode a plainly created file would get (0o666 less the umask, not mkstemp's 0600);
``last_checkpoint`` is written last, so it always names a complete pair. The trainer state only
holds tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fnl_core.errors import WeightsError

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
LAST_FILE = "last_checkpoint"
FORMAT = "fnl-detector/1"


class CheckpointError(WeightsError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the whole new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, default_file_mode())  # mkstemp creates 0600; give what open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
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


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no shared storage (what safetensors accepts)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add((t.untyped_storage().data_ptr(), t.storage_offset()))
        out[name] = t
    return out


def save_weights(model: nn.Module, path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Save ``model``'s state dict as safetensors, atomically."""
    from safetensors.torch import save

    meta = {"format": FORMAT, **(metadata or {})}
    atomic_write_bytes(Path(path), save(_plain_state_dict(model), metadata=meta))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a clear :class:`CheckpointError` when it is unreadable."""
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        return load(path.read_bytes())
    except Exception as exc:
        raise CheckpointError(
            f"weights file {path} is truncated or corrupt (not a readable safetensors file): {exc}"
        ) from exc


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a safetensors file into ``model`` (all keys must match)."""
    state = read_weights(path)
    own = model.state_dict()
    wrong = [k for k, v in own.items() if k in state and state[k].shape != v.shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"weights file {path} does not fit the model: {len(wrong)} tensor(s) of another "
            f"shape, e.g. {k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the "
            "model (was it trained with another spec?)"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"weights file {path} does not fit the model: "
            f"missing {sorted(missing)[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {sorted(unexpected)[:5]}{'...' if len(unexpected) > 5 else ''}"
        )


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
        folder = self.root / self.name(iteration)
        save_weights(model, folder / WEIGHTS_FILE, {"iteration": str(iteration)})
        save_state({**state, "format": FORMAT, "iteration": iteration}, folder / STATE_FILE)
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
        return folder

    def load(self, folder: Path, model: nn.Module) -> dict[str, Any]:
        """Load weights into ``model``; return the trainer state."""
        state = load_state(folder / STATE_FILE)
        load_weights(model, folder / WEIGHTS_FILE)
        return state
