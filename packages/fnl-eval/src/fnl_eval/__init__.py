"""fnl-eval: GPS / GPSm / box / mask AP of DensePose results on pycocotools' COCOeval.

Entry points: :class:`fnl_eval.config.DensePoseEvaluatorConfig` (``fnl.evaluators``:
``densepose_coco``), :class:`fnl_eval.config.SMPLSurfaceConfig` (``fnl.surfaces``: ``smpl``),
``fnl eval`` (:mod:`fnl_eval.cli`). The results format and its encoder live in
:mod:`fnl_eval.results`. Nothing here imports torch; numpy and friends load on first use, so
``fnl --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DensePoseEvaluator", "decode_iuv", "encode_iuv", "make_result"]


def __getattr__(name: str) -> Any:
    if name in ("decode_iuv", "encode_iuv", "make_result"):
        from fnl_eval import results

        return getattr(results, name)
    if name == "DensePoseEvaluator":
        from fnl_eval.evaluator import DensePoseEvaluator

        return DensePoseEvaluator
    raise AttributeError(f"module 'fnl_eval' has no attribute {name!r}")
