"""Small stand-ins for the trainer tests: a dataset and a model following the detector contract.

They keep the trainer tests independent of the data, backbone and head packages (the isolated
fnl-detector test venv has none of them) and fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fnl_core.structures import DensePoseAnnotation, ImageRecord, InstanceAnnotation


class FakeDataset:
    """Images with one bright square each; the box is the square (a DensePoseDataset).

    With ``densepose`` each person also carries DensePose points and coarse masks (random, from
    a generator of their own), enough for the real detector's DensePose branch to train on.
    """

    def __init__(self, n: int = 12, size: int = 32, seed: int = 0, densepose: bool = False) -> None:
        rng = np.random.default_rng(seed)
        dp_rng = np.random.default_rng(seed + 1)
        self.gt_json = Path("unused.json")
        self.images: dict[int, np.ndarray] = {}
        self.records: list[ImageRecord] = []
        for k in range(n):
            s = int(rng.integers(6, 14) * size / 32)
            x, y = (int(v) for v in rng.integers(0, size - s, 2))
            img = np.zeros((size, size, 3), np.uint8)
            img[y : y + s, x : x + s] = 200
            self.images[k + 1] = img
            dp = _fake_densepose(dp_rng) if densepose else None
            ann = InstanceAnnotation(id=k + 1, bbox_xywh=(x, y, s, s), area=s * s, densepose=dp)
            self.records.append(ImageRecord(k + 1, f"{k}.png", size, size, [ann]))

    def load_image(self, record: ImageRecord) -> np.ndarray:
        return self.images[record.image_id]

    def hflip(self, record: ImageRecord, image: np.ndarray) -> tuple[ImageRecord, np.ndarray]:
        w = record.width
        anns = []
        for a in record.annotations:
            x, y, bw, bh = a.bbox_xywh
            dp = a.densepose
            if dp is not None:  # mirrored points and masks (chart ids kept: it is a fake)
                masks = None if dp.masks is None else dp.masks[:, ::-1].copy()
                dp = DensePoseAnnotation(x=256 - dp.x, y=dp.y, i=dp.i, u=dp.u, v=dp.v, masks=masks)
            anns.append(
                InstanceAnnotation(id=a.id, bbox_xywh=(w - x - bw, y, bw, bh), densepose=dp)
            )
        flipped = ImageRecord(record.image_id, record.file_name, record.height, w, anns)
        return flipped, image[:, ::-1].copy()


def _fake_densepose(rng: np.random.Generator, points: int = 20) -> DensePoseAnnotation:
    return DensePoseAnnotation(
        x=rng.uniform(0, 255, points),
        y=rng.uniform(0, 255, points),
        i=rng.integers(1, 25, points),
        u=rng.uniform(0, 1, points),
        v=rng.uniform(0, 1, points),
        masks=rng.integers(0, 15, (256, 256)).astype(np.uint8),
    )


class FakeDetector(nn.Module):
    """Regresses the normalised box of the first person; returns two loss terms.

    ``nan_at`` makes ``loss_box_reg`` NaN on that forward call (counted from 0).
    """

    def __init__(self, nan_at: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)
        self.nan_at = nan_at
        self.calls = 0

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        x = torch.stack([im / 255.0 for im in images])
        feat = torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        pred = self.fc(feat)
        if not self.training:
            return [{"boxes": p.reshape(1, 4)} for p in pred]
        tgt = torch.stack([t["boxes"][0] / im.shape[-1] for t, im in zip(targets, images)])
        reg = ((pred - tgt) ** 2).mean()
        if self.nan_at is not None and self.calls == self.nan_at:
            reg = reg * float("nan")
        self.calls += 1
        # a random draw, like RoI sampling: resume must restore the RNG for equal results
        weight = 0.01 * (1 + torch.rand(()))
        return {"loss_box_reg": reg, "loss_box_cls": pred.abs().mean() * weight}


def tiny_config(**kw):
    """A TrainConfig of 8 CPU steps (batch 4, LR 0.05 dropping at step 6); ``kw`` overrides."""
    from fnl_detector.train.config import TrainConfig

    base = dict(
        iters=8,
        batch_size=4,
        lr=0.05,
        steps=(6,),
        warmup_iters=2,
        log_period=2,
        checkpoint_period=100,
        device="cpu",
        seed=3,
    )
    return TrainConfig(**{**base, **kw})
