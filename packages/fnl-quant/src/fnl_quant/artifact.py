"""Saving and loading int8 models without unpickling code.

A quantized model is saved as two files in a directory:

* ``model_int8.pt``: its state dict (int8 weights with their scales, activation scales), read
  back with ``torch.load(..., weights_only=True)``, which only rebuilds tensors;
* ``quantization.json``: the quantizer's config and the list of quantized units.

Loading rebuilds the float model (the caller's job: same spec), re-applies the quantizer with
the saved unit list (no calibration), converts, and loads the state dict strictly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fnl_core import registry
from fnl_core.groups import QUANTIZERS
from fnl_core.spec import ComponentConfig
from fnl_quant.quantizers import quantization_plan, quiet

WEIGHTS_FILE = "model_int8.pt"
META_FILE = "quantization.json"
FORMAT_VERSION = 1


def state_dict_megabytes(model: nn.Module, path: str | Path) -> float:
    """Save ``model``'s state dict to ``path``; return the file size in MB (1e6 bytes)."""
    path = Path(path)
    torch.save(model.state_dict(), path)
    return path.stat().st_size / 1e6


def save_quantized(
    model: nn.Module,
    directory: str | Path,
    config: ComponentConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a converted model (from ``config``'s quantizer) to ``directory``."""
    plan = quantization_plan(model)
    if not plan or not plan.get("converted"):
        raise ValueError("save_quantized() needs a model returned by a quantizer's convert()")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / WEIGHTS_FILE)
    meta = {
        "format": FORMAT_VERSION,
        "quantizer": config.model_dump(mode="json"),
        "units": plan["units"],
        **(extra or {}),
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a directory written by save_quantized")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: unsupported format {meta.get('format')!r}, expected {FORMAT_VERSION}"
        )
    return meta


def load_quantized(float_model: nn.Module, directory: str | Path) -> nn.Module:
    """Rebuild the int8 model saved in ``directory`` on top of ``float_model`` (same spec).

    ``float_model``'s own weights do not matter: every value comes from the saved state dict.
    """
    meta = read_metadata(directory)
    spec = meta["quantizer"]
    cls = registry.get(QUANTIZERS, spec["type"])
    config = cls.model_validate(spec)
    quantizer = config.build()
    with quiet():
        prepared = quantizer.prepare(float_model, units=meta["units"])
        model = quantizer.convert(prepared)
    path = Path(directory) / WEIGHTS_FILE
    try:
        with warnings.catch_warnings():
            # torch rebuilds quantized tensors through its own deprecated TypedStorage; the
            # warning is about torch's code, not the file or the caller
            warnings.filterwarnings("ignore", "TypedStorage is deprecated", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from fnl_core.errors import WeightsError, checkpoint_load_reason

        raise WeightsError(
            f"{path}: not an int8 state dict FnL can read ({checkpoint_load_reason(exc)})"
        ) from None
    model.load_state_dict(state, strict=True)
    return model


__all__ = [
    "META_FILE",
    "WEIGHTS_FILE",
    "load_quantized",
    "read_metadata",
    "save_quantized",
    "state_dict_megabytes",
]
