"""Which model a command runs: ``--model NAME`` or ``--weights PATH [--spec SPEC]``.

Shared by the fnl-detector commands and ``fnl eval --model``. A named model (``fnl list
models``) supplies its spec (preset, spec file, or the spec stored in its weights) and its
weights, downloaded into the cache on first use. ``--weights`` alone takes the spec from the
file's safetensors metadata (``spec``, as ``fnl convert`` writes it) or from a ``spec.json``
next to it (a training run folder); reference ``.pth``/``.pkl`` checkpoints are converted on
load (:func:`fnl_detector.convert.load_weights`). Nothing here imports torch at module level.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnl_core.errors import InputError


@dataclass(frozen=True)
class ResolvedModel:
    """A spec (a dict ``load_spec`` accepts), a weights file (None: untrained) and a label."""

    spec: dict[str, Any]
    weights: Path | None
    label: str


def add_model_arguments(
    parser: argparse.ArgumentParser, *, weights: bool = True, spec: bool = True
) -> None:
    """Add ``--model NAME`` and, unless the command has its own, ``--weights`` / ``--spec``."""
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="a named model (fnl list models): its spec and weights, downloaded into the cache "
        "on first use; with --weights PATH, the card's spec and your local copy of the weights",
    )
    if weights:
        parser.add_argument(
            "--weights",
            metavar="PATH",
            help="FnL .safetensors weights or a reference .pth/.pkl checkpoint (converted on load)",
        )
    if spec:
        parser.add_argument(
            "--spec",
            metavar="SPEC",
            help="spec file or preset (default: the spec stored in the weights file, or spec.json "
            "next to it)",
        )


def spec_next_to_weights(weights: Path) -> dict[str, Any] | None:
    """The spec stored with a weights file: safetensors metadata ``spec``, else ``spec.json``
    beside it or in the run folder above ``checkpoints/iter_*/``; None if there is none."""
    from fnl_core.models import safetensors_metadata
    from fnl_core.spec import read_spec_file

    if weights.suffix.lower() == ".safetensors" and weights.is_file():
        text = safetensors_metadata(weights).get("spec")
        if text:
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{weights}: the 'spec' metadata is not valid JSON: {exc}"
                ) from exc
    for candidate in (weights.parent / "spec.json", weights.parent.parent.parent / "spec.json"):
        if candidate.is_file():
            return read_spec_file(candidate)
    return None


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
    found = spec_next_to_weights(weights) if weights is not None else None
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
    args: argparse.Namespace, *, require_weights: bool = True, progress: bool = True
) -> ResolvedModel:
    """The model chosen by ``args.model`` / ``args.weights`` / ``args.spec``.

    Rules: ``--model`` fixes the spec, so it cannot be combined with ``--spec``; with
    ``--weights`` it uses that local file instead of downloading. Without ``--model``,
    ``--weights`` needs ``--spec`` unless the weights carry their spec. ``--spec`` alone gives
    an untrained model, allowed only where ``require_weights`` is false.
    """
    from fnl_core.models import fetch_weights, get_card

    name = getattr(args, "model", None)
    weights_arg = getattr(args, "weights", None)
    spec_arg = getattr(args, "spec", None)
    weights = Path(weights_arg) if weights_arg else None
    if weights is not None and not weights.exists():
        raise FileNotFoundError(f"--weights {weights}: no such file")
    if name:
        if spec_arg:
            raise InputError(
                f"--model {name} already fixes the spec; drop --spec {spec_arg}, or use "
                "--weights PATH --spec SPEC instead of --model"
            )
        card = get_card(name)
        if weights is None:
            weights = fetch_weights(card, progress=progress)
        return ResolvedModel(_card_spec(card, weights), weights, name)
    if weights is None:
        if require_weights or not spec_arg:
            raise InputError(
                "no model given: pass --model NAME (fnl list models) or --weights PATH "
                "[--spec SPEC]" + ("" if require_weights else ", or a spec for an untrained model")
            )
        return ResolvedModel(_spec_dict(spec_arg), None, str(spec_arg))
    if spec_arg:
        return ResolvedModel(_spec_dict(spec_arg), weights, str(weights))
    found = spec_next_to_weights(weights)
    if found is None:
        raise InputError(
            f"--weights {weights}: no --spec given, and the file carries no 'spec' metadata and "
            f"has no spec.json beside it; pass --spec SPEC (a preset name or spec file)"
        )
    return ResolvedModel(found, weights, str(weights))


def build_model(
    resolved: ResolvedModel, overrides: list[str] | None = None, device: Any = "cpu"
) -> Any:
    """Build the resolved detector, load its weights (if any) and put it in eval mode."""
    from fnl_detector.build import build_detector
    from fnl_detector.convert import load_weights
    from fnl_detector.spec import load_spec

    model = build_detector(load_spec(resolved.spec, overrides or []))
    if resolved.weights is not None:
        load_weights(model, resolved.weights)
    return model.to(device).eval()


__all__ = [
    "ResolvedModel",
    "add_model_arguments",
    "build_model",
    "model_spec",
    "resolve_model",
    "spec_next_to_weights",
]
