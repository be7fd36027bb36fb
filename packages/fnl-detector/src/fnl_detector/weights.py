"""FnL weights files: a model's state dict as safetensors, with string metadata.

The one place that writes and reads them: ``fnl train`` (checkpoints and the final weights),
``fnl convert``, the model-zoo packer and every loader (:mod:`fnl_detector.loading`). A file's
metadata has ``format`` (:data:`FORMAT`) plus what the writer adds: ``spec`` (the resolved spec
as JSON, so that ``--weights`` alone is enough), ``iteration``, ``source``... Files are written
atomically (:mod:`fnl_core.files`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from fnl_core.errors import WeightsError
from fnl_core.files import atomic_write_bytes

if TYPE_CHECKING:
    import torch
    from torch import nn

#: ``format`` metadata of FnL weights files (and of the trainer state of a checkpoint).
FORMAT = "fnl-detector/1"


class CheckpointError(WeightsError):
    """A weights or checkpoint file is missing, truncated, corrupt or does not fit the model."""


def plain_state_dict(weights: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no shared storage (what safetensors accepts)."""
    state = weights.state_dict() if hasattr(weights, "state_dict") else weights
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add((t.untyped_storage().data_ptr(), t.storage_offset()))
        out[name] = t
    return out


def save_weights(
    weights: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a model's (or a state dict's) tensors as safetensors, atomically; the metadata
    gets ``format`` (:data:`FORMAT`) and ``metadata``."""
    from safetensors.torch import save

    meta = {"format": FORMAT, **(metadata or {})}
    atomic_write_bytes(Path(path), save(plain_state_dict(weights), metadata=meta))


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
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


def restore_weights(model: nn.Module, path: str | Path) -> None:
    """Load FnL's own weights file back into the model that wrote it (resuming training):
    every key and shape must match, else :class:`CheckpointError`. Files from elsewhere
    (reference checkpoints, another spec) go through :func:`fnl_detector.loading.load_weights`.
    """
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


__all__ = [
    "FORMAT",
    "CheckpointError",
    "plain_state_dict",
    "read_weights",
    "restore_weights",
    "save_weights",
]
