"""Fixtures of the fnl-detector tests: stand-in components and tiny synthetic batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detector_standins import standins

from fnl_core.structures import DensePoseAnnotation


@pytest.fixture
def tiny_components():
    with standins():
        yield


def fake_annotation(rng: np.random.Generator, points: int = 20, masks: bool = True):
    return DensePoseAnnotation(
        x=rng.uniform(0, 255, points),
        y=rng.uniform(0, 255, points),
        i=rng.integers(1, 25, points),
        u=rng.uniform(0, 1, points),
        v=rng.uniform(0, 1, points),
        masks=rng.integers(0, 15, (256, 256)).astype(np.uint8) if masks else None,
    )


def fake_batch(sizes=((160, 128), (128, 176)), seed: int = 0):
    """Images (float 0..255) with 1-2 people each, some without DensePose data."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for k, (h, w) in enumerate(sizes):
        images.append(torch.rand(3, h, w, generator=gen) * 255)
        boxes = torch.tensor([[10.0, 12.0, w * 0.6, h * 0.8], [w * 0.4, h * 0.3, w - 5.0, h - 4.0]])
        dp = [fake_annotation(rng, masks=k == 0), None if k == 1 else fake_annotation(rng)]
        targets.append(
            {
                "boxes": boxes,
                "labels": torch.ones(2, dtype=torch.int64),
                "iscrowd": torch.zeros(2, dtype=torch.int64),
                "densepose": dp,
            }
        )
    return images, targets
