"""Reference checkpoints (detectron2, DensePoseFnL) -> FnL detector weights.

This module reads checkpoint files and maps their keys; loading them into a model is
:func:`fnl_detector.loading.load_weights`, writing FnL weights :mod:`fnl_detector.weights`.

Supported sources:

* detectron2 / DensePoseFnL ``.pth`` files (``torch.save``; read with ``weights_only=True``):
  a dict whose ``"model"`` entry is the state dict (training checkpoints also carry
  ``"optimizer"``, ``"scheduler"``, ``"iteration"``; they are ignored);
* detectron2 model-zoo ``.pkl`` files (a pickle of ``{"model": {name: numpy array}}``), read with
  an unpickler that only rebuilds numpy arrays: nothing in the file is executed;
* FnL's own ``.safetensors`` weights (and ``.pth`` state dicts with FnL names).

Key layout (reference -> FnL):

* ``backbone.bottom_up.*`` -> ``backbone.body.*`` (timm names are unchanged; detectron2's own
  ResNet names ``stem.conv1``, ``res2.0.conv1.norm``, ``res2.0.shortcut`` become timm's
  ``conv1``/``bn1``, ``layer1.0.conv1``/``bn1``, ``layer1.0.downsample.0``/``.1``);
* every other ``backbone.*`` (FPN ``fpn_lateral2``..., BiFPN ``l2``, ``p4_tr``, ``fuse_*``...)
  -> ``neck.*``;
* ``proposal_generator.rpn_head.*`` and ``roi_heads.*`` keep their names: FnL's RPN head, box
  head, box predictor (detectron2 class order: person first, background last), DensePose head
  and predictor use detectron2's parameter names and layouts, so no tensor is reordered;
* ``num_batches_tracked`` of layers that FnL keeps as frozen BatchNorm (no such buffer) are
  dropped, and those FnL has but the checkpoint lacks are set to 0; inference never reads them;
* old detectron2 checkpoints store ``pixel_mean``/``pixel_std``: they are compared with the
  model's normalisation (``input.pixel_mean``/``pixel_std``), not loaded.

Nothing is loaded partially: a checkpoint that does not fit the model fails with every missing,
unexpected and mis-shaped key. Weights are never altered (no BGR/RGB flip: the channel order is
the spec's ``input.format``).
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnl_core.errors import WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Checkpoint formats ``fnl convert --from`` accepts (DensePoseFnL writes detectron2's format).
SOURCE_FORMATS = ("detectron2",)
_NORMALISATION_KEYS = ("pixel_mean", "pixel_std")
_SHOW = 20


class ConversionError(WeightsError):
    """A checkpoint cannot be read, or does not fit the model."""


# --------------------------------------------------------------------------- reading files
#: (module, name) pairs a model-zoo pickle may name: numpy array/scalar reconstruction only.
_PICKLE_ALLOWED = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("collections", "OrderedDict"),
    }
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and plain containers and refuses everything else."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise ConversionError(
                f"{self.path}: the pickle needs {module}.{name}, which FnL does not load "
                "(only numpy arrays are read from .pkl files, so that no code in the file "
                "runs). If you trust the file, re-save it as a weights-only torch file:\n"
                "  python -c \"import pickle, torch; d = pickle.load(open('IN.pkl', 'rb'), "
                "encoding='latin1'); torch.save({'model': {k: torch.as_tensor(v) for k, v in "
                "d['model'].items()}}, 'OUT.pth')\"\n"
                "and convert OUT.pth instead."
            )
        import numpy as np

        if module == "collections":
            return OrderedDict
        if module == "numpy":
            return getattr(np, name)
        try:
            from numpy import _core as core  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy import core  # type: ignore[no-redef]
        return getattr(getattr(core, module.rsplit(".", 1)[-1]), name)


def _read_pickle(path: Path) -> Any:
    with path.open("rb") as f:
        try:
            return _NumpyOnlyUnpickler(f, path).load()
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(f"{path}: not a readable pickle file: {exc}") from exc


#: How a file written by ``torch.save`` begins: a zip archive, or (before PyTorch 1.6) a pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _read_torch(path: Path) -> Any:
    import torch

    from fnl_core.errors import checkpoint_load_reason

    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith(_TORCH_MAGIC):
        raise ConversionError(
            f"{path}: not a PyTorch checkpoint (a file written by torch.save begins as a zip "
            "archive or a pickle; this one does not)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConversionError(
            f"{path}: not a checkpoint FnL can read ({checkpoint_load_reason(exc)}). FnL reads "
            "checkpoints that hold only tensors and plain containers; one with pickled objects "
            "must be re-saved as {'model': state_dict} in an environment you trust."
        ) from None


def _read_safetensors(path: Path) -> dict[str, Any]:
    from fnl_detector.weights import read_weights

    try:
        return read_weights(path)
    except WeightsError as exc:
        raise ConversionError(str(exc)) from exc


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a ``.pth``/``.pt``, ``.pkl`` or ``.safetensors`` file, as tensors."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        obj: Any = _read_safetensors(path)
    elif suffix == ".pkl":
        obj = _read_pickle(path)
    elif suffix in (".pth", ".pt", ".bin"):
        obj = _read_torch(path)
    else:
        raise ConversionError(
            f"{path}: unknown checkpoint type {suffix!r}; expected .pth/.pt (torch.save), .pkl "
            "(detectron2 model zoo) or .safetensors (FnL)"
        )
    return _to_tensors(_state_dict_of(obj, path), path)


def _state_dict_of(obj: Any, path: Path) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a dict, got {type(obj).__name__}")
    if "blobs" in obj and "model" not in obj:
        raise ConversionError(
            f"{path}: a Detectron (Caffe2) 'blobs' checkpoint; FnL reads detectron2 checkpoints "
            "(a 'model' entry with detectron2 names)"
        )
    for entry in ("model", "state_dict"):
        if isinstance(obj.get(entry), Mapping):
            obj = obj[entry]
            break
    keys = list(obj)
    if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _to_tensors(state: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    import numpy as np
    import torch

    out: dict[str, torch.Tensor] = {}
    bad = []
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            out[key] = value
        elif isinstance(value, (np.ndarray, np.generic)):
            out[key] = torch.from_numpy(np.array(value))
        else:
            bad.append(f"{key} ({type(value).__name__})")
    if bad:
        raise ConversionError(f"{path}: entries that are not tensors: {', '.join(bad[:_SHOW])}")
    if not out:
        raise ConversionError(f"{path}: the checkpoint holds no tensors")
    return out


# --------------------------------------------------------------------------- key mapping
_D2_RESNET_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"^stem\.conv1\.norm\."), lambda m: "bn1."),
    (re.compile(r"^stem\.conv1\."), lambda m: "conv1."),
    (
        re.compile(r"^res(\d)\.(\d+)\.shortcut\.norm\."),
        lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1.",
    ),
    (
        re.compile(r"^res(\d)\.(\d+)\.shortcut\."),
        lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0.",
    ),
    (
        re.compile(r"^res(\d)\.(\d+)\.conv(\d)\.norm\."),
        lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.",
    ),
    (
        re.compile(r"^res(\d)\.(\d+)\.conv(\d)\."),
        lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.",
    ),
]


def d2_resnet_to_timm(name: str) -> str:
    """detectron2 ResNet parameter name -> timm ResNet name (unchanged if not a d2 name)."""
    for pattern, repl in _D2_RESNET_RULES:
        m = pattern.match(name)
        if m:
            return repl(m) + name[m.end() :]
    return name


def candidate_keys(key: str) -> list[str]:
    """FnL state-dict keys a reference key may land on, most specific first."""
    out = [key]
    if key.startswith("backbone.bottom_up."):
        rest = key[len("backbone.bottom_up.") :]
        timm_rest = d2_resnet_to_timm(rest)
        out += [f"backbone.body.{rest}", f"backbone.{rest}"]
        out += [f"backbone.body.{timm_rest}", f"backbone.{timm_rest}"]
    elif key.startswith("backbone."):
        out.append("neck." + key[len("backbone.") :])
    return list(dict.fromkeys(out))


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


@dataclass
class KeyMapping:
    """How the keys of a checkpoint land on a model's state dict.

    ``mapped``: FnL key -> checkpoint key. ``dropped``: checkpoint ``num_batches_tracked``
    counters with no FnL buffer. ``filled``: FnL counters absent from the checkpoint (set to 0).
    ``normalisation``: checkpoint ``pixel_mean``/``pixel_std`` (checked, not loaded).
    ``missing``, ``unexpected`` and ``mismatched`` (checkpoint key, FnL key, their shapes) make
    the mapping fail.
    """

    mapped: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)
    normalisation: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=list
    )
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.errors)

    def summary(self) -> str:
        parts = [f"{len(self.mapped)} tensors mapped"]
        if self.dropped:
            parts.append(f"{len(self.dropped)} unused num_batches_tracked dropped")
        if self.filled:
            parts.append(f"{len(self.filled)} num_batches_tracked set to 0")
        if self.normalisation:
            parts.append(f"{', '.join(self.normalisation)} checked against the spec")
        return ", ".join(parts)

    def describe(self) -> str:
        """Every problem, one per line (at most 20 per kind, with the count)."""
        lines = []

        def block(title: str, items: list[str]) -> None:
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {x}" for x in items[:_SHOW])
                if len(items) > _SHOW:
                    lines.append(f"  ... and {len(items) - _SHOW} more")

        block("missing (in the model, not in the checkpoint)", self.missing)
        block(
            "unexpected (in the checkpoint, nowhere in the model)",
            [f"{k} -> tried {', '.join(candidate_keys(k)[1:]) or k}" for k in self.unexpected],
        )
        block(
            "mis-shaped",
            [f"{s} {list(a)} -> {t} {list(b)}" for s, t, a, b in self.mismatched],
        )
        block("other problems", self.errors)
        return "\n".join(lines)


def map_keys(
    source_shapes: Mapping[str, Iterable[int]], target_shapes: Mapping[str, Iterable[int]]
) -> KeyMapping:
    """Match checkpoint keys to model keys by name (see :func:`candidate_keys`) and shape."""
    target = {k: tuple(s) for k, s in target_shapes.items()}
    result = KeyMapping()
    claimed: dict[str, str] = {}
    for key, shape in source_shapes.items():
        if key in _NORMALISATION_KEYS:
            result.normalisation.append(key)
            continue
        hit = next((c for c in candidate_keys(key) if c in target), None)
        if hit is None:
            (result.dropped if _is_counter(key) else result.unexpected).append(key)
            continue
        if hit in claimed:
            result.errors.append(f"{key} and {claimed[hit]} both map to {hit}")
            continue
        claimed[hit] = key
        if tuple(shape) != target[hit]:
            result.mismatched.append((key, hit, tuple(shape), target[hit]))
            continue
        result.mapped[hit] = key
    for key in target:
        if key not in claimed:
            (result.filled if _is_counter(key) else result.missing).append(key)
    return result


def _check_normalisation(
    state: Mapping[str, torch.Tensor], model: nn.Module, mapping: KeyMapping
) -> None:
    transform = getattr(model, "transform", None)
    for key in mapping.normalisation:
        ours = getattr(transform, key, None)
        if ours is None:
            continue
        theirs = state[key].reshape(-1).to(ours.dtype)
        if theirs.shape != ours.reshape(-1).shape or not bool(
            (theirs - ours.reshape(-1)).abs().max() < 1e-3
        ):
            field_name = "input." + key
            mapping.errors.append(
                f"the checkpoint was trained with {key} {theirs.tolist()} but the spec has "
                f"{field_name} = {ours.reshape(-1).tolist()}; set {field_name} (and "
                "input.format: BGR for detectron2's MSRA ResNet models) to match"
            )


def convert_state_dict(
    state: Mapping[str, torch.Tensor], model: nn.Module
) -> tuple[dict[str, torch.Tensor], KeyMapping]:
    """The model's state dict filled from a reference (or FnL) one; fails on any mismatch."""
    import torch

    own = model.state_dict()
    mapping = map_keys(
        {k: tuple(v.shape) for k, v in state.items()}, {k: tuple(v.shape) for k, v in own.items()}
    )
    _check_normalisation(state, model, mapping)
    if not mapping.ok:
        raise ConversionError("the checkpoint does not fit the model:\n" + mapping.describe())
    out: dict[str, torch.Tensor] = {}
    for key, ref in own.items():
        if key in mapping.mapped:
            value = state[mapping.mapped[key]]
            if value.dtype != ref.dtype and value.is_floating_point() != ref.is_floating_point():
                raise ConversionError(
                    f"{mapping.mapped[key]}: dtype {value.dtype} cannot become {ref.dtype} ({key})"
                )
            out[key] = value.detach().to(dtype=ref.dtype).contiguous()
        else:
            out[key] = torch.zeros_like(ref)
    return out, mapping


# --------------------------------------------------------------------------- converting
def convert_checkpoint(
    source: str | Path,
    spec: Any,
    out: str | Path,
    *,
    overrides: list[str] | None = None,
    source_format: str = "detectron2",
) -> KeyMapping:
    """Convert a reference checkpoint for ``spec`` (preset name, spec file, dict or
    :class:`~fnl_detector.spec.DetectorSpec`) and write ``out`` (safetensors)."""
    import json

    import torch

    from fnl_detector.build import build_detector
    from fnl_detector.spec import load_spec
    from fnl_detector.weights import save_weights

    if source_format not in SOURCE_FORMATS:
        raise ConversionError(
            f"unknown source format {source_format!r}; expected one of {', '.join(SOURCE_FORMATS)}"
        )
    loaded = load_spec(spec, overrides or [])
    model = build_detector(loaded)
    state, mapping = convert_state_dict(read_checkpoint(source), model)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        saved = model.state_dict()
    save_weights(
        saved,
        out,
        {
            "source": Path(source).name,
            "source_format": source_format,
            "spec": json.dumps(loaded.to_dict(), sort_keys=True),
        },
    )
    return mapping


__all__ = [
    "SOURCE_FORMATS",
    "ConversionError",
    "KeyMapping",
    "candidate_keys",
    "convert_checkpoint",
    "convert_state_dict",
    "d2_resnet_to_timm",
    "map_keys",
    "read_checkpoint",
]
