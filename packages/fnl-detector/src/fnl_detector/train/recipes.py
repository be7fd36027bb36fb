"""Settings for training from scratch on the toy dataset on a CPU (``fnl demo`` and
docs/training.md's 20-minute run). No torch import.

The paper trains for a day on 8 GPUs from ImageNet weights; a CPU budget of minutes allows a
few hundred small steps from random weights, so this recipe trades the paper's settings for
speed and stability: trainable BatchNorm in the backbone (random frozen BN statistics would not
normalise anything), native toy resolution, fewer proposals, a larger LR with gradient clipping
(the DensePose U/V losses are sums over points and spike early).

Loss weights: the U/V losses are *sums* over all points of the batch. With the reference weight
0.1 their gradient dominates the clipped global norm and the fine chart-index loss does not
move (measured: it stays at the prior's entropy, ≈ ln 24, for 2800 iterations). U/V weight 0.01
and chart-index weight 1.0 let every DensePose term learn (index CE 3.5 → 1.8 in 530 steps).

Coarse segmentation: foreground/background (2 channels, detectron2 DensePose's current default)
instead of the paper's 15 coarse parts. From random weights the 15-way coarse head leaves half
of the annotated points predicted as background after 20 minutes; with 2 channels the same run
reaches mask AP 13.3 / GPS AP 1.4 / GPSm AP 5.4 instead of 5.4 / 0.1 / 1.3 (box AP 32.4 vs 32.3).

Threads: on a CPU shared with other work, torch's default of one OpenMP thread per core is
several times slower than one thread (threads spin at barriers waiting for a descheduled
sibling; measured 10.96 s vs 1.82 s per step at load 6 on 2 cores), so :func:`cpu_threads`
picks one thread when the machine is already busy.
"""

from __future__ import annotations

import os
from typing import Any

TOY_SIZE = 240
"""Short side of the toy images (320 × 240): native resolution. Measured against 160 px on the
20-minute run: mask AP 5.4 vs 2.5, GPSm AP 1.3 vs 0.3, box AP level (32.3 vs 31.9), with 17 %
fewer steps in the same time (3539 vs 4252)."""

#: Spec overrides applied to ``mobile_parsing_rcnn_b`` for CPU training on toy data. For
#: another spec only those whose key its components have apply (:func:`applicable_overrides`):
#: a third-party backbone may have no ``pretrained`` or ``norm`` option.
TOY_CPU_SPEC_OVERRIDES: list[str] = [
    "backbone.pretrained=false",
    "backbone.norm=bn",
    f"input.min_size_train=[{TOY_SIZE}]",
    f"input.min_size_test={TOY_SIZE}",
    "rpn.pre_nms_top_n_train=1000",
    "rpn.post_nms_top_n_train=500",
    "rpn.pre_nms_top_n_test=500",
    "rpn.post_nms_top_n_test=100",
    "test.detections_per_image=10",
    "densepose.loss.point_weight=0.01",
    "densepose.loss.part_weight=1.0",
    "densepose.predictor.coarse_channels=2",
]

#: Steps of ``fnl train --recipe cpu-toy`` when neither ``--iters`` nor ``--minutes`` is given
#: (the step count of docs/training.md's CPU example).
TOY_CPU_ITERS = 2000

#: Trainer options of that recipe (``TrainConfig`` fields).
TOY_CPU_TRAIN_OPTIONS: dict[str, Any] = {
    "batch_size": 2,
    "lr": 0.02,
    "warmup_iters": 30,
    "clip_grad_norm": 10.0,
    "log_period": 5,
}


def applicable_overrides(spec: dict[str, Any], overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split ``dotted.key=value`` overrides into those whose key ``spec`` (a spec dict with
    every option filled in, ``DetectorSpec.to_dict()``) has and those it lacks."""
    kept: list[str] = []
    skipped: list[str] = []
    for text in overrides:
        node: Any = spec
        for part in text.split("=", 1)[0].strip().split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        (skipped if node is _MISSING else kept).append(text)
    return kept, skipped


_MISSING = object()


def cpu_threads() -> int:
    """One thread when the 1-minute load average shows other work, else one per core."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on Windows
        return cores
    return 1 if load > 0.5 * cores else cores
