"""Input side of the detector: resize by shortest side, normalise, pad into one batch tensor,
and the way back (boxes to the original image frame)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resized_shape(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ``ResizeShortestEdge`` rule: short side to ``short``, long side <= max."""
    scale = short / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


class ImageTransform(nn.Module):
    """Turns a list of RGB images (float, 0..255, any sizes) into one padded, normalised batch.

    Training picks the short side uniformly from ``min_size_train`` per image (torch RNG, drawn
    only when there is a choice) and scales the target boxes with the image
    (:func:`resize_target`). The trainer instead resizes in its data path, as the reference's
    mapper does (Pillow on uint8), and passes ``presized=True``: the images are then only
    normalised and padded, and the targets only filtered.
    """

    def __init__(
        self,
        *,
        min_size_train: Sequence[int],
        max_size_train: int,
        min_size_test: int,
        max_size_test: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        size_divisibility: int = 32,
        interpolation: str = "bilinear",
        antialias: bool = True,
    ) -> None:
        super().__init__()
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be RGB or BGR, got {input_format!r}")
        self.min_size_train = tuple(int(s) for s in min_size_train)
        self.max_size_train = int(max_size_train)
        self.min_size_test = int(min_size_test)
        self.max_size_test = int(max_size_test)
        self.input_format = input_format
        self.size_divisibility = int(size_divisibility)
        self.interpolation = interpolation
        self.antialias = antialias
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), False
        )

    def target_short_side(self) -> tuple[int, int]:
        if not self.training:
            return self.min_size_test, self.max_size_test
        if len(self.min_size_train) == 1:
            return self.min_size_train[0], self.max_size_train
        k = int(torch.randint(len(self.min_size_train), ()).item())
        return self.min_size_train[k], self.max_size_train

    def resize(self, image: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(image.shape[-2:]) == size:
            return image
        kwargs: dict[str, Any] = {"size": size, "mode": self.interpolation}
        if self.interpolation == "bilinear":
            kwargs.update(align_corners=False, antialias=self.antialias)
        return F.interpolate(image[None], **kwargs)[0]

    def normalize(self, image: Tensor) -> Tensor:
        if self.input_format == "BGR":
            image = image.flip(0)
        return (image - self.pixel_mean) / self.pixel_std

    def batch(self, images: list[Tensor]) -> Tensor:
        """Zero-pad (bottom/right) to a common size that is a multiple of the divisibility."""
        h = max(i.shape[-2] for i in images)
        w = max(i.shape[-1] for i in images)
        d = self.size_divisibility
        if d > 1:
            h, w = math.ceil(h / d) * d, math.ceil(w / d) * d
        out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
        for k, img in enumerate(images):
            out[k, :, : img.shape[-2], : img.shape[-1]].copy_(img)
        return out

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Any]] | None = None,
        *,
        resize: bool = True,
    ) -> tuple[Tensor, list[tuple[int, int]], list[dict[str, Any]] | None]:
        """(batch, resized image sizes (h, w), targets in the resized frame).

        ``resize=False``: the images already have their network input size (the predictor or
        the training data path resized them with Pillow on uint8) and the targets are in that
        frame; images are only normalised and padded, targets only filtered.
        """
        if not images:
            raise ValueError("expected at least one image")
        out_images, sizes = [], []
        out_targets = [] if targets is not None else None
        for k, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"image {k}: expected a float tensor [3, H, W], got {image.shape}")
            h, w = image.shape[-2:]
            if resize:
                short, max_size = self.target_short_side()
                size = resized_shape(h, w, short, max_size)
            else:
                size = (int(h), int(w))
            out_images.append(self.normalize(self.resize(image.float(), size)))
            sizes.append(size)
            if targets is not None:
                out_targets.append(resize_target(targets[k], (h, w), size, k))
        return self.batch(out_images), sizes, out_targets

    @staticmethod
    def postprocess(
        boxes: Tensor, resized: tuple[int, int], original: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Boxes from the resized to the original frame, clipped; (boxes, keep mask)."""
        (rh, rw), (oh, ow) = resized, original
        scale = boxes.new_tensor([ow / rw, oh / rh, ow / rw, oh / rh])
        out = boxes * scale
        out[:, 0::2] = out[:, 0::2].clamp(0, ow)
        out[:, 1::2] = out[:, 1::2].clamp(0, oh)
        keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        return out, keep


def resize_target(
    target: dict[str, Any], old: tuple[int, int], new: tuple[int, int], index: int
) -> dict[str, Any]:
    """``target`` of an image of size ``old`` (h, w) in the frame of its resized ``new`` size,
    as the reference's training mapper does it: boxes scaled per axis in float64, clipped to
    the image, then float32; crowd boxes and boxes left empty are dropped."""
    boxes = target.get("boxes")
    if boxes is None:
        raise ValueError(f"target {index}: missing 'boxes' (float Tensor[K, 4], XYXY)")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = boxes.shape[0]
    labels = torch.as_tensor(
        target.get("labels", torch.ones(n, dtype=torch.int64)), dtype=torch.int64
    )
    densepose = list(target.get("densepose") or [None] * n)
    if labels.shape[0] != n or len(densepose) != n:
        raise ValueError(
            f"target {index}: boxes ({n}), labels ({labels.shape[0]}) and densepose "
            f"({len(densepose)}) must have the same length"
        )
    (oh, ow), (nh, nw) = old, new
    scaled = boxes.double() * boxes.new_tensor(
        [nw / ow, nh / oh, nw / ow, nh / oh], dtype=torch.float64
    )
    scaled[:, 0::2] = scaled[:, 0::2].clamp(0, nw)
    scaled[:, 1::2] = scaled[:, 1::2].clamp(0, nh)
    boxes = scaled.to(boxes.dtype)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if "iscrowd" in target and target["iscrowd"] is not None:
        keep &= torch.as_tensor(target["iscrowd"]).reshape(-1) == 0
    idx = keep.nonzero().flatten().tolist()
    return {
        "boxes": boxes[keep],
        "labels": labels[keep],
        "densepose": [densepose[i] for i in idx],
    }
