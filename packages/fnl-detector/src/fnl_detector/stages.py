"""Where a :class:`~fnl_detector.Predictor`'s time goes, stage by stage (``fnl bench --stages``).

The stages follow the detector's module tree, on either backend:

* PyTorch: forward hooks on the stage modules time each call (CPU work is synchronous);
  RoI-head work outside the listed sub-modules (box selection: per-class NMS, top-k) is the
  ``roi_heads`` time minus its children.
* ONNX Runtime: the session's own profiler times every node; the exported graph's node names
  follow the same module tree (``/roi_heads/box_pooler/RoiAlign_1``), and nodes the runtime
  inserts (``ReorderOutput_token_12``: layout changes of its blocked convolutions) count for the
  stage of the node run before them. ``graph overhead`` is the session's wall time not spent in
  nodes (scheduling, memory).

Both add ``outside the network`` (reading, resizing, results on the Python side) and
``chart pasting`` (``iuv=True``: :func:`fnl_detector.predictor.full_image_iuv`). Values are
medians over runs, in milliseconds; the stages' sum is close to, not equal to, the median
call.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: (stage, module paths in the detector). Order = report order; a node or module belongs to
#: the stage with the longest matching path.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("backbone", ("backbone",)),
    ("neck", ("neck",)),
    ("RPN + NMS", ("proposal_generator",)),
    ("box pooling", ("roi_heads.box_pooler",)),
    ("box head", ("roi_heads.box_head", "roi_heads.box_predictor")),
    ("box selection", ("roi_heads",)),
    ("DensePose pooling", ("roi_heads.densepose_pooler",)),
    ("DensePose head", ("roi_heads.densepose_head", "roi_heads.densepose_predictor")),
)
INPUT = "input (normalise, pad)"
OVERHEAD = "graph overhead"
OUTSIDE = "outside the network"
CHARTS = "chart pasting"


def _prefixes() -> list[tuple[str, str]]:
    """(node-name prefix, stage), longest first."""
    pairs = [("/" + p.replace(".", "/") + "/", s) for s, paths in STAGES for p in paths]
    return sorted(pairs, key=lambda item: -len(item[0]))


def node_stage(name: str, previous: str | None = None) -> str:
    """The stage of an ONNX node named ``name`` (``previous``: the stage of the node run before
    it, used for nodes the runtime inserted, whose names do not start with ``/``)."""
    if not name.startswith("/"):
        return previous or INPUT
    for prefix, stage in _prefixes():
        if name.startswith(prefix):
            return stage
    return INPUT


def onnx_profile_stages(events: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per ``model_run`` of an onnxruntime profile (its JSON events), milliseconds per stage
    (and :data:`OVERHEAD`: the run's wall time not spent in nodes)."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    nodes = sorted(
        (e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
        key=lambda e: e["ts"],
    )
    out = []
    for run in runs:
        start, end = run["ts"], run["ts"] + run["dur"]
        times: dict[str, float] = {}
        stage = None
        for e in nodes:
            if start <= e["ts"] <= end:
                stage = node_stage(e["name"][: -len("_kernel_time")], stage)
                times[stage] = times.get(stage, 0.0) + e["dur"] / 1e3
        times[OVERHEAD] = max(run["dur"] / 1e3 - sum(times.values()), 0.0)
        out.append(times)
    return out


def _medians(per_run: list[dict[str, float]]) -> dict[str, float]:
    names = [s for s, _ in STAGES] + [INPUT, OVERHEAD, OUTSIDE, CHARTS]
    return {
        n: round(statistics.median(r.get(n, 0.0) for r in per_run), 2)
        for n in names
        if any(n in r for r in per_run)
    }


def _time_charts(result: Any) -> float:
    from fnl_detector.predictor import full_image_iuv

    t0 = time.perf_counter()
    full_image_iuv(result)
    return (time.perf_counter() - t0) * 1e3


def _onnx_stages(predictor: Any, image: Any, runs: int) -> list[dict[str, float]]:
    from fnl_detector.export import MODEL_FILE, onnx_session

    backend = predictor.onnx
    with tempfile.TemporaryDirectory() as tmp:
        session = onnx_session(
            backend.folder / MODEL_FILE,
            predictor.options.threads,
            spin=False,
            profile_prefix=str(Path(tmp) / "profile"),
        )
        walls: list[float] = []
        own, backend.session = backend.session, session
        try:
            charts = []
            for _ in range(runs):
                t0 = time.perf_counter()
                result = predictor(image)
                walls.append((time.perf_counter() - t0) * 1e3)
                charts.append(_time_charts(result))
        finally:
            backend.session = own
        events = json.loads(Path(session.end_profiling()).read_text())
    per_run = onnx_profile_stages(events)
    for times, wall, chart in zip(per_run, walls, charts, strict=True):
        times[OUTSIDE] = max(wall - sum(times.values()), 0.0)
        times[CHARTS] = chart
    return per_run


def _torch_stages(predictor: Any, image: Any, runs: int) -> list[dict[str, float]]:
    model = predictor.model
    current: dict[str, float] = {}
    handles = []
    starts: dict[str, float] = {}

    def hook_pair(key: str) -> tuple[Callable, Callable]:
        def pre(module: Any, args: Any) -> None:
            starts[key] = time.perf_counter()

        def post(module: Any, args: Any, output: Any) -> None:
            current[key] = current.get(key, 0.0) + (time.perf_counter() - starts[key]) * 1e3

        return pre, post

    paths = [p for _, ps in STAGES for p in ps]
    for path in paths:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        pre, post = hook_pair(path)
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    per_run = []
    try:
        for _ in range(runs):
            current.clear()
            t0 = time.perf_counter()
            result = predictor(image)
            wall = (time.perf_counter() - t0) * 1e3
            module_ms = dict(current)
            heads = module_ms.pop("roi_heads", 0.0)
            times: dict[str, float] = {}
            for stage, stage_paths in STAGES:
                for p in stage_paths:
                    if p in module_ms:
                        times[stage] = times.get(stage, 0.0) + module_ms[p]
            children = sum(v for k, v in module_ms.items() if k.startswith("roi_heads."))
            times["box selection"] = max(heads - children, 0.0)
            times[OUTSIDE] = max(wall - sum(times.values()), 0.0)
            times[CHARTS] = _time_charts(result)
            per_run.append(times)
    finally:
        for h in handles:
            h.remove()
    return per_run


def stage_times(predictor: Any, image: Any, *, runs: int = 10) -> dict[str, float]:
    """Median milliseconds per stage of ``predictor(image)`` over ``runs`` calls, on the
    predictor's backend (see the module's docstring)."""
    if predictor.onnx is not None:
        per_run = _onnx_stages(predictor, image, runs)
    else:
        per_run = _torch_stages(predictor, image, runs)
    return _medians(per_run)


__all__ = ["STAGES", "node_stage", "onnx_profile_stages", "stage_times"]
