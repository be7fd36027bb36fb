#!/usr/bin/env python3
"""Compare FnL's training step with a recorded reference training step.

    uv run python scripts/check_train_step.py FIXTURE_DIR [--spec PRESET] [--threads N]

FIXTURE_DIR holds one training forward of the original implementation (detectron2 + DensePose +
DensePoseFnL) in the ``train-step-reference`` format: ``settings.json`` (the merged config as
``full_config``), ``annotations.json`` and the images it names, ``model_final.pth`` (the weights
before the step), ``outputs.npz`` (every sample, target, head output, loss and DensePose
gradient) and optionally ``outputs_dp_iou05_variant.npz`` (the DensePose part again with a
DensePose foreground IoU of 0.5).

The step runs through FnL's own code: the preset named after the reference config, with the
fixture's training settings as spec overrides; the weights converted by ``fnl_detector.convert``;
the records read by ``fnl_data`` and prepared by the trainer's data path
(``fnl_detector.train.data``); ``model.train(); model(images, targets, presized=True)``. The only
foreign input is the reference's random samples, replayed through the model's replaceable
samplers (``fnl_detector.modeling.sampling.ReplaySampler``): the RPN's anchors by index, the
RoI heads' proposals by box (the candidate order follows top-k/NMS, which rounding permutes),
the sampled RoIs then taking the recorded coordinates, as the fixture's README recommends (FnL's
own sampled boxes are compared with them first).

One line per loss and per target/output/gradient group with its deviation and tolerance, then
``train step NAME: OK ...`` or ``train step NAME: FAIL ...`` (exit status 0 / 1). Tolerances:
losses 1e-5 relative; float targets and head outputs 1e-4 of the array's largest magnitude;
DensePose gradients 1e-4 relative (to the largest magnitude); indices, labels and counts exact.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Reference config file name -> FnL preset.
PRESETS = {"mobile_parsing_rcnn_b_s3x": "mobile_parsing_rcnn_b"}
#: FnL loss name -> the reference's.
LOSS_NAMES = {"loss_box_cls": "loss_cls"}
LOSS_RTOL = 1e-5
ARRAY_RTOL = 1e-4
GRAD_RTOL = 1e-4
#: Float targets (regression deltas, heatmap weights) must agree to rounding.
TARGET_RTOL = 1e-5


def spec_overrides(cfg: dict[str, Any], dp_iou: float | None = None) -> list[str]:
    """The training settings of a detectron2 config as FnL spec overrides."""
    model, inp = cfg["MODEL"], cfg["INPUT"]
    rpn, roi, dp = model["RPN"], model["ROI_HEADS"], model["ROI_DENSEPOSE_HEAD"]
    flip = inp.get("RANDOM_FLIP", "horizontal")
    if flip not in ("horizontal", "none"):
        raise SystemExit(f"INPUT.RANDOM_FLIP {flip!r}: FnL flips 'horizontal' or 'none'")
    low, high = rpn["IOU_THRESHOLDS"]
    return [
        f"input.min_size_train={json.dumps(list(inp['MIN_SIZE_TRAIN']))}",
        f"input.max_size_train={inp['MAX_SIZE_TRAIN']}",
        f"input.random_flip={flip}",
        f"rpn.batch_size_per_image={rpn['BATCH_SIZE_PER_IMAGE']}",
        f"rpn.positive_fraction={rpn['POSITIVE_FRACTION']}",
        f"rpn.fg_iou_thresh={high}",
        f"rpn.bg_iou_thresh={low}",
        f"rpn.pre_nms_top_n_train={rpn['PRE_NMS_TOPK_TRAIN']}",
        f"rpn.post_nms_top_n_train={rpn['POST_NMS_TOPK_TRAIN']}",
        f"rpn.nms_thresh={rpn['NMS_THRESH']}",
        f"roi_heads.batch_size_per_image={roi['BATCH_SIZE_PER_IMAGE']}",
        f"roi_heads.positive_fraction={roi['POSITIVE_FRACTION']}",
        f"roi_heads.iou_threshold={roi['IOU_THRESHOLDS'][0]}",
        f"roi_heads.proposal_append_gt={json.dumps(bool(roi['PROPOSAL_APPEND_GT']))}",
        f"densepose.iou_threshold={dp['FG_IOU_THRESHOLD'] if dp_iou is None else dp_iou}",
        f"densepose.heatmap_size={dp['HEATMAP_SIZE']}",
        f"densepose.predictor.coarse_channels={dp['NUM_COARSE_SEGM_CHANNELS']}",
        f"densepose.loss.index_weight={dp['INDEX_WEIGHTS']}",
        f"densepose.loss.part_weight={dp['PART_WEIGHTS']}",
        f"densepose.loss.point_weight={dp['POINT_REGRESSION_WEIGHTS']}",
    ]


@dataclass
class Report:
    """Check lines; ``failed`` names the checks beyond their tolerance."""

    name: str
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    worst_loss: float = 0.0

    def value(self, label: str, deviation: float, tol: float, unit: str = "") -> None:
        ok = deviation <= tol
        self.lines.append(f"  {label:<44} {deviation:10.3g}{unit}  (tol {tol:g})  {_ok(ok)}")
        if not ok:
            self.failed.append(label)

    def exact(self, label: str, mismatches: int, total: int) -> None:
        ok = mismatches == 0
        self.lines.append(f"  {label:<44} {mismatches:>6} of {total} differ  {_ok(ok)}")
        if not ok:
            self.failed.append(label)

    def close(self, label: str, got: Any, ref: Any, rtol: float) -> None:
        """|got - ref| <= rtol * max|ref|, elementwise."""
        got, ref = _np(got).astype(np.float64), np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            self.lines.append(f"  {label:<44} shape {got.shape} != {ref.shape}  FAIL")
            self.failed.append(label)
            return
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        diff = float(np.abs(got - ref).max()) if ref.size else 0.0
        self.value(label, diff / scale if scale else diff, rtol, " rel")

    def equal(self, label: str, got: Any, ref: Any) -> None:
        got, ref = _np(got), np.asarray(ref)
        if got.shape != ref.shape:
            self.lines.append(f"  {label:<44} shape {got.shape} != {ref.shape}  FAIL")
            self.failed.append(label)
            return
        self.exact(label, int((got != ref).sum()), int(ref.size))


def _ok(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def _np(x: Any) -> np.ndarray:
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


class StepRecorder:
    """Runs one training forward of ``model`` on the fixture's batch with the reference's
    samples replayed, keeping what each stage produced (through forward hooks and wrappers
    on the model's instances; nothing in the model changes)."""

    def __init__(self, model: Any, ref: dict[str, np.ndarray]) -> None:
        import torch

        from fnl_detector.modeling.sampling import ReplaySampler

        self.model = model
        self.seen: dict[str, Any] = {}
        rpn, roi = model.proposal_generator, model.roi_heads
        n = int(ref["image_sizes_hw"].shape[0])
        rpn.sampler = ReplaySampler(
            [(ref[f"rpn_{i}_sampled_pos_idx"], ref[f"rpn_{i}_sampled_neg_idx"]) for i in range(n)]
        )
        roi.sampler = self._recording(
            ReplaySampler(
                [
                    (ref[f"roi_{i}_sampled_fg_idx"], ref[f"roi_{i}_sampled_bg_idx"])
                    for i in range(n)
                ],
                boxes=[torch.from_numpy(ref[f"roi_{i}_sampled_boxes"]) for i in range(n)],
                box_tol=float("inf"),  # how far FnL's nearest candidates are is a check below
            ),
            "roi_candidate_labels",
        )
        self._keep_output(model.transform, "batch")
        self._keep_output(rpn.rpn_head, "rpn_head")
        self._keep_output(rpn.anchor_generator, "anchors")
        self._keep_output(roi.box_predictor, "box_predictor")
        for obj, name in (
            (rpn, "label_anchors"),
            (rpn, "select_proposals"),
            (roi, "box_regression_targets"),
        ):
            self._wrap(obj, name)
        self._inject_sampled_boxes(roi, [ref[f"roi_{i}_sampled_boxes"] for i in range(n)])
        self._keep_densepose_inputs(roi.densepose_loss)

    def _keep_output(self, module: Any, key: str) -> None:
        module.register_forward_hook(lambda _m, _i, out: self.seen.__setitem__(key, out))

    def _wrap(self, obj: Any, name: str) -> None:
        original = getattr(obj, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            self.seen[name] = out
            return out

        setattr(obj, name, wrapper)

    def _inject_sampled_boxes(self, roi: Any, boxes: list[np.ndarray]) -> None:
        """The box and DensePose branches get the recorded RoIs, labelled by FnL's own
        ``label_proposals``: FnL's sample (the nearest candidates to the recorded boxes, kept
        under ``sample_proposals`` and compared) can differ by rounding, or by a near-tie in
        top-k/NMS, which must not hide how the later stages compare."""
        import torch

        original = roi.sample_proposals

        def sample_proposals(proposals: Any, targets: Any) -> Any:
            self.seen["sample_proposals"] = original(proposals, targets)
            return [
                roi.label_proposals(torch.from_numpy(recorded).to(p), t)
                for recorded, p, t in zip(boxes, proposals, targets)
            ]

        roi.sample_proposals = sample_proposals

    def _recording(self, sampler: Any, key: str) -> Any:
        def record(labels: Any, bg_label: int, candidates: Any = None) -> Any:
            self.seen.setdefault(key, []).append(labels.clone())
            return sampler(labels, bg_label=bg_label, candidates=candidates)

        return record

    def _keep_densepose_inputs(self, loss: Any) -> None:
        def keep(_module: Any, inputs: tuple) -> None:
            self.seen["dp_outputs"], self.seen["dp_targets"] = inputs

        loss.register_forward_pre_hook(keep)


def build_model(fixture: Path, settings: dict, preset: str, dp_iou: float | None) -> Any:
    from fnl_detector import build_detector, load_spec
    from fnl_detector.loading import load_weights

    spec = load_spec(preset, spec_overrides(settings["full_config"], dp_iou))
    model = build_detector(spec)
    mapping = load_weights(model, fixture / "model_final.pth")
    if not mapping.ok:
        raise SystemExit(f"{fixture / 'model_final.pth'}: the weights do not fit {preset}")
    return model.train()


def training_batch(fixture: Path, model: Any) -> tuple[list, list]:
    """The fixture's images and targets through FnL's training data path (no flip)."""
    from fnl_data.dataset import DensePoseCocoDataset
    from fnl_data.transforms import MissingSymmetry
    from fnl_detector.train.data import TrainResize, TrainSamples, has_training_instances

    dataset = DensePoseCocoDataset.from_json(
        fixture / "annotations.json", fixture, MissingSymmetry("no flips in a checked step")
    )
    records = sorted(
        (r for r in dataset.records if has_training_instances(r)), key=lambda r: r.image_id
    )
    samples = TrainSamples(dataset, records, TrainResize.from_input_spec(model.spec.input))
    items = [samples[(k, False, 0)] for k in range(len(records))]
    return [img for img, _ in items], [t for _, t in items]


def run_step(fixture: Path, settings: dict, ref: dict, preset: str, dp_iou: float | None):
    """(images, targets, losses, recorder, DensePose gradients) of one replayed step."""
    import torch

    model = build_model(fixture, settings, preset, dp_iou)
    images, targets = training_batch(fixture, model)
    recorder = StepRecorder(model, ref)
    torch.manual_seed(int(settings.get("seed", 0)))
    losses = model([im.float() for im in images], targets, presized=True)
    outputs = recorder.seen.get("dp_outputs") or {}
    keys = [k for k in ("coarse_segm", "fine_segm", "u", "v") if k in outputs]
    dp_total = sum(v for k, v in losses.items() if k.startswith("loss_densepose_"))
    grads = torch.autograd.grad(dp_total, [outputs[k] for k in keys]) if keys else []
    return images, targets, losses, recorder.seen, dict(zip(keys, grads))


def check_inputs(report: Report, images: list, targets: list, seen: dict, ref: dict) -> None:
    for i, (img, tgt) in enumerate(zip(images, targets)):
        ref_img = ref[f"image_{i}_resized_rgb"].transpose(2, 0, 1)
        if tuple(img.shape) != ref_img.shape:
            report.lines.append(f"  image {i} resized: shape {tuple(img.shape)} != {ref_img.shape}")
            report.failed.append(f"image {i} resized")
            continue
        diff = np.abs(_np(img).astype(np.float64) - ref_img).max()
        report.value(f"image {i} resized (grey levels)", float(diff), 0.0)
        report.close(f"gt {i} boxes", tgt["boxes"], ref[f"gt_{i}_boxes"], TARGET_RTOL)
    batch, sizes, _ = seen["batch"]
    report.equal("image sizes", np.asarray(sizes), ref["image_sizes_hw"])
    report.close("batch tensor", batch, ref["batch_tensor"], ARRAY_RTOL)


def check_rpn(report: Report, seen: dict, ref: dict) -> None:
    import torch

    from fnl_detector.modeling.rpn import flatten_head_outputs

    report.close("rpn anchors", torch.cat(seen["anchors"]), ref["rpn_anchors"], TARGET_RTOL)
    logits, deltas = flatten_head_outputs(*seen["rpn_head"])
    report.close(
        "rpn objectness logits", torch.cat(logits, 1), ref["rpn_pred_objectness_logits"], ARRAY_RTOL
    )
    report.close(
        "rpn anchor deltas", torch.cat(deltas, 1), ref["rpn_pred_anchor_deltas"], ARRAY_RTOL
    )
    labels, regression = seen["label_anchors"]
    boxes, _ = seen["select_proposals"]
    for i, (lab, reg) in enumerate(zip(labels, regression)):
        report.equal(f"rpn {i} match labels", lab.long(), ref[f"rpn_{i}_match_labels"])
        pos = ref[f"rpn_{i}_sampled_idx"][ref[f"rpn_{i}_sampled_labels"] == 1]
        ref_reg = ref[f"rpn_{i}_sampled_regression_targets"][ref[f"rpn_{i}_sampled_labels"] == 1]
        report.close(f"rpn {i} regression targets (positives)", reg[pos], ref_reg, TARGET_RTOL)
        report.value(
            f"rpn {i} proposals (as a set, px)",
            _set_distance(boxes[i], ref[f"rpn_proposals_{i}_boxes"]),
            1e-2,
        )


def _set_distance(got: Any, ref: np.ndarray) -> float:
    """Largest L∞ distance from a box of either set to the nearest box of the other."""
    import torch

    a = torch.as_tensor(_np(got), dtype=torch.float64)
    b = torch.as_tensor(ref, dtype=torch.float64)
    if a.shape != b.shape:
        return float("inf")
    dist = torch.cdist(a, b, p=float("inf"))
    return float(max(dist.min(0).values.max(), dist.min(1).values.max()))


def check_box_head(report: Report, seen: dict, ref: dict) -> None:
    samples = seen["sample_proposals"]
    for i, (s, labels) in enumerate(zip(samples, seen["roi_candidate_labels"])):
        ref_labels = ref[f"roi_{i}_candidate_gt_classes"]
        report.exact(
            f"roi {i} candidates: foreground count",
            abs(int((labels == 0).sum()) - int((ref_labels == 0).sum())),
            len(ref_labels),
        )
        report.close(
            f"roi {i} sampled boxes", s["proposals"], ref[f"roi_{i}_sampled_boxes"], TARGET_RTOL
        )
        report.equal(
            f"roi {i} sampled classes", s["gt_classes"], ref[f"roi_{i}_sampled_gt_classes"]
        )
        fg = ref[f"roi_{i}_sampled_gt_classes"] == 0
        report.equal(
            f"roi {i} matched GT (foreground)",
            s["matched_idxs"][fg],
            ref[f"roi_{i}_sampled_matched_gt_index"][fg],
        )
    logits, deltas = seen["box_predictor"]
    report.close("box class logits", logits, ref["box_pred_class_logits"], ARRAY_RTOL)
    report.close("box deltas", deltas, ref["box_pred_deltas"], ARRAY_RTOL)
    fg = np.concatenate([ref[f"roi_{i}_sampled_gt_classes"] == 0 for i in range(len(samples))])
    report.close(
        "box regression targets (foreground)",
        seen["box_regression_targets"][fg],
        ref["box_regression_targets"][fg],
        TARGET_RTOL,
    )


def check_densepose(report: Report, seen: dict, grads: dict, ref: dict) -> None:
    import torch

    from fnl_heads.losses import coarse_segm_targets, point_grid, xyxy_to_xywh

    targets, outputs = seen.get("dp_targets"), seen.get("dp_outputs")
    if targets is None:
        report.lines.append("  densepose: no DensePose RoI reached the loss  FAIL")
        report.failed.append("densepose RoIs")
        return
    report.close("dp RoI boxes", targets.proposals, ref["dp_proposal_boxes"], TARGET_RTOL)
    est, gt = xyxy_to_xywh(targets.proposals), xyxy_to_xywh(targets.gt_boxes)
    report.close("dp GT boxes (xywh)", gt, ref["dp_packed_bbox_xywh_gt"], TARGET_RTOL)
    report.equal("dp point RoI", targets.point_roi, ref["dp_packed_point_bbox_indices"])
    report.equal("dp point I", targets.point_i, ref["dp_packed_fine_segm_labels_gt"])
    for axis, name in ((0, "x"), (1, "y")):
        report.close(
            f"dp point {name}", targets.point_xy[:, axis], ref[f"dp_packed_{name}_gt"], TARGET_RTOL
        )
    report.close("dp point U", targets.point_u, ref["dp_packed_u_gt"], TARGET_RTOL)
    report.close("dp point V", targets.point_v, ref["dp_packed_v_gt"], TARGET_RTOL)
    size = int(ref["dp_pred_fine_segm"].shape[-1])
    roi = targets.point_roi
    grid = point_grid(targets.point_xy, gt[roi], est[roi], size)
    report.equal("dp points inside their RoI", grid.valid, ref["dp_interp_j_valid"])
    corners = ("ylo_xlo", "ylo_xhi", "yhi_xlo", "yhi_xhi")
    ref_y = np.stack([ref[f"dp_interp_y_{c[1:3]}"] for c in corners], 1)
    ref_x = np.stack([ref[f"dp_interp_x_{c[5:]}"] for c in corners], 1)
    report.equal("dp heatmap cells (y)", grid.y, ref_y)
    report.equal("dp heatmap cells (x)", grid.x, ref_x)
    ref_w = np.stack([ref[f"dp_interp_w_{c}"] for c in corners], 1)
    report.value("dp bilinear weights (abs)", float(np.abs(_np(grid.weight) - ref_w).max()), 1e-5)
    coarse = coarse_segm_targets(targets.masks, gt, est, size)
    report.equal("dp coarse segm target", coarse, ref["dp_coarse_segm_target"].astype(np.int64))
    for key in ("coarse_segm", "fine_segm", "u", "v"):
        report.close(f"dp output {key}", outputs[key], ref[f"dp_pred_{key}"], ARRAY_RTOL)
    for key in ("coarse_segm", "fine_segm", "u", "v"):
        got = grads.get(key, torch.zeros(0))
        report.close(f"dp gradient {key}", got, ref[f"dp_grad_{key}"], GRAD_RTOL)


def check_losses(report: Report, losses: dict, ref_losses: dict[str, float]) -> None:
    ours = {LOSS_NAMES.get(k, k): float(v.detach()) for k, v in losses.items()}
    for name, value in ref_losses.items():
        if name not in ours:
            report.lines.append(f"  {name:<44} missing from FnL's losses  FAIL")
            report.failed.append(name)
            continue
        dev = abs(ours[name] - value) / max(abs(value), 1e-12)
        report.worst_loss = max(report.worst_loss, dev)
        report.value(f"{name} = {ours[name]:.8g} (ref {value:.8g})", dev, LOSS_RTOL, " rel")


def check_fixture(fixture: Path, preset: str | None) -> list[Report]:
    settings = json.loads((fixture / "settings.json").read_text())
    preset = preset or PRESETS.get(Path(settings.get("config_file", "")).stem)
    if preset is None:
        raise SystemExit(
            f"{fixture}: no FnL preset known for {settings.get('config_file')!r}; pass --spec"
        )
    ref = _load_npz(fixture / "outputs.npz")
    main = Report(fixture.name)
    images, targets, losses, seen, grads = run_step(fixture, settings, ref, preset, None)
    check_inputs(main, images, targets, seen, ref)
    check_rpn(main, seen, ref)
    check_box_head(main, seen, ref)
    check_densepose(main, seen, grads, ref)
    check_losses(main, losses, {k: float(ref[k]) for k in settings["loss_order"]})
    reports = [main]
    variant_path = fixture / "outputs_dp_iou05_variant.npz"
    if variant_path.is_file():
        variant = {**ref, **_load_npz(variant_path)}
        report = Report(f"{fixture.name} (DensePose IoU 0.5 variant)")
        _, _, losses, seen, grads = run_step(fixture, settings, variant, preset, 0.5)
        check_densepose(report, seen, grads, variant)
        expected = {k: float(variant[k]) for k in settings["loss_order"]}
        check_losses(report, losses, expected)
        reports.append(report)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fixture", type=Path, help="a folder in the train-step-reference format")
    parser.add_argument("--spec", help="FnL preset to check (default: named after the config)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    for name in ("settings.json", "annotations.json", "model_final.pth", "outputs.npz"):
        if not (args.fixture / name).is_file():
            print(f"check_train_step: {args.fixture}: missing {name}", file=sys.stderr)
            return 2
    import torch

    torch.set_num_threads(args.threads)
    reports = check_fixture(args.fixture, args.spec)
    failed = []
    for report in reports:
        print(f"{report.name}:")
        print("\n".join(report.lines))
        failed += [f"{report.name}: {f}" for f in report.failed]
    checks = sum(len(r.lines) for r in reports)
    worst = max(r.worst_loss for r in reports)
    name = args.fixture.name
    if failed:
        print(f"train step {name}: FAIL ({len(failed)} of {checks} checks: {'; '.join(failed)})")
        return 1
    print(
        f"train step {name}: OK ({checks} checks over {len(reports)} runs, largest loss "
        f"deviation {worst:.2g} relative)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
