"""Training-time sampling of anchors (RPN) and proposals (RoI heads).

Both stages keep a *sampler* attribute: a callable that takes one image's labels and returns the
(positive, negative) indices to train on. :class:`BalancedSampler` is the reference's
(detectron2 ``subsample_labels``); :class:`ReplaySampler` hands back recorded draws, so that a
training step can be replayed exactly (``scripts/check_train_step.py`` replays the reference's
recorded samples this way). Replace ``model.proposal_generator.sampler`` or
``model.roi_heads.sampler`` to change how a model samples; the model has no other random draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def subsample_labels(
    labels: Tensor, num_samples: int, positive_fraction: float, bg_label: int
) -> tuple[Tensor, Tensor]:
    """detectron2's ``subsample_labels``: at most ``num_samples · positive_fraction`` positives
    (labels that are neither -1 nor ``bg_label``), negatives (``bg_label``) filling the rest.

    Returns (positive indices, negative indices), each in the random order of its
    ``torch.randperm`` (two draws from the global torch RNG, positives first).
    """
    positive = ((labels != -1) & (labels != bg_label)).nonzero().flatten()
    negative = (labels == bg_label).nonzero().flatten()
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    perm_pos = torch.randperm(positive.numel(), device=labels.device)[:num_pos]
    perm_neg = torch.randperm(negative.numel(), device=labels.device)[:num_neg]
    return positive[perm_pos], negative[perm_neg]


class BalancedSampler:
    """``batch_size_per_image`` samples per image, a ``positive_fraction`` of them positive at
    most (the reference's sampler, random order)."""

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __call__(
        self, labels: Tensor, bg_label: int, candidates: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``candidates``: the boxes the labels belong to (unused here; a replay needs them)."""
        return subsample_labels(labels, self.batch_size_per_image, self.positive_fraction, bg_label)

    def __repr__(self) -> str:
        return (
            f"BalancedSampler(batch_size_per_image={self.batch_size_per_image}, "
            f"positive_fraction={self.positive_fraction})"
        )


class ReplaySampler:
    """Recorded draws, handed back one per call in order.

    Each draw is ``(positive indices, negative indices)``. With ``boxes`` (one ``[P + N, 4]``
    array per draw: the sampled boxes, positives first), indices are found again among the
    ``candidates`` the model passes, by nearest box (L∞ distance at most ``box_tol`` pixels).
    That replays a sample of proposals even where the candidate list is ordered differently
    (its order follows top-k and NMS, which rounding can permute).
    """

    def __init__(
        self,
        draws: Sequence[tuple[Tensor, Tensor]],
        boxes: Sequence[Tensor] | None = None,
        box_tol: float = 1e-2,
    ) -> None:
        self.draws = [(torch.as_tensor(p).long(), torch.as_tensor(n).long()) for p, n in draws]
        self.boxes = None if boxes is None else [torch.as_tensor(b).float() for b in boxes]
        if self.boxes is not None and len(self.boxes) != len(self.draws):
            raise ValueError(f"got {len(self.draws)} draws but {len(self.boxes)} box arrays")
        self.box_tol = box_tol
        self.calls = 0

    def __call__(
        self, labels: Tensor, bg_label: int, candidates: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if self.calls >= len(self.draws):
            raise RuntimeError(f"ReplaySampler: only {len(self.draws)} draws were recorded")
        pos, neg = self.draws[self.calls]
        if self.boxes is not None:
            if candidates is None:
                raise ValueError("ReplaySampler with boxes needs the candidate boxes")
            index = self._find(self.boxes[self.calls], candidates)
            pos, neg = index[: len(pos)], index[len(pos) :]
        self.calls += 1
        return pos.to(labels.device), neg.to(labels.device)

    def _find(self, boxes: Tensor, candidates: Tensor) -> Tensor:
        dist = torch.cdist(boxes.double(), candidates.detach().cpu().double(), p=float("inf"))
        best, index = dist.min(dim=1)
        if bool((best > self.box_tol).any()):
            worst = int(best.argmax())
            raise ValueError(
                f"ReplaySampler: recorded box {worst} ({boxes[worst].tolist()}) is not among the "
                f"candidates (nearest is {float(best[worst]):.3g} px away)"
            )
        return index
