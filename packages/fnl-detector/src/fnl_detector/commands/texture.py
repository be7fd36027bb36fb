"""``fnl texture`` and ``fnl retexture``: people's appearance in the DensePose atlas
(:mod:`fnl_core.texture`, docs/texture.md).

``fnl texture INPUTS --model/--weights ... --out DIR`` lifts each detected person (score above
``--min-score``) into an atlas (``6N × 4N``, ``N = --tile``). For an image, OUT gets
``<name>_person<k>_atlas.png`` (RGBA, alpha = coverage) and ``<name>_person<k>_confidence.png``
(grey: the texel's summed pixel weight over the largest one, 0 = uncovered), ``k`` in score
order. A video, and the images of the inputs taken together with ``--merge``, form one
sequence: detections are linked into tracks by box IoU with the previous frame
(:class:`fnl_core.texture.IoUTracker`), each track's atlases are accumulated over its frames
(texels weighted by the model's confidence where it has one, else by chart area), and OUT gets
``<name>_track<k>_atlas.png`` / ``_confidence.png`` and ``<name>_tracks.json`` (how tracks were
formed, and per track its frames and covered texels).

``fnl retexture INPUTS --texture ATLAS --model/--weights ... --out DIR`` paints the atlas onto
every detected person (bilinear lookup in the part's tile; blended with the photo by the atlas
alpha times the chart's confidence): ``<name>_retextured.png`` per image,
``<name>_retextured.mp4`` per video (same frame rate and size).

A file that cannot be read is reported on one line and skipped; the command exits with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fnl_core.arguments import add_min_score_argument
from fnl_core.command import Command
from fnl_core.outputs import add_overwrite_argument
from fnl_detector.commands import positive_int
from fnl_detector.commands._weights import add_model_arguments, model_from_args, warn_toy_only


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_VIDEO_OR_DIR")
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder")
    add_overwrite_argument(parser)
    add_min_score_argument(parser, "atlases and painting")
    parser.add_argument(
        "--every", type=positive_int, default=1, help="videos: use every N-th frame (default 1)"
    )
    parser.add_argument("--max-frames", type=positive_int, help="videos: stop after N frames")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--backend", choices=("auto", "torch", "onnxruntime"), default="auto",
        help="what runs the network (as fnl predict; default auto)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _configure_texture(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument(
        "--tile", type=positive_int, default=200, help="atlas tile size N (default 200)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="treat all image inputs, in order, as the frames of one sequence (tracked and "
        "accumulated like a video, named 'merged')",
    )
    parser.add_argument(
        "--min-iou",
        type=float,
        default=0.3,
        help="tracking: least box IoU with the previous frame to continue a track (default 0.3)",
    )


def _configure_retexture(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument(
        "--texture", required=True, metavar="ATLAS", help="atlas image (6N x 4N, RGB or RGBA)"
    )


#: What each command writes into ``--out`` (earlier results need ``--overwrite``).
OUTPUTS = {
    "texture": ("*_atlas.png", "*_confidence.png", "*_tracks.json"),
    "retexture": ("*_retextured.png", "*_retextured.mp4"),
}


class _Session:
    """Model, inputs and failures shared by both commands."""

    def __init__(self, args: argparse.Namespace, command: str) -> None:
        from fnl_detector.threads import prefer_passive_omp_wait

        prefer_passive_omp_wait()
        from fnl_core.inputs import collect_inputs
        from fnl_core.outputs import check_output_dir
        from fnl_core.prediction_writer import output_names

        self.args = args
        self.command = command
        self.files = collect_inputs(args.inputs, f"fnl {command}")
        self.names = output_names(self.files)
        self.out = check_output_dir(args.out, outputs=OUTPUTS[command], overwrite=args.overwrite)
        self.out.mkdir(parents=True, exist_ok=True)
        self.failures: list[str] = []
        resolved = model_from_args(args, progress=not args.no_progress)
        warn_toy_only(args, self.files, command)
        from fnl_detector.predictor import Predictor

        self.predictor = Predictor(
            resolved.spec,
            resolved.weights,
            device=args.device,
            threads=args.threads,
            backend=args.backend,
        )

    def detections(self, image: Any) -> list[tuple[Any, Any]]:
        """(XYXY box, :class:`~fnl_core.texture.Chart`) of the detections above
        ``--min-score``, in ascending score order."""
        from fnl_core.errors import InputError
        from fnl_core.texture import chart_of
        from fnl_detector.results import to_coco_results

        result = self.predictor(image, iuv=True, iuv_min_score=self.args.min_score)
        if "embedding" in result["densepose"]:
            raise InputError(
                f"fnl {self.command} needs a chart model (I, U, V); this model predicts CSE "
                "embeddings"
            )
        entries = [e for e in to_coco_results(0, result) if e["score"] > self.args.min_score]
        entries.sort(key=lambda e: e["score"])
        out = []
        for entry in entries:
            x, y, w, h = entry["bbox"]
            out.append(((x, y, x + w, y + h), chart_of(entry)))
        return out

    def frames(self, path: Path) -> tuple[Any, Any]:
        """(video info, iterator of (index, frame)) of a video, or (None, None) if unreadable."""
        from fnl_core.errors import InputError
        from fnl_detector.video import probe_video, read_video

        try:
            info = probe_video(path)
        except InputError as exc:
            self.fail(path, str(exc))
            return None, None
        return info, read_video(path, every=self.args.every, max_frames=self.args.max_frames)

    def frame_total(self, info: Any) -> int | None:
        if info.frames is None:
            return None
        total = len(range(0, info.frames, self.args.every))
        return min(total, self.args.max_frames) if self.args.max_frames else total

    def read(self, path: Path) -> Any:
        from fnl_core.errors import ImageReadError
        from fnl_core.imaging import read_image

        try:
            image = read_image(path, max_pixels=self.predictor.max_pixels)
            self.predictor.input_size(*image.shape[:2])  # too thin to resize: skipped here
        except ImageReadError as exc:
            self.fail(path, str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            return None
        return image

    def fail(self, path: Path, message: str) -> None:
        print(f"fnl {self.command}: skipped: {message}", file=sys.stderr)
        self.failures.append(str(path))

    def bar(self, total: int | None, desc: str, unit: str) -> Any:
        from tqdm import tqdm

        return tqdm(
            total=total, desc=desc, unit=unit, disable=self.args.no_progress, dynamic_ncols=True
        )

    def finish(self, summary: str) -> int:
        print(summary)
        if self.failures:
            print(
                f"fnl {self.command}: {len(self.failures)} of {len(self.files)} input(s) "
                "failed: " + "; ".join(self.failures),
                file=sys.stderr,
            )
            return 1
        return 0


def _save_atlas(out: Path, stem: str, atlas: Any, coverage: Any) -> None:
    import numpy as np

    from fnl_core.imaging import save_png
    from fnl_core.texture import to_rgba

    save_png(to_rgba(atlas, coverage), out / f"{stem}_atlas.png")
    top = float(coverage.max()) if coverage.size else 0.0
    grey = np.zeros(coverage.shape, dtype=np.uint8)
    if top > 0:
        grey = np.clip(np.rint(coverage / top * 254) + (coverage > 0), 0, 255).astype(np.uint8)
    save_png(np.repeat(grey[..., None], 3, axis=-1), out / f"{stem}_confidence.png")


class _Sequence:
    """Tracking and accumulation over the frames of one video or merged folder."""

    def __init__(self, session: _Session, name: str) -> None:
        from fnl_core.texture import IoUTracker

        self.session = session
        self.name = name
        self.tracker = IoUTracker(session.args.min_iou)
        self.tracks: dict[int, Any] = {}
        self.frames: dict[int, list[Any]] = {}

    def add(self, frame: Any, image: Any) -> None:
        from fnl_core.texture import TextureAccumulator, extract_texture

        found = self.session.detections(image)
        ids = self.tracker.update([box for box, _ in found])
        for track, (_, chart) in zip(ids, found, strict=True):
            acc = self.tracks.setdefault(track, TextureAccumulator())
            acc.add(*extract_texture(image, chart, tile=self.session.args.tile))
            self.frames.setdefault(track, []).append(frame)

    def write(self) -> int:
        out = self.session.out
        report = {
            "tracking": "box IoU between consecutive frames (fnl_core.texture.IoUTracker): a "
            f"detection continues the track whose box in the previous frame overlaps it most, "
            f"if IoU >= {self.session.args.min_iou}; a track missing from a frame ends",
            "min_score": self.session.args.min_score,
            "tile": self.session.args.tile,
            "tracks": [],
        }
        for track, acc in sorted(self.tracks.items()):
            atlas, coverage = acc.result()
            _save_atlas(out, f"{self.name}_track{track}", atlas, coverage)
            report["tracks"].append(
                {
                    "track": track,
                    "atlas": f"{self.name}_track{track}_atlas.png",
                    "frames": self.frames[track],
                    "covered_texels": int((coverage > 0).sum()),
                    "coverage_fraction": float((coverage > 0).mean()),
                }
            )
        (out / f"{self.name}_tracks.json").write_text(json.dumps(report, indent=1))
        return len(self.tracks)


def _run_texture(args: argparse.Namespace) -> int:
    from fnl_core.errors import InputError
    from fnl_core.inputs import is_video
    from fnl_core.texture import atlas_shape, extract_texture

    atlas_shape(args.tile)  # rejects tile < 2 before the model loads
    if not 0.0 < args.min_iou <= 1.0:
        raise InputError(f"--min-iou must be in (0, 1], got {args.min_iou}")
    session = _Session(args, "texture")
    written = 0
    images = [f for f in session.files if not is_video(f)]
    merged = _Sequence(session, "merged") if args.merge and images else None
    bar = session.bar(len(images), "images", "image") if images else None
    for path in session.files:
        if is_video(path):
            info, frames = session.frames(path)
            if frames is None:
                continue
            sequence = _Sequence(session, session.names[path])
            progress = session.bar(session.frame_total(info), str(path), "frame")
            try:
                for index, frame in frames:
                    sequence.add(index, frame)
                    progress.update(1)
            except InputError as exc:  # a damaged frame: keep what came before
                session.fail(path, f"{exc} (the frames before it are accumulated)")
            finally:
                progress.close()
            written += sequence.write()
            continue
        image = session.read(path)
        if image is not None:
            if merged is not None:
                merged.add(str(path), image)
            else:
                for k, (_, chart) in enumerate(reversed(session.detections(image))):
                    atlas, coverage = extract_texture(image, chart, tile=args.tile)
                    _save_atlas(session.out, f"{session.names[path]}_person{k}", atlas, coverage)
                    written += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if merged is not None:
        written += merged.write()
    return session.finish(f"wrote {written} atlas(es) to {session.out}")


def _run_retexture(args: argparse.Namespace) -> int:
    from fnl_core.errors import InputError
    from fnl_core.texture import read_atlas

    try:
        atlas = read_atlas(args.texture)  # checked before the model loads
    except ValueError as exc:
        raise InputError(f"--texture {args.texture}: {exc}") from exc
    from fnl_core.imaging import save_png
    from fnl_core.inputs import is_video
    from fnl_core.texture import apply_texture

    session = _Session(args, "retexture")

    def paint(image: Any) -> Any:
        return apply_texture(image, [chart for _, chart in session.detections(image)], atlas)

    written = 0
    images = [f for f in session.files if not is_video(f)]
    bar = session.bar(len(images), "images", "image") if images else None
    for path in session.files:
        name = session.names[path]
        if not is_video(path):
            image = session.read(path)
            if image is not None:
                save_png(paint(image), session.out / f"{name}_retextured.png")
                written += 1
            if bar is not None:
                bar.update(1)
            continue
        from fnl_detector.video import VideoWriter

        info, frames = session.frames(path)
        if frames is None:
            continue
        progress = session.bar(session.frame_total(info), str(path), "frame")
        target = session.out / f"{name}_retextured.mp4"
        try:
            fps = info.fps / session.args.every  # as long as the input
            with VideoWriter(target, fps, info.width, info.height) as writer:
                for _, frame in frames:
                    writer.write(paint(frame))
                    progress.update(1)
            written += 1
        except InputError as exc:
            session.fail(path, f"{exc} (the frames before it are in {target.name})")
        finally:
            progress.close()
    if bar is not None:
        bar.close()
    return session.finish(f"wrote {written} retextured image(s)/video(s) to {session.out}")


texture_command = Command(
    help="lift each person's appearance into the DensePose atlas (per image, or per track "
    "accumulated over a video)",
    configure=_configure_texture,
    run=_run_texture,
    description=__doc__,
)

retexture_command = Command(
    help="paint a DensePose atlas onto every detected person in images and videos",
    configure=_configure_retexture,
    run=_run_retexture,
    description=__doc__,
)
