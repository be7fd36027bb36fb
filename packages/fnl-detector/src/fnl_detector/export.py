"""ONNX deployment of a :class:`~fnl_detector.modeling.detector.DensePoseRCNN` as one graph.

``model.onnx`` runs the whole inference path, as torchvision exports its Mask R-CNN:

``image`` uint8 ``[H, W, 3]`` RGB, already resized (the shortest-edge rule of
:mod:`fnl_core.imaging`, Pillow bilinear on uint8: it stays outside the graph because no ONNX
``Resize`` reproduces Pillow's filter) ->
normalise, zero-pad to ``size_divisibility`` -> backbone -> neck -> RPN head -> per level
``TopK``, anchor decoding, clipping, ``NonMaxSuppression`` -> box pooler (``RoiAlign``, level
assignment, ``ScatterElements``) -> box head -> softmax, decoding, score threshold, per-class
``NonMaxSuppression``, top detections -> DensePose pooler -> DensePose head -> predictor.

Outputs: ``boxes`` ``[D, 4]`` (XYXY, pixels of the input image), ``scores`` ``[D]``,
``labels`` ``[D]`` (int64, 1-based) and every output of the DensePose predictor, ``[D, ...]``
(``coarse_segm``, ``fine_segm``, ``u``, ``v``, plus confidences or embeddings when the predictor
returns them). Image height/width and the detection count ``D`` are dynamic (0 included).

Next to it, ``manifest.json`` holds what a runtime needs besides the graph (resize rule, output
names and shapes) and what was exported (spec, opset, versions, verification). A torch-free
runtime is ``fnl_runtime.Runtime`` (package ``fnl-runtime``).

Nothing here imports torch at module level.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

    from fnl_detector.modeling.detector import DensePoseRCNN

#: File names inside an export folder.
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
MANIFEST = "manifest.json"
#: Manifest format tag, bumped on incompatible changes (1 was the three-graph split).
MANIFEST_FORMAT = "fnl-onnx-densepose"
MANIFEST_VERSION = 2
#: RoiAlign with ``coordinate_transformation_mode="half_pixel"`` (``aligned=True``) needs 16.
MIN_OPSET = 16
DEFAULT_OPSET = 17
#: Resize rule the runtime applies before the graph (see :mod:`fnl_core.imaging`).
RESIZE_RULE = "shortest_edge_pil_bilinear_uint8"
BOX_OUTPUTS = ("boxes", "scores", "labels")


def require_export_deps(*, need_onnx: bool = True) -> tuple[Any, Any]:
    """(onnx or None, onnxruntime), or an ImportError naming the extra to install."""
    try:
        import onnxruntime

        onnx = None
        if need_onnx:
            import onnx
    except ImportError as exc:
        from fnl_core.registry import MissingDependencyError  # an ImportError the CLI prints

        raise MissingDependencyError(
            f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): "
            "pip install 'fnl-detector[export]'"
        ) from exc
    return onnx, onnxruntime


# =========================================================================== the graph
def _graph_module(model: DensePoseRCNN, densepose_outputs: Sequence[str]) -> Any:
    """An ``nn.Module`` computing the model's inference on one resized uint8 image with ops
    that trace to ONNX operators (TopK, NonMaxSuppression, RoiAlign) and dynamic shapes."""
    import torch
    import torch.nn.functional as F
    from torchvision.models.detection._utils import _topk_min
    from torchvision.ops import nms, roi_align, roi_pool

    from fnl_detector.modeling.poolers import assign_levels
    from fnl_detector.modeling.rpn import flatten_head_outputs

    def pool(pooler: Any, features: dict[str, Tensor], boxes: Tensor) -> Tensor:
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        size = (pooler.resolution, pooler.resolution)

        def one(x: Tensor, r: Tensor, scale: float) -> Tensor:
            if pooler.op == "roi_pool":
                return roi_pool(x, r, size, scale)
            return roi_align(x, r, size, scale, pooler.sampling_ratio, pooler.aligned)

        xs = [features[f] for f in pooler.in_features]
        if len(xs) == 1:
            return one(xs[0], rois, pooler.scales[0])
        levels = (
            assign_levels(
                boxes,
                pooler.min_level,
                pooler.max_level,
                pooler.canonical_box_size,
                pooler.canonical_level,
            )
            - pooler.min_level
        )
        # Pool each level's RoIs, concatenate in level order, then gather the rows back into
        # RoI order (a 1-D scatter builds the inverse permutation; scattering the pooled
        # [N, C, R, R] rows themselves is several times slower in onnxruntime).
        idx = [torch.where(levels == k)[0] for k in range(len(xs))]
        pooled = torch.cat([one(x, rois[i], s) for x, i, s in zip(xs, idx, pooler.scales)])
        order = torch.cat(idx)
        inverse = torch.zeros_like(order).scatter(0, order, torch.arange(order.shape[0]))
        return pooled[inverse]

    def clip(boxes: Tensor, size: tuple[Tensor, Tensor]) -> Tensor:
        """``clip_boxes_to_image`` with a traced (dynamic) image size."""
        h, w = (s.to(boxes.dtype) for s in size)
        x = torch.min(boxes[..., 0::2].clamp(min=0), w)
        y = torch.min(boxes[..., 1::2].clamp(min=0), h)
        return torch.stack((x, y), dim=-1).reshape(boxes.shape)

    def nms_by_group(boxes: Tensor, scores: Tensor, groups: Tensor, n: int, thresh: float):
        """Indices kept by NMS within each of ``n`` groups, by descending score."""
        kept = []
        for g in range(n):
            idx = torch.where(groups == g)[0]
            kept.append(idx[nms(boxes[idx], scores[idx], thresh)])
        keep = torch.cat(kept) if n > 1 else kept[0]
        order = scores[keep].topk(_topk_min(scores[keep], 2**31 - 1, 0))[1]
        return keep[order]

    class DensePoseGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def anchors(self, feature: Tensor, level: int) -> Tensor:
            gen = self.model.proposal_generator.anchor_generator
            stride, base = gen.strides[level], gen.cell_anchors[level]
            h, w = feature.shape[-2:]
            start = gen.offset * stride
            xs = torch.arange(w, dtype=torch.float32, device=feature.device) * stride + start
            ys = torch.arange(h, dtype=torch.float32, device=feature.device) * stride + start
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)

        def preprocess(self, image: Tensor) -> Tensor:
            t = self.model.transform
            x = image.permute(2, 0, 1).to(torch.float32)
            x = t.normalize(x)
            d = t.size_divisibility
            if d > 1:
                shape = torch._shape_as_tensor(image)
                pad_h = (-shape[0]) % d
                pad_w = (-shape[1]) % d
                x = F.pad(x, (0, pad_w, 0, pad_h))
            return x[None]

        def proposals(self, features: dict[str, Tensor], size: Any) -> Tensor:
            rpn = self.model.proposal_generator
            feats = [features[f] for f in rpn.in_features]
            objectness, deltas = rpn.rpn_head(feats)
            logits, box_deltas = flatten_head_outputs(objectness, deltas)
            pre = rpn.pre_nms_top_n["test"]
            boxes_l, scores_l, levels_l = [], [], []
            for level, (f, lg, dl) in enumerate(zip(feats, logits, box_deltas)):
                lg, dl = lg[0], dl[0]
                top, idx = lg.topk(_topk_min(lg, pre, 0))
                boxes = rpn.box_coder.decode_single(dl[idx], self.anchors(f, level)[idx])
                boxes_l.append(boxes.view(-1, 4))
                scores_l.append(top)
                levels_l.append(torch.full_like(top, level, dtype=torch.int64))
            boxes, scores, levels = torch.cat(boxes_l), torch.cat(scores_l), torch.cat(levels_l)
            ok = torch.where(torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores))[0]
            boxes, scores, levels = boxes[ok], scores[ok], levels[ok]
            boxes = clip(boxes, size)
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            keep = torch.where((w > rpn.min_size) & (h > rpn.min_size))[0]
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
            keep = nms_by_group(boxes, scores, levels, len(feats), rpn.nms_thresh)
            keep = keep[: rpn.post_nms_top_n["test"]]
            return boxes[keep]

        def detect(self, features: dict[str, Tensor], proposals: Tensor, size: Any):
            roi = self.model.roi_heads
            logits, deltas = roi.box_predictor(
                roi.box_head(pool(roi.box_pooler, features, proposals))
            )
            scores = F.softmax(logits, dim=-1)[:, :-1]
            k = roi.num_classes
            per_box = deltas.shape[1] // 4
            boxes = roi.box_coder.decode_single(deltas, proposals)
            boxes = clip(boxes.view(-1, 4), size).view(-1, per_box, 4)
            if per_box == 1 and k > 1:
                boxes = boxes.expand(-1, k, 4)
            ok = torch.where(
                torch.isfinite(boxes).all(dim=2).all(dim=1) & torch.isfinite(scores).all(dim=1)
            )[0]
            boxes, scores = boxes[ok], scores[ok]
            where = torch.nonzero(scores > roi.score_thresh)
            sel_boxes = boxes[where[:, 0], where[:, 1]]
            sel_scores = scores[where[:, 0], where[:, 1]]
            keep = nms_by_group(sel_boxes, sel_scores, where[:, 1], k, roi.nms_thresh)
            keep = keep[: roi.detections_per_image]
            return sel_boxes[keep], sel_scores[keep], where[keep, 1] + 1

        def forward(self, image: Tensor) -> tuple[Tensor, ...]:
            shape = torch._shape_as_tensor(image)
            size = (shape[0], shape[1])
            features = self.model.extract_features(self.preprocess(image))
            proposals = self.proposals(features, size)
            boxes, scores, labels = self.detect(features, proposals, size)
            roi = self.model.roi_heads
            x = pool(roi.densepose_pooler, roi.densepose_features(features), boxes)
            dp = roi.densepose_predictor(roi.densepose_head(x))
            return (boxes, scores, labels, *(dp[k] for k in densepose_outputs))

    return DensePoseGraph().eval()


def densepose_output_names(model: DensePoseRCNN) -> list[str]:
    """The DensePose predictor's outputs, in the order the predictor returns them."""
    import torch

    roi = model.roi_heads
    pooler = roi.densepose_pooler
    channels = (
        roi.densepose_head.in_channels if hasattr(roi.densepose_head, "in_channels") else None
    )
    if channels is None:
        channels = next(p for p in roi.densepose_head.parameters() if p.dim() == 4).shape[1]
    x = torch.zeros((1, channels, pooler.resolution, pooler.resolution))
    with torch.no_grad():
        out = roi.densepose_predictor(roi.densepose_head(x))
    return list(out)


def _torch_export(module: Any, image: Tensor, path: Path, outputs: Sequence[str], opset: int):
    import torch

    dynamic = {"image": {0: "height", 1: "width"}}
    dynamic.update({name: {0: "detections"} for name in outputs})
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of dynamo=True, which needs
        # onnxscript and has no lowering for torchvision's roi_align and nms; this one has both.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            module,
            (image,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=list(outputs),
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("fnl-detector", "torch", "torchvision", "onnx", "onnxruntime", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _provenance(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """Package and version of each part of the spec (when fnl-core provides it)."""
    if spec is None:
        return None
    from fnl_core import registry

    provenance = getattr(registry, "provenance", None)
    return provenance(spec) if provenance is not None else None


def build_manifest(model: DensePoseRCNN, opset: int, outputs: dict[str, list]) -> dict[str, Any]:
    """What a runtime needs besides the graph, and what was exported (plain JSON data)."""
    t, roi = model.transform, model.roi_heads
    spec_obj = getattr(model, "spec", None)
    spec = spec_obj.to_dict() if spec_obj is not None else None
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "model": MODEL_FILE,
        "opset": opset,
        "input": {
            "name": "image",
            "layout": "uint8 [H, W, 3] RGB, already resized by the rule below; the graph "
            "normalises, pads and runs the whole detector",
            "resize": {
                "rule": RESIZE_RULE,
                "min_size_test": t.min_size_test,
                "max_size_test": t.max_size_test,
                "spec_resize": getattr(getattr(spec_obj, "input", None), "resize", None),
            },
            "format": t.input_format,
            "pixel_mean": t.pixel_mean.flatten().tolist(),
            "pixel_std": t.pixel_std.flatten().tolist(),
            "size_divisibility": t.size_divisibility,
        },
        "outputs": {
            "boxes": {"shape": ["D", 4], "meaning": "XYXY in pixels of the input image"},
            "scores": {"shape": ["D"], "meaning": "class probability of each detection"},
            "labels": {"shape": ["D"], "meaning": "class, 1-based (1 = person)"},
            **{
                name: {"shape": ["D", *shape], "meaning": "DensePose predictor output"}
                for name, shape in outputs.items()
            },
        },
        "densepose_outputs": list(outputs),
        "num_classes": roi.num_classes,
        "score_thresh": roi.score_thresh,
        "detections_per_image": roi.detections_per_image,
        "spec": spec,
        "provenance": _provenance(spec),
        "versions": _versions(),
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON written to a temporary file in the same folder, then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def export_onnx(
    model: DensePoseRCNN,
    out_dir: str | Path,
    image: np.ndarray,
    *,
    opset: int = DEFAULT_OPSET,
    fold_bn: bool = True,
) -> Path:
    """Export ``model`` (eval mode, CPU) as ``model.onnx`` + ``manifest.json`` into ``out_dir``.

    ``image`` (uint8 [H, W, 3], resized) is the tracing example; any size works afterwards.
    With ``fold_bn`` a copy of the model is exported with its BatchNorms folded into the
    convolutions (:func:`fnl_detector.analysis.fold_batch_norm`, as the PyTorch predictor
    runs): frozen BNs otherwise export as Mul/Add nodes that onnxruntime does not fold, and
    they would cut every int8 convolution off its activation. ``model`` is not changed.
    Returns the manifest path.
    """
    import copy

    import torch

    onnx, _ = require_export_deps()
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (RoiAlign with half_pixel), got {opset}")
    image = _check_image(image)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    folded = 0
    if fold_bn:
        from fnl_detector.analysis import fold_batch_norm

        model = copy.deepcopy(model)
        folded = fold_batch_norm(model, [torch.from_numpy(image.copy()).permute(2, 0, 1).float()])
    names = densepose_output_names(model)
    outputs = [*BOX_OUTPUTS, *names]
    shapes = {k: list(model.roi_heads.densepose_output_shapes.get(k, [])) for k in names}
    tmp = out / f".{MODEL_FILE}.tmp"
    with torch.no_grad():
        example = torch.from_numpy(image.copy())
        _torch_export(_graph_module(model, names), example, tmp, outputs, opset)
    graph = onnx.load(str(tmp))
    if _inline_shared_initializers(graph.graph):
        onnx.save(graph, str(tmp))
    onnx.checker.check_model(str(tmp))
    os.replace(tmp, out / MODEL_FILE)
    manifest = build_manifest(model, opset, shapes)
    manifest["batch_norms_folded"] = folded
    manifest["files_bytes"] = {MODEL_FILE: (out / MODEL_FILE).stat().st_size}
    path = out / MANIFEST
    write_json_atomic(path, manifest)
    return path


def _inline_shared_initializers(graph: Any) -> int:
    """Give every ``Identity(initializer)`` output its own copy of the initializer.

    The exporter stores equal parameters once (e.g. the zero biases of untrained layers) and
    reaches the copies through Identity nodes; onnxruntime's quantiser can only quantise a
    convolution whose bias is an initializer, and otherwise leaves it float. Returns the
    number of Identity nodes removed."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    shared = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in initializers]
    for node in shared:
        array = numpy_helper.to_array(initializers[node.input[0]])
        graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
        graph.node.remove(node)
    return len(shared)


def _check_image(image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


# =========================================================================== verification
def reference_outputs(model: DensePoseRCNN, image: np.ndarray) -> dict[str, np.ndarray]:
    """The PyTorch model's detections for one resized uint8 image, in that image's frame,
    named as the graph's outputs (the reference the graph is checked against)."""
    import torch

    t = model.transform
    tensor = torch.from_numpy(np.array(_check_image(image))).permute(2, 0, 1).float()
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


def onnx_session(path: str | Path, threads: int | None = None, *, spin: bool = True) -> Any:
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads; ``spin=False``
    keeps idle pool threads from busy-waiting (kinder to a machine shared with other work)."""
    _, ort = require_export_deps(need_onnx=False)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, image: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": _check_image(image)})))


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


# =========================================================================== int8
#: Nodes kept float in the int8 graph (fnmatch patterns of ONNX node names), the paper's
#: section 3.4 float islands: the RPN's objectness and delta convolutions (proposals are
#: decoded from float outputs), the box predictor's two linear layers (scores and deltas) and
#: the ASPP image-pooling branch. BiFPN's fast normalised fusion (weights, weighted sums),
#: resampling, RoiAlign and NMS stay float because only the operators below are quantised.
INT8_FLOAT_NODES = (
    "/rpn_head/objectness_logits*",
    "/rpn_head/anchor_deltas*",
    "/box_predictor/*",
    "/densepose_head/ASPP/convs.4/*",
)
#: Operators quantised everywhere (weights int8) ...
INT8_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: ... and operators quantised where they join quantised convolutions (ReLU, residual sums,
#: max pooling inside the backbone and the heads), so that onnxruntime fuses them with the
#: convolutions instead of dequantising around each of them.
INT8_JOIN_OP_TYPES = ("Relu", "Add", "MaxPool")
INT8_JOIN_SCOPES = ("/backbone/*", "/rpn_head/*", "/box_head/*", "/densepose_head/*")


def int8_nodes(graph: Any, float_nodes: Sequence[str] = INT8_FLOAT_NODES) -> list[str]:
    """Names of the nodes :func:`quantize_onnx` quantises."""
    import fnmatch

    def matches(name: str, patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    out = []
    for node in graph.node:
        if matches(node.name, float_nodes):
            continue
        if node.op_type in INT8_OP_TYPES or (
            node.op_type in INT8_JOIN_OP_TYPES and matches(node.name, INT8_JOIN_SCOPES)
        ):
            out.append(node.name)
    return out


def add_int8_graph(
    out: str | Path, manifest: dict[str, Any], calibration_images: Sequence[np.ndarray]
) -> None:
    """Quantise ``out/model.onnx`` into ``out/model_int8.onnx`` (:func:`quantize_onnx`) and
    record it in ``manifest`` (``int8`` entry and file size; the caller writes the manifest),
    which is what ``fnl_runtime.Runtime(out, int8=True)`` reads."""
    out = Path(out)
    info = quantize_onnx(out / MODEL_FILE, out / INT8_FILE, calibration_images)
    manifest["int8"] = {"model": INT8_FILE, **info}
    manifest.setdefault("files_bytes", {})[INT8_FILE] = (out / INT8_FILE).stat().st_size


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration_images: Sequence[np.ndarray],
    *,
    float_nodes: Sequence[str] = INT8_FLOAT_NODES,
    per_channel: bool = True,
) -> dict[str, Any]:
    """Static int8 quantisation (QDQ: int8 weights per channel, uint8 activations) with
    onnxruntime's tools, activation ranges calibrated (min/max) on ``calibration_images``
    (resized uint8 [H, W, 3]). Returns what was quantised and kept float."""
    _, _ = require_export_deps()
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calibration_images:
        raise ValueError("int8 calibration needs at least one image")
    images = [_check_image(i) for i in calibration_images]
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    quantized = int8_nodes(graph, float_nodes)
    weighted = [n for n in graph.node if n.op_type in INT8_OP_TYPES]
    excluded = [n.name for n in weighted if n.name not in set(quantized)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"image": i} for i in images])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.tmp")
    root = logging.getLogger()  # the quantiser advises "pre-processing" on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as work:
        # The calibrator writes an augmented copy of the graph; keep it out of the export folder.
        augmented = Path(work) / "augmented.onnx"
        quantize_static(
            str(fp32_path),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=[*INT8_OP_TYPES, *INT8_JOIN_OP_TYPES],
            nodes_to_quantize=quantized,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            extra_options={
                "CalibTensorRangeSymmetric": False,
                "AugmentedModelPath": str(augmented),
            },
        )
    root.setLevel(level)
    model = onnx.load(str(tmp))
    del model.graph.value_info[:]  # shapes the quantiser inferred; runtimes do not need them
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return {
        "format": "QDQ",
        "weights": "int8, per channel" if per_channel else "int8, per tensor",
        "activations": "uint8, per tensor, min/max calibrated",
        "calibration_images": len(images),
        "quantized_nodes": len(quantized),
        "float_nodes": excluded,
        "float_node_patterns": list(float_nodes),
    }


__all__ = [
    "DEFAULT_OPSET",
    "INT8_FILE",
    "MANIFEST",
    "MODEL_FILE",
    "TOLERANCES",
    "add_int8_graph",
    "build_manifest",
    "compare_outputs",
    "densepose_output_names",
    "export_onnx",
    "int8_nodes",
    "onnx_session",
    "quantize_onnx",
    "reference_outputs",
    "require_export_deps",
    "run_onnx",
    "verify_onnx",
]
