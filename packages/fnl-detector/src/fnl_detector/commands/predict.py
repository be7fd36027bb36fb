"""``fnl predict``: DensePose on image files; pictures, IUV rasters and a results JSON.

For every image (in file-name order) OUT gets ``<stem>_densepose.png`` (part colours and U/V
contour lines of detections above ``--min-score``) and ``<stem>_iuv.png`` (3-channel uint8
I, 255·U, 255·V in full-image coordinates; overlaps go to the highest score). All detections go
to ``OUT/results.json`` in the DensePose-COCO results format, with ``OUT/images.json`` mapping
each ``image_id`` to its file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fnl_core.command import Command
from fnl_detector.commands import add_overrides_argument

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def collect_images(inputs: list[str]) -> list[Path]:
    """Image files named or found (non-recursively) in the folders given, by file name."""
    files: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files.extend(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"input {text!r} is neither an image file nor a folder")
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {inputs}")
    return sorted(set(files), key=lambda p: (p.name, str(p)))


def load_model(spec_arg: str | None, weights: Path, overrides: list[str], device: Any) -> Any:
    """The detector of ``spec_arg`` (default: ``spec.json`` next to the weights) in eval mode."""
    from fnl_detector import build_detector, load_spec
    from fnl_detector.convert import load_weights

    if spec_arg is None:
        candidates = [weights.parent / "spec.json", weights.parent.parent.parent / "spec.json"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"--spec not given and no spec.json next to {weights} (looked at "
                f"{', '.join(str(c) for c in candidates)})"
            )
        spec_arg = str(found)
    model = build_detector(load_spec(spec_arg, overrides))
    load_weights(model, weights)
    return model.to(device).eval()


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    parser.add_argument(
        "--weights",
        required=True,
        help="model.safetensors, or a reference .pth/.pkl checkpoint (converted on load)",
    )
    parser.add_argument("--spec", help="spec file or preset (default: spec.json of the run)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--min-score",
        type=float,
        default=0.8,
        help="pictures and IUV rasters keep detections above this (default 0.8)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    add_overrides_argument(parser, "spec overrides, e.g. input.min_size_test=512")


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from fnl_detector.postprocess import densepose_to_iuv
    from fnl_detector.results import to_coco_results
    from fnl_detector.train.evaluate import image_tensor
    from fnl_detector.train.loop import select_device
    from fnl_core.visualize import draw_prediction, iuv_image

    files = collect_images(args.inputs)
    device = select_device(args.device)
    model = load_model(args.spec, Path(args.weights), args.overrides, device)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    for image_id, path in enumerate(files, start=1):
        with Image.open(path) as img:
            image = np.asarray(img.convert("RGB"))
        with torch.inference_mode():
            pred = model([image_tensor(image, device)])[0]
        pred = {
            k: (v.cpu() if isinstance(v, torch.Tensor) else {kk: vv.cpu() for kk, vv in v.items()})
            for k, v in pred.items()
        }
        boxes, scores = pred["boxes"], pred["scores"]
        iuvs = densepose_to_iuv(boxes, pred["densepose"]) if len(boxes) else []
        keep = [k for k in range(len(scores)) if float(scores[k]) > args.min_score]
        full = iuv_image(
            image.shape[:2], boxes.numpy()[keep], [iuvs[k] for k in keep], scores.numpy()[keep]
        )
        stem = path.stem
        Image.fromarray(full).save(out_dir / f"{stem}_iuv.png")
        vis = draw_prediction(image, boxes.numpy(), scores.numpy(), iuvs, args.min_score)
        Image.fromarray(vis).save(out_dir / f"{stem}_densepose.png")
        results.extend(to_coco_results(image_id, pred))
        index.append(
            {
                "id": image_id,
                "file_name": str(path),
                "height": image.shape[0],
                "width": image.shape[1],
                "detections": len(keep),
            }
        )
        print(f"{path}: {len(boxes)} detections, {len(keep)} above {args.min_score}")
    (out_dir / "results.json").write_text(json.dumps(results))
    (out_dir / "images.json").write_text(json.dumps(index, indent=2))
    print(
        f"wrote {len(files)} images' pictures and IUV rasters, {len(results)} detections "
        f"to {out_dir}"
    )
    return 0


command = Command(
    help="run a trained detector on images: pictures, IUV PNGs, DensePose-COCO results JSON",
    configure=_configure,
    run=_run,
)
