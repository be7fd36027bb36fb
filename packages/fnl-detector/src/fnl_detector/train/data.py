"""Training data: a deterministic sample order and the records → (image, target) conversion.

The order is a pure function of (seed, global sample number): epoch ``e`` visits the images in
``randperm(n)`` drawn from a generator seeded with ``seed`` and ``e``, and each visit's flip coin
and training size come from the same generator (never from the global torch RNG, which the
model's samplers draw from, as the reference's do). Iteration ``it`` consumes global samples
``it·B .. it·B + B − 1`` (B = global batch), rank ``r`` of ``W`` takes its contiguous share.
Resuming at iteration ``it`` therefore reproduces the exact remaining order, whatever the number
of data-loading workers.

Each sample is then prepared as the reference's training ``DatasetMapper`` does it: the uint8
image is flipped, resized by its shortest side with Pillow's bilinear filter (the resize of
inference too), and the GT boxes are scaled in float64 and clipped to the resized image
(:class:`TrainResize`, :func:`fnl_detector.modeling.transform.resize_target`); the model then
only normalises and pads (``model(images, targets, presized=True)``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fnl_core.imaging import resize_image, resized_shape
from fnl_core.structures import DensePoseDataset, ImageRecord
from fnl_detector.modeling.transform import resize_target


def record_target(record: ImageRecord) -> dict[str, Any]:
    """Detector target of one record (boxes XYXY in image pixels, labels, iscrowd, densepose).

    XYWH becomes XYXY in float32, as detectron2's ``BoxMode.convert`` does it."""
    anns = record.annotations
    boxes = torch.tensor([a.bbox_xywh for a in anns], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return {
        "boxes": boxes,
        "labels": torch.tensor([a.category_id for a in anns], dtype=torch.int64),
        "iscrowd": torch.tensor([a.iscrowd for a in anns], dtype=torch.int64),
        "densepose": [a.densepose for a in anns],
        "image_id": record.image_id,
    }


def has_training_instances(record: ImageRecord) -> bool:
    return any(
        not a.iscrowd and a.bbox_xywh[2] > 1 and a.bbox_xywh[3] > 1 for a in record.annotations
    )


@dataclass(frozen=True)
class TrainResize:
    """The training resize (detectron2 ``ResizeShortestEdge`` with ``sample_style="choice"``):
    short side ``short_sides[k]`` for the size index ``k`` the batch sampler drew, long side at
    most ``max_size``; ``mode`` as the spec's ``input.resize`` (Pillow bilinear on uint8, or
    torch's ``interpolate`` on the float image)."""

    short_sides: tuple[int, ...]
    max_size: int
    mode: str = "pil_bilinear_uint8"
    interpolation: str = "bilinear"
    antialias: bool = True

    @classmethod
    def from_input_spec(cls, spec: Any) -> TrainResize:
        """From a detector spec's ``input`` section."""
        return cls(
            short_sides=tuple(int(s) for s in spec.min_size_train),
            max_size=int(spec.max_size_train),
            mode=getattr(spec, "resize", "pil_bilinear_uint8"),
            interpolation=getattr(spec, "interpolation", "bilinear"),
            antialias=bool(getattr(spec, "antialias", True)),
        )

    def __call__(self, image: np.ndarray, size_index: int) -> torch.Tensor:
        """H×W×3 uint8 → [3, h, w] tensor at the drawn size (uint8, or float for interpolate)."""
        size = resized_shape(
            image.shape[0], image.shape[1], self.short_sides[size_index], self.max_size
        )
        if self.mode == "pil_bilinear_uint8":
            return _chw(resize_image(image, size))
        tensor = _chw(image).float()
        if tuple(tensor.shape[-2:]) == size:
            return tensor
        options: dict[str, Any] = {"mode": self.interpolation}
        if self.interpolation == "bilinear":
            options.update(align_corners=False, antialias=self.antialias)
        return torch.nn.functional.interpolate(tensor[None], size=size, **options)[0]


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class TrainSamples(Dataset):
    """Map a (record index, flip, size index) sample to ``(image tensor [3,H,W], target)``.

    With ``resize`` the image and its target come at the network input size (feed them to
    ``model(images, targets, presized=True)``); without it, at the image's own size (the
    model then resizes them itself).
    """

    def __init__(
        self,
        dataset: DensePoseDataset,
        records: list[ImageRecord],
        resize: TrainResize | None = None,
    ) -> None:
        self.dataset = dataset
        self.records = records
        self.resize = resize

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: Sequence) -> tuple[torch.Tensor, dict[str, Any]]:
        index, flip, size_index = item
        record = self.records[index]
        image = np.asarray(self.dataset.load_image(record), dtype=np.uint8)
        if flip:
            record, image = self.dataset.hflip(record, image)
            image = np.asarray(image, dtype=np.uint8)
        target = record_target(record)
        if self.resize is None:
            return _chw(image), target
        tensor = self.resize(image, size_index)
        resized = resize_target(target, image.shape[:2], tuple(tensor.shape[-2:]), index)
        return tensor, {**resized, "image_id": target["image_id"]}


class DeterministicBatchSampler(Sampler[list[tuple[int, bool, int]]]):
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
        num_sizes: int = 1,
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
        self.num_sizes = num_sizes
        self._epoch_cache: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).numpy()
            flips = (torch.rand(self.n, generator=g) < self.flip_prob).numpy()
            if self.num_sizes > 1:
                sizes = torch.randint(self.num_sizes, (self.n,), generator=g).numpy()
            else:
                sizes = np.zeros(self.n, dtype=np.int64)
            self._epoch_cache = (epoch, perm, flips, sizes)
        return self._epoch_cache[1:]

    def sample(self, global_index: int) -> tuple[int, bool, int]:
        """The (record index, flip, size index) of global sample number ``global_index``."""
        epoch, pos = divmod(global_index, self.n)
        perm, flips, sizes = self._epoch(epoch)
        return int(perm[pos]), bool(flips[pos]), int(sizes[pos])

    def batch(self, iteration: int) -> list[tuple[int, bool, int]]:
        first = iteration * self.global_batch + self.rank * self.local_batch
        return [self.sample(first + k) for k in range(self.local_batch)]

    def __iter__(self) -> Iterator[list[tuple[int, bool, int]]]:
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
