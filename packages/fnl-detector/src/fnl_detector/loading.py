"""Getting a model: which spec and weights to use, and the detector built from them.

Every command, the :class:`~fnl_detector.Predictor`, evaluation and the scripts get their model
here:

* :func:`resolve_model` turns ``--model NAME`` / ``--weights PATH`` / ``--spec SPEC`` (as
  keywords) into a :class:`ResolvedModel`. A named model (``fnl list models``) supplies its spec
  (preset, spec file, or the spec stored in its weights) and its weights, downloaded into the
  cache on first use. Weights alone bring their spec (:func:`spec_from_weights`).
* :func:`load_model` builds the spec's detector and loads the weights: FnL ``.safetensors``,
  reference ``.pth``/``.pkl`` checkpoints (converted on load, :func:`load_weights`), or the int8
  folder written by ``fnl quantize``.

Nothing here imports torch at module level: commands resolve their model before the slow
imports, so a wrong name fails at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnl_core.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fnl_detector.convert import KeyMapping

#: Files of an int8 model written by ``fnl quantize`` (fnl_quant.artifact).
INT8_WEIGHTS, INT8_META = "model_int8.pt", "quantization.json"


@dataclass(frozen=True)
class ResolvedModel:
    """A spec (a dict ``load_spec`` accepts), weights (None: untrained) and a label."""

    spec: dict[str, Any]
    weights: Path | None
    label: str


def select_device(
    device: str | torch.device = "auto", local_rank: int | None = None
) -> torch.device:
    """``"auto"``: CUDA when torch sees a GPU, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    ``local_rank`` picks the GPU of a distributed process for ``"cuda"``/``"auto"``."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was requested but torch sees no CUDA device")
    if not device.startswith(("cuda", "cpu")):
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(device)


def int8_directory(weights: str | Path) -> Path | None:
    """The folder of an int8 model of ``fnl quantize`` named by ``weights`` (that folder or its
    ``model_int8.pt``), or None for float weights."""
    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    if (folder / INT8_META).is_file() and (path.is_dir() or path.name == INT8_WEIGHTS):
        return folder
    return None


def _spec_files(weights: Path) -> list[Path]:
    """Where a spec.json of ``weights`` may be: its folder (a run folder, an int8 folder of
    ``fnl quantize``) and the run folder of a checkpoint (``RUN/checkpoints/iter_N/``)."""
    folder = weights if weights.is_dir() else weights.parent
    return [folder / "spec.json", folder.parent.parent / "spec.json"]


def spec_from_weights(weights: str | Path) -> dict[str, Any] | None:
    """The spec stored with ``weights``, or None when there is none.

    Looked up in this order: the ``spec`` entry of a safetensors file's metadata (``fnl
    convert``, ``fnl train`` and the model zoo write it), then ``spec.json`` in the weights'
    folder or in the run folder of a checkpoint (see :func:`_spec_files`).
    """
    from fnl_core.models import safetensors_metadata
    from fnl_core.spec import read_spec_file

    path = Path(weights)
    if path.suffix.lower() == ".safetensors" and path.is_file():
        text = safetensors_metadata(path).get("spec")
        if text:
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: the 'spec' metadata is not valid JSON: {exc}") from exc
    found = next((c for c in _spec_files(path) if c.is_file()), None)
    return read_spec_file(found) if found is not None else None


def load_weights(model: nn.Module, path: str | Path) -> KeyMapping:
    """Load FnL ``.safetensors`` weights or a reference ``.pth``/``.pkl`` checkpoint into
    ``model``, mapping reference names to FnL's (:mod:`fnl_detector.convert`). Strict: any
    missing, unexpected or mis-shaped key raises :class:`~fnl_detector.convert.ConversionError`
    and nothing is loaded. Returns how the keys were mapped."""
    from fnl_detector.convert import convert_state_dict, read_checkpoint

    state, mapping = convert_state_dict(read_checkpoint(path), model)
    model.load_state_dict(state, strict=True)
    return mapping


def load_model(
    spec: Any = None,
    weights: str | Path | None = None,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The detector of ``spec`` (preset name, spec file, dict, DetectorSpec; None: the one
    stored with the weights) with ``weights`` loaded (float weights, see :func:`load_weights`,
    or an int8 model of ``fnl quantize``; None: untrained), in eval mode on ``device``."""
    from fnl_detector.build import build_detector
    from fnl_detector.spec import load_spec

    if spec is None:
        if weights is None:
            raise InputError("a spec (preset name or spec file) or weights are required")
        spec = spec_from_weights(weights)
        if spec is None:
            raise InputError(
                f"no spec given for {weights}: expected --spec, a safetensors file with the spec "
                f"in its metadata (as fnl convert writes), or a spec.json at "
                f"{' or '.join(str(c) for c in _spec_files(Path(weights)))}"
            )
    model = build_detector(load_spec(spec, list(overrides)))
    if weights is not None:
        int8 = int8_directory(weights)
        if int8 is not None:
            try:
                from fnl_quant.artifact import load_quantized
            except ImportError:
                raise InputError(
                    f"{weights}: an int8 model of fnl quantize; reading it needs fnl-quant "
                    "installed"
                ) from None
            model = load_quantized(model.eval(), int8)
        else:
            if not Path(weights).is_file():
                raise InputError(f"{weights}: no such weights file")
            load_weights(model, weights)
    return model.to(select_device(device)).eval()


def _spec_dict(spec: str) -> dict[str, Any]:
    from fnl_detector.spec import load_spec

    return load_spec(spec).to_dict()


def _card_spec(card: Any, weights: Path | None) -> dict[str, Any]:
    if card.preset is not None:
        return {"preset": card.preset}
    path = card.packaged_spec()
    if path is not None:
        if not path.is_file():
            raise InputError(f"model {card.name}: its spec file {path} is missing")
        return _spec_dict(str(path))
    found = spec_from_weights(weights) if weights is not None else None
    if found is None:
        raise InputError(
            f"model {card.name}: the card names no preset or spec, and its weights {weights} "
            "carry no 'spec' metadata; pass --spec SPEC"
        )
    return found


def model_spec(name: str, *, progress: bool = True) -> dict[str, Any]:
    """The spec of named model ``name`` (downloads the weights only if the spec is in them)."""
    from fnl_core.models import fetch_weights, get_card

    card = get_card(name)
    needs_weights = card.preset is None and card.spec is None
    return _card_spec(card, fetch_weights(card, progress=progress) if needs_weights else None)


def resolve_model(
    *,
    model: str | None = None,
    weights: str | Path | None = None,
    spec: str | None = None,
    require_weights: bool = True,
    progress: bool = True,
) -> ResolvedModel:
    """The model chosen by ``--model`` / ``--weights`` / ``--spec``.

    Rules: ``model`` (a name) fixes the spec, so it cannot be combined with ``spec``; with
    ``weights`` it uses that local file (or int8 folder) instead of downloading. Without
    ``model``, ``weights`` needs ``spec`` unless the weights carry their spec
    (:func:`spec_from_weights`). ``spec`` alone gives an untrained model, allowed only where
    ``require_weights`` is false.
    """
    from fnl_core.models import fetch_weights, get_card

    path = Path(weights) if weights else None
    if path is not None and not path.exists():
        raise FileNotFoundError(f"--weights {path}: no such file")
    if model:
        if spec:
            raise InputError(
                f"--model {model} already fixes the spec; drop --spec {spec}, or use "
                "--weights PATH --spec SPEC instead of --model"
            )
        card = get_card(model)
        if path is None:
            path = fetch_weights(card, progress=progress)
        return ResolvedModel(_card_spec(card, path), path, model)
    if path is None:
        if require_weights or not spec:
            raise InputError(
                "no model given: pass --model NAME (fnl list models) or --weights PATH "
                "[--spec SPEC]" + ("" if require_weights else ", or a spec for an untrained model")
            )
        return ResolvedModel(_spec_dict(spec), None, str(spec))
    if spec:
        return ResolvedModel(_spec_dict(spec), path, str(path))
    found = spec_from_weights(path)
    if found is None:
        raise InputError(
            f"--weights {path}: no --spec given, and the file carries no 'spec' metadata and "
            f"has no spec.json beside it; pass --spec SPEC (a preset name or spec file)"
        )
    return ResolvedModel(found, path, str(path))


__all__ = [
    "INT8_META",
    "INT8_WEIGHTS",
    "ResolvedModel",
    "int8_directory",
    "load_model",
    "load_weights",
    "model_spec",
    "resolve_model",
    "select_device",
    "spec_from_weights",
]
