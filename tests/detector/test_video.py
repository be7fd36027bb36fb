"""Videos: reading frames in order, writing, and ``fnl predict clip.mp4`` end to end."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from detector_standins import tiny_spec

from fnl_core.cli import main
from fnl_core.errors import InputError
from fnl_detector import build_detector
from fnl_detector.analysis import calibrate_batch_norm
from fnl_detector.weights import save_weights

av = pytest.importorskip("av", reason="PyAV (fnl-detector[video]) is not installed")

from fnl_detector import video  # noqa: E402

H, W, N = 48, 64, 12


def _frame(k: int) -> np.ndarray:
    """Frame k: grey level 20 k, so decoded frames can be put in order by brightness."""
    return np.full((H, W, 3), 20 * k, dtype=np.uint8)


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    with video.VideoWriter(path, 10, W, H) as writer:
        for k in range(N):
            writer.write(_frame(k))
    return path


def _mjpeg_avi(path, frames: int = N):
    """An MJPEG AVI (every frame a separate JPEG, so one frame can be damaged alone)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("mjpeg", rate=10)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuvj420p"
    for k in range(frames):
        for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(k), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    return data, starts


def _damage(data: bytearray, starts: list[int], k: int) -> bytes:
    """Zero frame k's JPEG bytes (the AVI chunk header of frame k + 1, 8 bytes, stays)."""
    data[starts[k] : starts[k + 1] - 8] = bytes(starts[k + 1] - 8 - starts[k])
    return bytes(data)


def _means(frames) -> list[int]:
    return [round(float(f.mean())) for _, f in frames]


def test_twelve_frames_in_order(clip):
    info = video.probe_video(clip)
    assert (info.width, info.height, info.fps, info.frames) == (W, H, Fraction(10), N)
    frames = list(video.read_video(clip))
    assert [i for i, _ in frames] == list(range(N))
    means = _means(frames)
    assert means == sorted(means) and abs(means[-1] - 20 * (N - 1)) <= 2
    picked = list(video.read_video(clip, every=3, max_frames=3))
    assert [i for i, _ in picked] == [0, 3, 6]


def test_bad_videos_name_file_and_frame(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(InputError, match=r"fake\.mp4: not a video file"):
        list(video.read_video(fake))
    with pytest.raises(InputError, match="no such video file"):
        list(video.read_video(tmp_path / "missing.mp4"))
    data, starts = _mjpeg_avi(tmp_path / "ok.avi")
    (tmp_path / "headless.avi").write_bytes(bytes(data[: starts[0]]))
    with pytest.raises(InputError, match="has no frames"):
        list(video.read_video(tmp_path / "headless.avi"))
    (tmp_path / "damaged.avi").write_bytes(_damage(data, starts, 6))
    seen = []
    with pytest.raises(InputError, match=r"damaged\.avi: frame 6: cannot be decoded"):
        for index, _ in video.read_video(tmp_path / "damaged.avi"):
            seen.append(index)
    assert seen == [0, 1, 2, 3, 4, 5]


@pytest.fixture
def weights(tiny_components, tmp_path):
    torch.manual_seed(0)
    model = build_detector(tiny_spec(test={"score_thresh": 0.0, "detections_per_image": 2}))
    model.eval()
    rng = np.random.default_rng(0)
    calibrate_batch_norm(model, [torch.from_numpy(rng.random((3, H, W)) * 255).float()])
    path = tmp_path / "tiny.safetensors"
    save_weights(model.state_dict(), path, {"spec": json.dumps(model.spec.to_dict())})
    return path


def _predict(*args: str) -> int:
    return main(["predict", *args, "--device", "cpu", "--no-progress"])


def test_predict_on_a_clip(weights, clip, tmp_path):
    out = tmp_path / "out"
    args = [str(clip), "--weights", str(weights), "--out", str(out), "--min-score", "1"]
    assert _predict(*args, "--iuv-frames", "--batch-size", "5") == 0
    images = json.loads((out / "images.json").read_text())
    assert [e["frame"] for e in images] == list(range(N))
    assert [e["id"] for e in images] == list(range(1, N + 1))
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 2 * N
    assert sorted({r["frame"] for r in results}) == list(range(N))
    assert all(r["image_id"] == r["frame"] + 1 for r in results)
    annotated = out / "clip_densepose.mp4"
    info = video.probe_video(annotated)
    assert (info.width, info.height, info.fps) == (W, H, Fraction(10))
    means = _means(video.read_video(annotated))
    assert len(means) == N and means == sorted(means)  # nothing drawn at --min-score 1
    assert sorted(p.name for p in (out / "clip_iuv").iterdir())[:2] == ["000000.png", "000001.png"]
    assert len(list((out / "clip_iuv").iterdir())) == N


def test_predict_every_and_max_frames(weights, clip, tmp_path):
    out = tmp_path / "out"
    args = [str(clip), "--weights", str(weights), "--out", str(out), "--every", "4"]
    assert _predict(*args, "--max-frames", "2") == 0
    assert [e["frame"] for e in json.loads((out / "images.json").read_text())] == [0, 4]
    assert len(list(video.read_video(out / "clip_densepose.mp4"))) == 2
    # every 4th frame of a 10 fps clip plays at 2.5 fps: as long as the input (issue #24)
    assert video.probe_video(out / "clip_densepose.mp4").fps == Fraction(10, 4)


def test_predict_keeps_frames_before_a_damaged_one(weights, tmp_path, capsys):
    data, starts = _mjpeg_avi(tmp_path / "ok.avi")
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(_damage(data, starts, 6))
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    out = tmp_path / "out"
    assert _predict(str(damaged), str(fake), "--weights", str(weights), "--out", str(out)) == 1
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == 2
    assert "damaged.avi: frame 6" in skipped[0] and "fake.mp4" in skipped[1]
    assert [e["frame"] for e in json.loads((out / "images.json").read_text())] == list(range(6))
    assert len(list(video.read_video(out / "damaged_densepose.mp4"))) == 6


def test_folder_of_frames_keeps_file_name_order(weights, tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for k in (3, 0, 2, 1):
        Image.fromarray(_frame(k)).save(folder / f"frame_{k:03d}.png")
    out = tmp_path / "out"
    assert _predict(str(folder), "--weights", str(weights), "--out", str(out)) == 0
    images = json.loads((out / "images.json").read_text())
    names = [e["file_name"].rsplit("/", 1)[-1] for e in images]
    assert names == [f"frame_{k:03d}.png" for k in range(4)]
