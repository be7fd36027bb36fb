"""fnl-detector: assembles DensePose detectors (Mobile Parsing R-CNN and friends) from specs.

Importing this package stays light (no torch): the model classes load on first use.

>>> from fnl_detector import build_detector
>>> model = build_detector("mobile_parsing_rcnn_b")  # doctest: +SKIP
>>> from fnl_detector import Predictor
>>> predictor = Predictor("mobile_parsing_rcnn_b", "b.safetensors")  # doctest: +SKIP
>>> result = predictor("photo.jpg")  # boxes, scores, labels, densepose  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from fnl_detector.build import build_detector
from fnl_detector.spec import DetectorSpec, load_spec

__all__ = [
    "DensePoseRCNN",
    "DetectorSpec",
    "Prediction",
    "Predictor",
    "build_detector",
    "load_spec",
]


def __getattr__(name: str) -> Any:
    if name == "DensePoseRCNN":
        from fnl_detector.modeling.detector import DensePoseRCNN

        return DensePoseRCNN
    if name in ("Predictor", "Prediction"):
        from fnl_detector import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
