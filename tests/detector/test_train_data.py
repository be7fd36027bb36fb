"""The trainer's data path follows the reference's training mapper: Pillow resize on uint8, GT
boxes scaled in float64, sizes and flips from the batch sampler's own generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fnl_core.imaging import resize_image
from fnl_core.structures import ImageRecord, InstanceAnnotation
from fnl_detector.modeling.transform import ImageTransform, resize_target
from fnl_detector.train.data import DeterministicBatchSampler, TrainResize, TrainSamples


class OneImage:
    """A 48×64 image with two annotated people, the second one a crowd."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        anns = [
            InstanceAnnotation(id=1, bbox_xywh=(12.7, 5.4, 11.2, 10.5), area=1.0),
            InstanceAnnotation(id=2, bbox_xywh=(1.0, 1.0, 5.0, 5.0), area=1.0, iscrowd=1),
        ]
        self.records = [ImageRecord(1, "a.png", 48, 64, anns)]

    def load_image(self, record: ImageRecord) -> np.ndarray:
        return self.image

    def hflip(self, record: ImageRecord, image: np.ndarray):
        return record, image[:, ::-1]


def test_pillow_resize_gives_the_inference_pixels():
    data = OneImage()
    samples = TrainSamples(data, data.records, TrainResize((40, 24), max_size=1333))
    image, _ = samples[(0, False, 0)]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 40, 53)
    expected = resize_image(data.image, (40, 53))
    assert torch.equal(image, torch.from_numpy(expected.copy()).permute(2, 0, 1))
    small, _ = samples[(0, False, 1)]
    assert tuple(small.shape) == (3, 24, 32)


def test_boxes_are_scaled_in_float64_then_rounded_once():
    data = OneImage()
    samples = TrainSamples(data, data.records, TrainResize((40,), max_size=1333))
    _, target = samples[(0, False, 0)]
    x0, y0 = np.float32(12.7), np.float32(5.4)
    x1, y1 = np.float32(x0 + np.float32(11.2)), np.float32(y0 + np.float32(10.5))
    sx, sy = 53 / 64, 40 / 48
    expected = np.array([[x0, y0, x1, y1]], dtype=np.float64) * [sx, sy, sx, sy]
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].numpy().tolist() == expected.astype(np.float32).tolist()
    assert target["labels"].tolist() == [1]  # the crowd box is dropped


def test_float32_scaling_would_differ():
    """The case above is one where scaling in float32 rounds differently (the test can fail)."""
    box = torch.tensor([[12.7, 5.4, 23.9, 15.9]])
    f64 = resize_target({"boxes": box}, (48, 64), (40, 53), 0)["boxes"]
    f32 = box * torch.tensor([53 / 64, 40 / 48, 53 / 64, 40 / 48])
    assert not torch.equal(f64, f32)


def test_the_data_path_leaves_the_global_rng_alone():
    data = OneImage()
    samples = TrainSamples(data, data.records, TrainResize((40, 24), max_size=1333))
    sampler = DeterministicBatchSampler(1, 2, iters=3, seed=0, num_sizes=2)
    torch.manual_seed(11)
    for batch in sampler:
        for item in batch:
            samples[item]
    after = torch.rand(())
    torch.manual_seed(11)
    assert torch.rand(()) == after


def test_sizes_and_flips_come_from_the_batch_sampler():
    sampler = DeterministicBatchSampler(10, 4, iters=20, seed=2, num_sizes=3)
    items = [item for batch in sampler for item in batch]
    assert {size for _, _, size in items} == {0, 1, 2}
    assert items == [
        item for batch in DeterministicBatchSampler(10, 4, 20, 2, num_sizes=3) for item in batch
    ]
    never = DeterministicBatchSampler(10, 4, iters=20, seed=2, flip_prob=0.0)
    assert not any(flip for batch in never for _, flip, _ in batch)
    assert all(size == 0 for batch in never for _, _, size in batch)


def _identity_transform(short_side: int) -> ImageTransform:
    """A training transform that only pads (mean 0, std 1), one training size."""
    return ImageTransform(
        min_size_train=[short_side],
        max_size_train=1333,
        min_size_test=short_side,
        max_size_test=1333,
        pixel_mean=[0.0] * 3,
        pixel_std=[1.0] * 3,
    ).train()


def test_presized_training_input_is_only_normalised_and_filtered():
    transform = _identity_transform(100)
    image = torch.rand(3, 40, 53) * 255
    target = {
        "boxes": torch.tensor([[1.25, 2.5, 30.0, 39.0], [0.0, 0.0, 60.0, 3.0]]),
        "labels": torch.tensor([1, 1]),
        "iscrowd": torch.tensor([0, 1]),
    }
    x, sizes, targets = transform([image], [target], resize=False)
    assert sizes == [(40, 53)] and torch.equal(x[0, :, :40, :53], image)
    assert targets[0]["boxes"].tolist() == [[1.25, 2.5, 30.0, 39.0]]


def test_one_training_size_draws_no_random_number():
    transform = _identity_transform(32)
    torch.manual_seed(5)
    transform([torch.zeros(3, 16, 16)], [{"boxes": torch.tensor([[1.0, 1, 8, 8]])}])
    after = torch.rand(())
    torch.manual_seed(5)
    assert torch.rand(()) == after


@pytest.mark.parametrize("mode", ["interpolate"])
def test_interpolate_mode_resizes_the_float_image(mode):
    data = OneImage()
    resize = TrainResize((24,), max_size=1333, mode=mode)
    image, target = TrainSamples(data, data.records, resize)[(0, False, 0)]
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 24, 32)
    assert target["boxes"].shape == (1, 4)
