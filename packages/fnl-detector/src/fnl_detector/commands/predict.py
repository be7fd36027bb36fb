"""``fnl predict``: DensePose on images, folders of images and videos, through
:class:`fnl_detector.Predictor` (the same preprocessing and speed-ups as every FnL command).

Inputs are processed in the order given; a folder's images (not recursive) in file-name order,
so a folder of video frames stays in frame order. For every image OUT gets
``<name>_densepose.png`` (part colours and U/V contour lines of detections above
``--min-score``) and ``<name>_iuv.png`` (3-channel uint8 I, 255·U, 255·V in full-image
coordinates; overlaps go to the highest score). ``<name>`` is the file's stem, prefixed with
its folder names where two inputs share a stem (``a/x.jpg``, ``b/x.jpg`` → ``a_x``, ``b_x``).
For every video OUT gets ``<name>_densepose.mp4`` (same frame rate and size) and, with
``--iuv-frames``, ``<name>_iuv/<frame>.png``.

All detections go to ``OUT/results.json`` (DensePose-COCO results; video detections carry their
``frame`` index) and ``OUT/images.json`` maps each ``image_id`` to its file (and frame). Both
are appended per image to ``results.jsonl`` / ``images.jsonl`` as they are produced and written
in full at the end, also on Ctrl-C, so an interruption loses nothing already done.

A file that cannot be read is reported on one line and skipped; the command goes on and exits
with status 1 and a summary at the end.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fnl_core.arguments import add_min_score_argument
from fnl_core.command import Command
from fnl_core.outputs import add_overwrite_argument
from fnl_detector.commands import (
    add_overrides_argument,
    check_spec_arguments,
    positive_int,
)
from fnl_detector.commands import progress as progress_line
from fnl_detector.commands._weights import add_model_arguments, model_from_args, warn_toy_only


@dataclass
class _Item:
    """One image to run: a file, or a frame of a video."""

    path: Path
    name: str
    array: Any
    frame: int | None = None


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_VIDEO_OR_DIR")
    add_model_arguments(parser, weights=False)
    parser.add_argument(
        "--weights",
        metavar="PATH",
        help="model.safetensors, a reference .pth/.pkl checkpoint (converted on load), or the "
        "int8 folder (or its model_int8.pt) written by fnl quantize",
    )
    parser.add_argument("--out", required=True, help="output folder")
    add_overwrite_argument(parser)
    add_min_score_argument(parser, "pictures and IUV rasters")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    parser.add_argument(
        "--batch-size", type=positive_int, default=1, help="images per forward pass (default 1)"
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        help="refuse images with more pixels than this (default 50000000: 50 MP, which guards "
        "against decompression bombs); raise it for larger photos",
    )
    parser.add_argument(
        "--every",
        type=positive_int,
        default=1,
        help="videos: run every N-th frame (default 1); the output video plays at the input's "
        "frame rate divided by N, so it lasts as long as the input",
    )
    parser.add_argument(
        "--max-frames", type=positive_int, help="videos: stop after this many frames run"
    )
    parser.add_argument(
        "--iuv-frames", action="store_true", help="videos: also write each frame's IUV PNG"
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="run the model as built (no BN folding, channels_last or parallel RoI ops)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "onnxruntime"),
        default="auto",
        help="what runs the network: ONNX Runtime (the model exported once, checked against "
        "PyTorch and cached; needs fnl-detector[export]) or PyTorch; auto (default): ONNX "
        "Runtime for float models on the CPU when it is installed, else PyTorch",
    )
    parser.add_argument(
        "--show",
        default="parts",
        metavar="WHAT",
        help="what the pictures show: parts (part colours and U/V lines, default) or one of the "
        "model's confidences (sigma_2, kappa_u, kappa_v, fine_segm_confidence, "
        "coarse_segm_confidence; 'sigma' = sigma_2); CSE models always show their vertices",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_overrides_argument(parser, "spec overrides, e.g. input.min_size_test=512")


def _run(args: argparse.Namespace) -> int:
    check_spec_arguments(args)  # a spec typo fails before torch is imported
    from fnl_core.inputs import collect_inputs, is_video
    from fnl_core.outputs import check_output_dir
    from fnl_core.prediction_writer import OUTPUT_PATTERNS

    files = collect_inputs(args.inputs, "fnl predict")
    check_output_dir(args.out, outputs=OUTPUT_PATTERNS, overwrite=args.overwrite)
    from fnl_detector.threads import prefer_passive_omp_wait

    prefer_passive_omp_wait()
    from fnl_detector.predictor import Predictor

    resolved = model_from_args(args, progress=not args.no_progress)
    warn_toy_only(args, files, "predict")
    say = partial(progress_line, "predict")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        predictor = Predictor(
            resolved.spec,
            resolved.weights,
            overrides=args.overrides,
            device=args.device,
            threads=args.threads,
            optimize=not args.plain,
            backend=args.backend,
            progress=None if args.no_progress else say,
            **({"max_pixels": args.max_pixels} if args.max_pixels else {}),
        )
    for warning in caught:  # the backend fallback as one line; others as Python shows them
        if str(warning.message).startswith("backend auto:"):
            say(f"warning: {warning.message}")
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    from fnl_core.prediction_writer import output_names

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _PredictRun(predictor, args, out_dir, output_names(files))
    try:
        for path in files:
            if is_video(path):
                run.video(path)
            else:
                run.images([path])
        run.flush()
    except KeyboardInterrupt:
        run.close()
        print(
            f"fnl predict: interrupted; the {run.writer.images} image(s)/frame(s) done are in "
            f"{out_dir} (results.json, images.json)",
            file=sys.stderr,
        )
        return 130
    except BaseException:
        run.close()
        raise
    run.close()
    print(
        f"wrote {run.writer.images} image(s)/frame(s), {run.writer.detections} detections to "
        f"{out_dir} (results.json, images.json); network run by {predictor.backend}"
    )
    if run.failures:
        print(
            f"fnl predict: {len(run.failures)} of {len(files)} input(s) failed: "
            + "; ".join(run.failures),
            file=sys.stderr,
        )
        return 1
    return 0


class _PredictRun:
    """State of one ``fnl predict`` call: batching, outputs, failures."""

    def __init__(
        self, predictor: Any, args: argparse.Namespace, out_dir: Path, names: dict[Path, str]
    ) -> None:
        self.predictor = predictor
        self.args = args
        self.out_dir = out_dir
        self.names = names
        from fnl_core.prediction_writer import PredictionWriter

        self.writer = PredictionWriter(out_dir, args.min_score)
        self.embedder = getattr(getattr(predictor.model, "roi_heads", None), "embedder", None)
        self.show = {"sigma": "sigma_2"}.get(args.show, args.show)
        self.pending: list[_Item] = []
        self.failures: list[str] = []
        self.next_id = 1
        self._progress = None
        self._on_picture: Any = None

    # ----------------------------------------------------------------- inputs
    def images(self, paths: list[Path]) -> None:
        from fnl_core.errors import ImageReadError
        from fnl_core.imaging import read_image

        for path in paths:
            try:
                array = read_image(path, max_pixels=self.predictor.max_pixels)
                self.predictor.input_size(*array.shape[:2])  # too thin to resize: skipped here
            except ImageReadError as exc:
                self._fail(path, _named(path, exc))
                continue
            self.pending.append(_Item(path, self.names[path], array))
            if len(self.pending) >= self.args.batch_size:
                self.flush()

    def video(self, path: Path) -> None:
        from fnl_core.errors import InputError
        from fnl_detector.video import VideoWriter, probe_video, read_video

        self.flush()
        name = self.names[path]
        try:
            info = probe_video(path)
            self.predictor.input_size(info.height, info.width)
        except InputError as exc:
            self._fail(path, _named(path, exc))
            return
        total = info.frames
        if total is not None:
            total = len(range(0, total, self.args.every))
            if self.args.max_frames:
                total = min(total, self.args.max_frames)
        if self.args.iuv_frames:
            (self.out_dir / f"{name}_iuv").mkdir(exist_ok=True)
        progress = _progress_bar(total, str(path), self.args.no_progress)
        out_video = self.out_dir / f"{name}_densepose.mp4"
        try:
            fps = info.fps / self.args.every  # as long as the input, not N times faster
            with VideoWriter(out_video, fps, info.width, info.height) as writer:
                self._on_picture = writer.write
                frames = read_video(path, every=self.args.every, max_frames=self.args.max_frames)
                try:
                    for index, frame in frames:
                        self.pending.append(_Item(path, name, frame, index))
                        if len(self.pending) >= self.args.batch_size:
                            self.flush()
                        progress.update(1)
                    self.flush()
                except InputError as exc:
                    self.flush()
                    self._fail(path, f"{exc} (the frames before it are in {out_video.name})")
        finally:
            self._on_picture = None
            progress.close()

    # ----------------------------------------------------------------- running
    def flush(self) -> None:
        """Run the pending images as one batch and write their outputs."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        results = self.predictor(
            [item.array for item in batch], iuv=True, iuv_min_score=self.args.min_score
        )
        for item, result in zip(batch, results, strict=True):
            self._write(item, result)

    def _write(self, item: _Item, result: dict[str, Any]) -> None:
        from fnl_detector.results import detection_extras

        boxes = result["boxes"].numpy().reshape(-1, 4)
        scores = result["scores"].numpy()
        extras = detection_extras(result, self.embedder)
        is_cse = "embedding" in result["densepose"]
        if not is_cse:  # the Predictor's tensors as the arrays the writer draws and encodes
            result = {**result, "charts": [c.numpy() for c in result["charts"]]}
            result["iuv"] = result["iuv"].numpy()
        kept = self.writer.add(
            item.path,
            item.name,
            item.array,
            boxes,
            scores,
            None if is_cse else result["charts"],
            frame=item.frame,
            on_picture=self._on_picture,
            extras=extras,
            picture=self._picture(item.array, result, boxes, scores, is_cse),
            iuv=None if is_cse else result["iuv"],
        )
        if item.frame is None:
            print(f"{item.path}: {len(scores)} detections, {kept} above {self.args.min_score}")
        elif self.args.iuv_frames and not is_cse:
            from fnl_core.imaging import save_png

            save_png(result["iuv"], self.out_dir / f"{item.name}_iuv" / f"{item.frame:06d}.png")

    def _picture(self, image: Any, result: dict[str, Any], boxes, scores, is_cse: bool) -> Any:
        """The CSE vertex picture, a confidence picture (``--show``), or None (parts)."""
        import torch

        from fnl_core import visualize
        from fnl_core.errors import InputError
        from fnl_detector.postprocess import chart_confidences, densepose_to_vertex_maps

        dp = result["densepose"]
        min_score = self.args.min_score
        if is_cse:
            maps = densepose_to_vertex_maps(result["boxes"], dp, self.embedder)
            vertices = [v.numpy() for v, _ in maps]
            masks = [m.numpy() for _, m in maps]
            count = getattr(self.embedder, "num_vertices", None)
            return visualize.draw_vertices(
                image, boxes, scores, vertices, masks, num_vertices=count, min_score=min_score
            )
        if self.show == "parts":
            return None
        labels = [torch.from_numpy(iuv[0]).long() for iuv in result["charts"]]
        confidences = chart_confidences(result["boxes"], dp, labels)
        if len(scores) and self.show not in confidences[0]:
            have = ", ".join(sorted(confidences[0])) or "none"
            raise InputError(f"--show {self.args.show}: the model has no such output (has: {have})")
        maps = [c[self.show].numpy() for c in confidences]
        masks = None
        if self.show in ("sigma_2", "kappa_u", "kappa_v"):
            masks = [lab.numpy() > 0 for lab in labels]
        return visualize.draw_confidence(image, boxes, scores, maps, masks, min_score=min_score)

    def _fail(self, path: Path, message: str) -> None:
        print(f"fnl predict: skipped: {message}", file=sys.stderr)
        self.failures.append(str(path))

    def close(self) -> None:
        self.writer.finish()


def _named(path: Path, exc: Exception) -> str:
    """The error's message, with the file's name in front unless it already has it."""
    message = str(exc)
    return message if str(path) in message else f"{path}: {message}"


def _progress_bar(total: int | None, desc: str, disable: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=disable, dynamic_ncols=True)


command = Command(
    help="run a detector on images, folders or videos: pictures, IUV PNGs, results JSON",
    configure=_configure,
    run=_run,
    description=__doc__,
)
