"""``fnl run MODEL IMAGE_OR_DIR_OR_VIDEO... --out DIR``: an exported graph on images and videos,
without torch.

Writes what ``fnl predict`` writes (:mod:`fnl_core.prediction_writer`): per image
``<name>_densepose.png`` and ``<name>_iuv.png``; per video ``<name>_densepose.mp4`` (same frame
rate and size; needs PyAV, ``fnl-runtime[video]``); ``results.json`` / ``images.json`` for all
(video entries carry their ``frame`` index). A file that cannot be read is reported on one line
and skipped; the command goes on and exits with status 1 at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from fnl_core.arguments import add_min_score_argument, positive_int
from fnl_core.command import Command
from fnl_core.outputs import add_overwrite_argument


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="folder written by `fnl export`, or a .onnx file in one")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR_OR_VIDEO")
    parser.add_argument("--out", required=True, help="output folder")
    add_overwrite_argument(parser)
    add_min_score_argument(parser, "pictures and IUV rasters")
    parser.add_argument("--int8", action="store_true", help="run the folder's int8 graph")
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        help="refuse images with more pixels than this (default 50000000: 50 MP)",
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="onnxruntime threads")


def run_video(runtime: Any, writer: Any, path: Path, name: str) -> int:
    """Every frame of ``path`` through ``runtime``; the pictures become ``<name>_densepose.mp4``."""
    from fnl_core.errors import InputError

    try:
        import av
    except ImportError:
        raise InputError(
            f"{path}: reading videos needs PyAV (pip install 'fnl-runtime[video]')"
        ) from None
    frames = 0
    try:
        source = av.open(str(path))
    except av.FFmpegError as exc:
        raise InputError(f"{path}: unreadable video ({exc})") from None
    with source:
        if not source.streams.video:
            raise InputError(f"{path}: no video stream")
        stream = source.streams.video[0]
        with av.open(str(writer.out_dir / f"{name}_densepose.mp4"), "w") as sink:
            out = sink.add_stream("mpeg4", rate=stream.average_rate or 25)
            out.width, out.height, out.pix_fmt = stream.width, stream.height, "yuv420p"

            def encode(picture: Any) -> None:
                for packet in out.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                    sink.mux(packet)

            try:
                for frame in source.decode(stream):
                    image = frame.to_ndarray(format="rgb24")
                    pred = runtime(image)
                    charts = runtime.iuv(pred)
                    writer.add(
                        path, name, image, pred["boxes"], pred["scores"], charts,
                        frame=frames, on_picture=encode,
                        extras=runtime.result_extras(pred, charts),
                    )  # fmt: skip
                    frames += 1
            except av.FFmpegError as exc:
                raise InputError(
                    f"{path}: frame {frames}: {exc} (the frames before it are written)"
                ) from None
            finally:
                for packet in out.encode():
                    sink.mux(packet)
    if frames == 0:
        raise InputError(f"{path}: no video frames decoded")
    return frames


def _run(args: argparse.Namespace) -> int:
    from fnl_core.errors import InputError
    from fnl_core.imaging import read_image, resized_shape
    from fnl_core.inputs import collect_inputs, is_video
    from fnl_core.outputs import check_output_dir
    from fnl_core.prediction_writer import OUTPUT_PATTERNS, PredictionWriter, output_names
    from fnl_runtime.runtime import Runtime

    files = collect_inputs(args.inputs, "fnl run")
    check_output_dir(args.out, outputs=OUTPUT_PATTERNS, overwrite=args.overwrite)
    names = output_names(files)
    runtime = Runtime(args.model, int8=args.int8, threads=args.threads)
    writer = PredictionWriter(args.out, args.min_score)
    failures: list[str] = []
    max_pixels = {"max_pixels": args.max_pixels} if args.max_pixels else {}
    start = time.perf_counter()
    try:
        for path in files:
            try:
                if is_video(path):
                    print(f"{path}: {run_video(runtime, writer, path, names[path])} frames")
                    continue
                image = read_image(path, **max_pixels)
                resized_shape(*image.shape[:2], runtime.min_size, runtime.max_size)
                pred = runtime(image)
                charts = runtime.iuv(pred)
                extras = runtime.result_extras(pred, charts)
                kept = writer.add(
                    path, names[path], image, pred["boxes"], pred["scores"], charts, extras=extras
                )
            except InputError as exc:
                named = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                print(f"fnl run: skipped: {named}", file=sys.stderr)
                failures.append(str(path))
                continue
            print(f"{path}: {len(charts)} detections, {kept} above {args.min_score}")
    finally:
        writer.finish()
    print(
        f"wrote {writer.images} images' outputs, {writer.detections} detections to "
        f"{writer.out_dir} ({time.perf_counter() - start:.1f} s, {runtime.path.name})"
    )
    if failures:
        print(f"fnl run: {len(failures)} of {len(files)} inputs failed", file=sys.stderr)
        return 1
    return 0


command = Command(
    help="run an `fnl export` folder (ONNX, no torch) on images/videos: pictures, IUV, results",
    configure=_configure,
    run=_run,
    description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
)
