"""Local pretrained weights: read a timm state dict from disk and load it into a backbone.

The file holds the state dict of the timm *classification* model (as timm or
``torch.save(model.state_dict())`` write it), optionally wrapped as ``{"state_dict": ...}`` or
``{"model": ...}``. Keys of parts the feature extractor does not keep (classifier, head conv,
pruned stages) are ignored; any other mismatch is an error naming the keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

_WRAPPERS = ("state_dict", "model")
_SHOWN = 8


class WeightsFileError(ValueError):
    """A weights file cannot be read, or does not match the backbone."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"pretrained weights file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from fnl_core.errors import checkpoint_load_reason

        raise WeightsFileError(
            f"cannot read pretrained weights file {str(path)!r}: {checkpoint_load_reason(exc)}"
        ) from None
    for key in _WRAPPERS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsFileError(
            f"pretrained weights file {str(path)!r} does not hold a state dict "
            f"(a mapping of names to tensors, optionally under 'state_dict' or 'model')"
        )
    return data


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN])
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{len(keys)}: {shown}{more}"


def load_backbone_weights(
    model: nn.Module,
    path: str | Path,
    *,
    model_name: str,
    known_keys: set[str] | None = None,
) -> None:
    """Load ``path`` into ``model`` (a timm feature model), strictly.

    ``known_keys`` are the state-dict keys of the full timm classification model; file keys
    among them that ``model`` lacks are ignored (head, pruned stages). Missing keys, keys
    unknown to the architecture and shape mismatches raise :class:`WeightsFileError`.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    wanted = {k for k in own if not _is_counter(k)}
    given = {k for k in state if not _is_counter(k)}
    allowed = set(own) | (known_keys or set())
    missing = wanted - given
    unexpected = {k for k in given if k not in allowed}
    shapes = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in sorted(wanted & given)
        if state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({_listing(missing)})")
    if unexpected:
        problems.append(f"unexpected keys ({_listing(unexpected)})")
    if shapes:
        problems.append(f"shape mismatches ({_listing(shapes)})")
    if problems:
        raise WeightsFileError(
            f"pretrained weights file {str(path)!r} does not match timm model "
            f"{model_name!r}: " + "; ".join(problems)
        )
    merged = dict(own)
    merged.update({k: state[k] for k in own if k in state})
    model.load_state_dict(merged, strict=True)


__all__ = ["WeightsFileError", "load_backbone_weights", "read_state_dict"]
