"""Matching results to ground-truth images by file name, and the out-of-image box check.

``fnl predict`` / ``fnl run`` number the images they ran 1, 2, ... and write ``images.json``
next to ``results.json`` (``id``, ``file_name``, ``height``, ``width`` per image; see
:mod:`fnl_core.prediction_writer`). Those ids are not the ground truth's: a subset of a dataset
run through ``fnl predict`` would be scored against the wrong images. :func:`match_images`
renames each result's ``image_id`` to the ground-truth image of the same file name (the longest
matching tail of the path: ``val/x.png`` matches ``data/toy/val/x.png``) and keeps only those
ground-truth images, or raises :class:`~fnl_core.errors.ResultsError` in one line when an image
cannot be matched (no such file name, two candidates, another size, a video frame).

:func:`boxes_outside` counts detections whose box lies outside their image, the sign of ids
that belong to other images; the evaluator warns about them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from fnl_core.errors import ResultsError

__all__ = ["boxes_outside", "match_images"]

#: Pixels a box may stick out of its image before it counts as outside (rounding, padding).
OUTSIDE_TOLERANCE = 2.0


def _parts(name: str) -> tuple[str, ...]:
    return PurePosixPath(str(name).replace("\\", "/")).parts


def _load_index(images: Any) -> tuple[list[Mapping[str, Any]], str]:
    if isinstance(images, (str, Path)):
        path = Path(images)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"image index {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ResultsError(f"image index {path}: not readable JSON ({exc})") from None
        source = str(path)
    else:
        data, source = images, "image index"
    if not isinstance(data, list) or not all(
        isinstance(e, Mapping) and "id" in e and "file_name" in e for e in data
    ):
        raise ResultsError(
            f"{source}: expected a list of {{id, file_name, ...}} objects (the images.json that "
            "fnl predict and fnl run write)"
        )
    return data, source


def _gt_match(name: str, gt_images: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The ground-truth images whose file name is the longest tail of ``name``'s path."""
    parts = _parts(name)
    best: list[Mapping[str, Any]] = []
    depth = 0
    for img in gt_images:
        gt_parts = _parts(img.get("file_name", ""))
        n = 0
        while n < min(len(parts), len(gt_parts)) and parts[-1 - n] == gt_parts[-1 - n]:
            n += 1
        if n == 0:
            continue
        if n > depth:
            best, depth = [img], n
        elif n == depth:
            best.append(img)
    return best


def match_images(
    dataset: Mapping[str, Any], results: list[dict[str, Any]], images: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ground truth restricted to the images of ``images`` (an ``images.json`` path or
    list), and the results with their ``image_id`` renamed to those images' ground-truth ids.
    Raises :class:`ResultsError` when an image cannot be matched by file name."""
    index, source = _load_index(images)
    gt_images = list(dataset.get("images", []))
    mapping: dict[Any, int] = {}
    problems: list[str] = []
    for entry in index:
        name = str(entry["file_name"])
        if entry.get("frame") is not None:
            problems.append(f"{name} frame {entry['frame']} is a video frame")
            continue
        found = _gt_match(name, gt_images)
        if not found:
            problems.append(f"{name} has no ground-truth image of that file name")
            continue
        if len(found) > 1:
            names = ", ".join(str(img["file_name"]) for img in found[:3])
            problems.append(f"{name} matches several ground-truth images ({names})")
            continue
        img = found[0]
        size = (entry.get("height"), entry.get("width"))
        gt_size = (img.get("height"), img.get("width"))
        if (
            None not in size
            and None not in gt_size
            and tuple(map(int, size)) != tuple(map(int, gt_size))
        ):
            problems.append(
                f"{name} is {size[0]}x{size[1]} but ground-truth {img['file_name']} is "
                f"{gt_size[0]}x{gt_size[1]}"
            )
            continue
        mapping[entry["id"]] = int(img["id"])
    if problems:
        raise ResultsError(
            f"{source}: {len(problems)} of {len(index)} image(s) cannot be matched to the ground "
            f"truth by file name: {'; '.join(problems[:3])}"
            + ("; ..." if len(problems) > 3 else "")
        )
    unknown = sorted({d["image_id"] for d in results} - set(mapping))
    if unknown:
        raise ResultsError(
            f"results refer to image id(s) {unknown[:5]} that {source} does not list"
        )
    if len(set(mapping.values())) < len(mapping):
        raise ResultsError(f"{source}: two entries name the same ground-truth image")
    kept = set(mapping.values())
    subset = {
        **dataset,
        "images": [img for img in gt_images if int(img["id"]) in kept],
        "annotations": [a for a in dataset.get("annotations", []) if a["image_id"] in kept],
    }
    renamed = [{**d, "image_id": mapping[d["image_id"]]} for d in results]
    return subset, renamed


def boxes_outside(
    dataset: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> tuple[int, str | None]:
    """How many detections lie (partly) outside their image by more than
    :data:`OUTSIDE_TOLERANCE` pixels, and a description of the first one."""
    sizes = {
        img["id"]: (float(img["height"]), float(img["width"]))
        for img in dataset.get("images", [])
        if "height" in img and "width" in img
    }
    count, first = 0, None
    tol = OUTSIDE_TOLERANCE
    for det in results:
        size = sizes.get(det["image_id"])
        if size is None:
            continue
        h, w = size
        x, y, bw, bh = (float(v) for v in det["bbox"])
        if x < -tol or y < -tol or x + bw > w + tol or y + bh > h + tol:
            count += 1
            if first is None:
                first = (
                    f"image_id {det['image_id']}: box x {x:.0f}-{x + bw:.0f}, y {y:.0f}-"
                    f"{y + bh:.0f} in a {w:.0f}x{h:.0f} image"
                )
    return count, first
