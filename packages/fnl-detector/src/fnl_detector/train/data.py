"""Training data: a deterministic sample order and the records → (image, target) conversion.

The order is a pure function of (seed, global sample number): epoch ``e`` visits the images in
``randperm(n)`` drawn from a generator seeded with ``seed`` and ``e``, and each visit's flip coin
comes from the same generator. Iteration ``it`` consumes global samples ``it·B .. it·B + B − 1``
(B = global batch), rank ``r`` of ``W`` takes its contiguous share. Resuming at iteration ``it``
therefore reproduces the exact remaining order, whatever the number of data-loading workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fnl_core.structures import DensePoseDataset, ImageRecord


def xywh_to_xyxy(box: tuple[float, float, float, float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


def record_target(record: ImageRecord) -> dict[str, Any]:
    """Detector target of one record (boxes XYXY in image pixels, labels, iscrowd, densepose)."""
    anns = record.annotations
    boxes = torch.tensor([xywh_to_xyxy(a.bbox_xywh) for a in anns], dtype=torch.float32)
    return {
        "boxes": boxes.reshape(-1, 4),
        "labels": torch.tensor([a.category_id for a in anns], dtype=torch.int64),
        "iscrowd": torch.tensor([a.iscrowd for a in anns], dtype=torch.int64),
        "densepose": [a.densepose for a in anns],
        "image_id": record.image_id,
    }


def has_training_instances(record: ImageRecord) -> bool:
    return any(
        not a.iscrowd and a.bbox_xywh[2] > 1 and a.bbox_xywh[3] > 1 for a in record.annotations
    )


class TrainSamples(Dataset):
    """Map a (record index, flip) pair to ``(uint8 image tensor [3,H,W], target)``."""

    def __init__(self, dataset: DensePoseDataset, records: list[ImageRecord]) -> None:
        self.dataset = dataset
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, dict[str, Any]]:
        index, flip = item
        record = self.records[index]
        image = self.dataset.load_image(record)
        if flip:
            record, image = self.dataset.hflip(record, image)
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        return tensor, record_target(record)


class DeterministicBatchSampler(Sampler[list[tuple[int, bool]]]):
    """This rank's share of every global batch, from iteration ``start_iter`` to ``iters``."""

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        iters: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        flip_prob: float = 0.5,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("the training split has no images with person annotations")
        if global_batch % world_size:
            raise ValueError(
                f"batch size {global_batch} must be divisible by the number of processes "
                f"({world_size})"
            )
        self.n = num_samples
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.iters = iters
        self.seed = seed
        self.rank = rank
        self.start_iter = start_iter
        self.flip_prob = flip_prob
        self._epoch_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).numpy()
            flips = (torch.rand(self.n, generator=g) < self.flip_prob).numpy()
            self._epoch_cache = (epoch, perm, flips)
        return self._epoch_cache[1], self._epoch_cache[2]

    def sample(self, global_index: int) -> tuple[int, bool]:
        """The (record index, flip) of global sample number ``global_index``."""
        epoch, pos = divmod(global_index, self.n)
        perm, flips = self._epoch(epoch)
        return int(perm[pos]), bool(flips[pos])

    def batch(self, iteration: int) -> list[tuple[int, bool]]:
        first = iteration * self.global_batch + self.rank * self.local_batch
        return [self.sample(first + k) for k in range(self.local_batch)]

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for it in range(self.start_iter, self.iters):
            yield self.batch(it)

    def __len__(self) -> int:
        return max(0, self.iters - self.start_iter)


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list, list]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def make_loader(
    samples: TrainSamples, sampler: DeterministicBatchSampler, num_workers: int
) -> DataLoader:
    """A loader over ``sampler``'s batches.

    It gets its own generator: the DataLoader draws a worker seed from it whenever an iterator
    starts, which would otherwise shift the global torch RNG on resume.
    """
    return DataLoader(
        samples,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(sampler.seed + sampler.start_iter),
        prefetch_factor=2 if num_workers else None,
    )
