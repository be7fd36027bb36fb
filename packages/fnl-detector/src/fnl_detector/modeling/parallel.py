"""Run independent single-threaded CPU ops side by side at inference.

torchvision's CPU kernels for ``roi_align``, ``roi_pool`` and ``nms`` use one core whatever
``torch.get_num_threads()`` says, and they dominate a light detector's latency (Mobile B at
512 px: ``roi_align`` on 1000 proposals is a quarter of the forward pass). Those ops release the
GIL, so splitting the work into independent pieces (groups of RoIs, pyramid levels) and running
the pieces on a small thread pool uses the cores torch was told it may use. Each piece is
computed by the same kernel on the same inputs, so results are bit-identical to the serial call.

Pieces must be small enough that nothing inside them reaches an OpenMP parallel region
(ATen only parallelises element-wise work above :data:`ATEN_GRAIN_SIZE` elements): a pool
thread that enters one gets an OpenMP team of its own, libgomp then counts more threads than
cores and stops spinning between parallel regions, and every later op in the process pays
for it (measured: Mobile B's backbone 38 -> 50-65 ms). Callers slice their inputs in the
calling thread and give the pool threads only kernel calls with small outputs.

Only used when it cannot change behaviour: CPU tensors, gradients off, more than one torch
thread, not tracing/scripting/exporting. Otherwise everything runs serially in the caller, as it
does after ``set_parallel_ops(False)`` (e.g. when several inference processes share the cores).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import Tensor
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import batched_nms, nms

T = TypeVar("T")

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()
_IN_WORKER = threading.local()
_ENABLED = True
#: ATen's ``at::internal::GRAIN_SIZE``: element-wise work below it runs in the calling thread.
ATEN_GRAIN_SIZE = 32768
#: ``batched_nms`` on CPU runs one NMS per group above this many box coordinates (torchvision).
_VANILLA_NMS_CUTOFF = 4000


def set_parallel_ops(enabled: bool) -> bool:
    """Allow (default) or forbid running pieces side by side; returns the previous setting."""
    global _ENABLED
    previous, _ENABLED = _ENABLED, bool(enabled)
    return previous


def parallel_workers(device: torch.device) -> int:
    """How many pieces to run at once on ``device`` now (1 = run serially)."""
    if not _ENABLED or device.type != "cpu" or torch.is_grad_enabled():
        return 1
    if getattr(_IN_WORKER, "active", False):
        return 1
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return 1
    if torch.onnx.is_in_onnx_export():
        return 1
    return max(1, torch.get_num_threads())


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or workers > _POOL_SIZE:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(workers, thread_name_prefix="fnl-cpu")
            _POOL_SIZE = workers
        return _POOL


def run_pieces(
    fn: Callable[..., T],
    pieces: Sequence[tuple],
    workers: int,
    costs: Sequence[float] | None = None,
) -> list[T]:
    """``[fn(*p) for p in pieces]``, shared out over ``workers`` threads if > 1.

    Each thread gets one run of pieces (one hand-off per thread, not per piece): contiguous
    runs of equal length, or with ``costs`` (estimated work per piece) the longest pieces first,
    each to the least loaded thread. Threads run with gradients off, and in inference mode if the
    caller is. Results come back in the order of ``pieces``.
    """
    if workers <= 1 or len(pieces) <= 1:
        return [fn(*p) for p in pieces]
    inference = torch.is_inference_mode_enabled()
    if costs is None:
        runs = [list(range(len(pieces)))[s] for s in split_evenly(len(pieces), workers)]
    else:
        if len(costs) != len(pieces):
            raise ValueError(f"got {len(costs)} costs for {len(pieces)} pieces")
        runs = [[] for _ in range(min(workers, len(pieces)))]
        loads = [0.0] * len(runs)
        for i in sorted(range(len(pieces)), key=lambda i: -costs[i]):
            k = loads.index(min(loads))
            runs[k].append(i)
            loads[k] += costs[i]

    def call(run: list[int]) -> list[T]:
        _IN_WORKER.active = True
        try:
            with torch.inference_mode(inference), torch.no_grad():
                return [fn(*pieces[i]) for i in run]
        finally:
            _IN_WORKER.active = False

    results: list[T | None] = [None] * len(pieces)
    for run, outs in zip(runs, _pool(len(runs)).map(call, runs)):
        for i, y in zip(run, outs):
            results[i] = y
    return results  # type: ignore[return-value]


def split_evenly(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices covering ``range(n)`` with sizes differing by at most 1.

    No slices for ``n == 0``; ``parts`` is clamped to ``1..n``.
    """
    if n <= 0:
        return []
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    slices, start = [], 0
    for k in range(parts):
        stop = start + base + (1 if k < extra else 0)
        slices.append(slice(start, stop))
        start = stop
    return slices


def batched_nms_by_group(
    boxes: Tensor,
    scores: Tensor,
    groups: Tensor,
    iou_threshold: float,
    *,
    num_groups: int | None = None,
) -> Tensor:
    """``torchvision.ops.batched_nms`` with its per-group NMS calls run in parallel on CPU.

    Same result as ``batched_nms``: below its size cutoff (and whenever running in parallel
    is not possible) this *is* ``batched_nms``; above it, it runs torchvision's per-group
    algorithm (NMS per group, keep the union, sort by score) with the groups side by side.
    When tracing with ``num_groups`` (groups are ``0 .. num_groups - 1``), the per-group
    algorithm unrolled over the groups: one ONNX ``NonMaxSuppression`` per group instead of
    ``batched_nms``'s coordinate offsets, which shift the boxes by the largest coordinate.
    """
    if num_groups is not None and torch.jit.is_tracing():
        members = [torch.where(groups == g)[0] for g in range(num_groups)]
        kept = [i[nms(boxes[i], scores[i], iou_threshold)] for i in members]
        keep = torch.cat(kept) if num_groups > 1 else kept[0]
        return keep[scores[keep].topk(_topk_min(scores[keep], 2**31 - 1, 0))[1]]
    workers = parallel_workers(boxes.device)
    if workers <= 1 or boxes.numel() <= _VANILLA_NMS_CUTOFF:
        return batched_nms(boxes, scores, groups, iou_threshold)
    members = [torch.where(groups == g)[0] for g in torch.unique(groups)]
    kept = run_pieces(
        nms,
        [(boxes[i], scores[i], iou_threshold) for i in members],
        workers,
        costs=[float(i.numel()) ** 2 for i in members],  # NMS is quadratic in the worst case
    )
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for idx, k in zip(members, kept):
        keep_mask[idx[k]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]
