"""Checking an exported graph against the PyTorch model it came from (onnxruntime on the
CPU). No torch at module level."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fnl_core.onnx_manifest import BOX_OUTPUTS, INPUT_NAME, MODEL_FILE
from fnl_detector.export.writer import DEFAULT_OPSET, check_image, export_onnx, require_export_deps

if TYPE_CHECKING:
    from fnl_detector.modeling.detector import DensePoseRCNN


def reference_outputs(model: DensePoseRCNN, image: np.ndarray) -> dict[str, np.ndarray]:
    """The PyTorch model's detections for one resized uint8 image, in that image's frame,
    named as the graph's outputs (the reference the graph is checked against)."""
    import torch

    t = model.transform
    tensor = torch.from_numpy(np.array(check_image(image))).permute(2, 0, 1).float()
    size = tuple(image.shape[:2])
    with torch.inference_mode():
        batch = t.batch([t.normalize(tensor)])
        if model.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        features = model.extract_features(batch)
        proposals, _, _ = model.proposal_generator(features, [size])
        detections, _ = model.roi_heads(features, proposals, [size])
    det = detections[0]
    out = {k: det[k].numpy() for k in BOX_OUTPUTS}
    out.update({k: v.float().numpy() for k, v in det["densepose"].items()})
    return out


def onnx_session(
    path: str | Path,
    threads: int | None = None,
    *,
    spin: bool = True,
    profile_prefix: str | None = None,
) -> Any:
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads; ``spin=False``
    keeps idle pool threads from busy-waiting (kinder to a machine shared with other work).
    ``profile_prefix``: profile every node (``session.end_profiling()`` writes the JSON)."""
    _, ort = require_export_deps(need_onnx=False)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, image: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {INPUT_NAME: check_image(image)})))


#: Bounds of :func:`compare_outputs`. Boxes in pixels; scores absolute; DensePose outputs
#: relative to each output's largest magnitude. Why: onnxruntime and PyTorch round float32
#: convolutions differently (other algorithms); on the reference Mobile Parsing R-CNN (B) both
#: are ~5e-5 relative away from the float64 model on the features, which moves boxes by
#: < 1e-3 px and DensePose heatmaps (9 more convolutions) by < 5e-3, while a wrong computation
#: shows at the 1e-2..1 level.
TOLERANCES = {"boxes_px": 0.05, "scores": 1e-3, "densepose_rel": 5e-3}


def _match(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> list:
    """Pairs (i, j) of reference/candidate detections with the same label whose boxes are
    within the box tolerance, greedily in reference (score) order, one to one."""
    tol = TOLERANCES["boxes_px"]
    free = set(range(len(candidate["boxes"])))
    pairs = []
    for i, (box, label) in enumerate(zip(reference["boxes"], reference["labels"])):
        best, best_err = None, tol
        for j in sorted(free):
            if candidate["labels"][j] != label:
                continue
            err = float(np.abs(candidate["boxes"][j].astype(np.float64) - box).max())
            if err <= best_err:
                best, best_err = j, err
        if best is not None:
            free.discard(best)
            pairs.append((i, best))
    return pairs


def compare_outputs(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Do the graph's detections equal the PyTorch model's, up to float32 noise?

    ``same``: same count, labels and order. Otherwise detections are matched by label and box
    (:data:`TOLERANCES`), and a detection left unmatched is accepted only if its score is
    within the score tolerance of the lowest score kept (a near-tie at the top-k or
    score-threshold cut: untrained weights give many). Outputs are compared on the matched
    pairs: boxes in pixels, scores absolute, DensePose outputs relative to their largest
    magnitude."""
    n_ref, n_cand = len(reference["boxes"]), len(candidate["boxes"])
    same = n_ref == n_cand and bool(np.array_equal(reference["labels"], candidate["labels"]))
    if same and n_ref:
        box_err = np.abs(candidate["boxes"].astype(np.float64) - reference["boxes"]).max()
        same = bool(box_err <= TOLERANCES["boxes_px"])
    pairs = [(i, i) for i in range(n_ref)] if same else _match(reference, candidate)
    rows = np.asarray([i for i, _ in pairs], dtype=np.int64)
    cols = np.asarray([j for _, j in pairs], dtype=np.int64)
    scores = [reference["scores"], candidate["scores"]]
    cut = max((float(s.min()) for s in scores if len(s)), default=0.0) + TOLERANCES["scores"]
    unmatched = [
        float(s[k]) for s, used in zip(scores, (set(rows), set(cols))) for k in range(len(s))
        if k not in used
    ]  # fmt: skip
    diffs: dict[str, float] = {}
    for key, ref in reference.items():
        if key == "labels":
            continue
        cand = candidate.get(key)
        if cand is None or cand.shape[1:] != ref.shape[1:]:
            diffs[key] = math.inf
            continue
        r, c = ref[rows].astype(np.float64), cand[cols].astype(np.float64)
        err = float(np.abs(c - r).max()) if r.size else 0.0
        if key not in ("boxes", "scores"):
            err /= max(float(np.abs(r).max()) if r.size else 0.0, 1e-12)
        diffs[key] = err
    ok = all(
        v <= TOLERANCES["boxes_px" if k == "boxes" else k if k == "scores" else "densepose_rel"]
        for k, v in diffs.items()
    ) and all(u <= cut for u in unmatched)
    return {
        "detections": n_ref,
        "onnx_detections": n_cand,
        "same": same,
        "matched": len(pairs),
        "unmatched_scores": sorted(unmatched, reverse=True)[:10],
        "max_diff": diffs,
        "ok": ok,
    }


def verify_onnx(
    model: DensePoseRCNN, path: str | Path, images: Sequence[np.ndarray]
) -> dict[str, Any]:
    """Run the graph with onnxruntime and the PyTorch model on each resized uint8 image and
    compare (:func:`compare_outputs`, :data:`TOLERANCES`). ``ok`` needs every image to match
    and at least one matched detection in all (a check on 0 detections proves nothing about
    the DensePose branch)."""
    session = onnx_session(path)
    rows = []
    for image in images:
        row = compare_outputs(reference_outputs(model, image), run_onnx(session, image))
        rows.append({"image_hw": list(image.shape[:2]), **row})
    matched = sum(r["matched"] for r in rows)
    return {
        "ok": all(r["ok"] for r in rows) and matched > 0,
        "detections": sum(r["detections"] for r in rows),
        "matched": matched,
        "tolerances": TOLERANCES,
        "images": rows,
    }


def verification_images(model: DensePoseRCNN, path: str | Path | None = None) -> list[np.ndarray]:
    """Two resized uint8 images of different sizes and aspect ratios: ``path`` (or a synthetic
    image at the test size) and a crop of it, resized by the runtime's rule (upscaled)."""
    from fnl_core.imaging import read_image, resize_shortest_edge

    t = model.transform
    if path is None:
        from fnl_detector.analysis import benchmark_image

        tensor = benchmark_image(t.min_size_test).permute(1, 2, 0)
        image = tensor.round().clamp(0, 255).byte().numpy()
    else:
        image = read_image(path)
    h, w = image.shape[:2]
    crop = np.ascontiguousarray(image[: max(h * 2 // 3, 8), w // 8 : max(w * 5 // 8, w // 8 + 8)])
    return [resize_shortest_edge(i, t.min_size_test, t.max_size_test) for i in (image, crop)]


def verify_export(
    model: DensePoseRCNN, out: str | Path, images: Sequence[np.ndarray], opset: int = DEFAULT_OPSET
) -> dict[str, Any]:
    """Verify the graph written into ``out`` (:func:`verify_onnx`). When the check would be
    vacuous (no detection on the verification images) verify a copy exported with score
    threshold 0 instead, whose graph differs from the written one only in that constant."""
    report = verify_onnx(model, Path(out) / MODEL_FILE, images)
    if report["detections"] > 0:
        report["forced_detections"] = None
        return report
    before = model.roi_heads.score_thresh
    model.roi_heads.score_thresh = 0.0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(model, tmp, images[0], opset=opset)
            forced = verify_onnx(model, Path(tmp) / MODEL_FILE, images)
    finally:
        model.roi_heads.score_thresh = before
    forced["forced_detections"] = (
        f"no detection above test.score_thresh={before} on the verification images: "
        "verified a copy exported with score threshold 0 (same graph otherwise)"
    )
    forced["written_graph"] = {k: v for k, v in report.items() if k != "tolerances"}
    return forced
