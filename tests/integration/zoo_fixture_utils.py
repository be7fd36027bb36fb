"""Shared helpers of the zoo fixture tests (``test_zoo_*.py``).

The fixtures live at ``$FNL_FIXTURES`` or ``<repo>/../shared/fixtures`` (as in
``test_reference_fixture.py``); tests skip with a reason when they are absent.

Tolerance: float arrays agree to ``1e-4 * max|reference|`` (absolute, i.e. relative to the
array's range); discrete results (detections, classes, chart labels, vertex maps) are exact,
except where a fixture's README lists a tie margin.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
RTOL = 1e-4

#: The reference runs' settings (fixture READMEs, "Versions"): score threshold 0, 5 detections.
DETECTION_OVERRIDES = ["test.score_thresh=0.0", "test.detections_per_image=5"]
#: DensePoseFnL fixtures also run at short side 512 (the preset's default is 800).
MOBILE_OVERRIDES = [*DETECTION_OVERRIDES, "input.min_size_test=512", "input.max_size_test=1333"]


def fixtures_root() -> Path:
    env = os.environ.get("FNL_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures"


def load_outputs(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "outputs.npz") as data:
        return {k: data[k] for k in data.files}


def assert_close(name: str, got, ref, rtol: float = RTOL) -> float:
    """|got - ref| <= rtol * max|ref| elementwise; returns the relative deviation."""
    if isinstance(got, torch.Tensor):
        got = got.detach().to(torch.float64)
    else:
        got = torch.from_numpy(np.array(got, dtype=np.float64))
    ref = torch.from_numpy(np.array(ref, dtype=np.float64))
    assert tuple(got.shape) == tuple(ref.shape), f"{name}: shape {tuple(got.shape)} != {ref.shape}"
    if not ref.numel():
        return 0.0
    scale = float(ref.abs().max())
    diff = float((got - ref).abs().max())
    assert diff <= rtol * max(scale, 1e-12), (
        f"{name}: max |diff| {diff:.3g} > {rtol} x max|ref| ({scale:.3g})"
    )
    return diff / scale if scale else diff


def sizes(ref: dict[str, np.ndarray], key: str) -> tuple[int, int]:
    return tuple(int(v) for v in ref[key])


def resized_frame_boxes(ref: dict[str, np.ndarray]) -> torch.Tensor:
    """The detections in the resized frame (where the DensePose pooler reads them).

    In the resized fixtures ``det_boxes_resized`` equals ``det_boxes`` (original frame):
    detectron2's ``detector_postprocess`` rescales ``pred_boxes`` in place, after the array was
    captured by reference. The pooled features were computed before that, at the resized-frame
    boxes, so the boxes are mapped back here (x * resized_w / W, y * resized_h / H).
    """
    (rh, rw), (h, w) = sizes(ref, "resized_image_size_hw"), sizes(ref, "input_image_size_hw")
    boxes = torch.from_numpy(ref["det_boxes"]).double()
    return (boxes * boxes.new_tensor([rw / w, rh / h, rw / w, rh / h])).float()


def image_tensor(array: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 → float [3, H, W] (0..255)."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()


def run_resized(model, ref: dict[str, np.ndarray]) -> dict:
    """The detector on the fixture's stored ``resized_image`` (no further resize: its short
    side is the model's test size), boxes mapped back to the original frame as the reference
    does (x * W / resized_w, y * H / resized_h, clipped)."""
    from fnl_detector.modeling.transform import ImageTransform

    with torch.inference_mode():
        (pred,) = model([image_tensor(ref["resized_image"])])
    boxes, keep = ImageTransform.postprocess(
        pred["boxes"], sizes(ref, "resized_image_size_hw"), sizes(ref, "input_image_size_hw")
    )
    assert bool(keep.all())
    return {**pred, "boxes": boxes}


def check_box_branch(model, ref: dict[str, np.ndarray], features: dict) -> None:
    """The box branch from the reference proposals: class logits and deltas, then the
    detections (kept proposals, classes, scores, boxes in the input frame)."""
    from fnl_detector.modeling.transform import ImageTransform

    heads = model.roi_heads
    proposals = [torch.from_numpy(ref["proposal_boxes"])]
    with torch.inference_mode():
        logits, deltas = heads.box_outputs(features, proposals)
        assert_close("box_class_logits", logits, ref["box_class_logits"])
        assert_close("box_deltas", deltas, ref["box_deltas"])
        (det,) = heads.predict_boxes(
            proposals,
            torch.from_numpy(ref["box_class_logits"]),
            torch.from_numpy(ref["box_deltas"]),
            [sizes(ref, "resized_image_size_hw")],
        )
    assert det["proposal_index"].tolist() == ref["det_proposal_indices"].tolist()
    assert (det["labels"] - 1).tolist() == ref["det_classes"].tolist()
    assert_close("det_scores", det["scores"], ref["det_scores"])
    boxes, _ = ImageTransform.postprocess(
        det["boxes"], sizes(ref, "resized_image_size_hw"), sizes(ref, "input_image_size_hw")
    )
    assert_close("det_boxes", boxes, ref["det_boxes"])
