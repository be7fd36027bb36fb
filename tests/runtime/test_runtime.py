"""fnl-runtime without torch: Runtime, the numpy charts, and ``fnl run``'s output folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from fake_export import S, fake_outputs, write_fake_export
from PIL import Image

from fnl_core.charts import densepose_to_iuv, resize_bilinear
from fnl_core.cli import main
from fnl_core.errors import InputError
from fnl_core.results import decode_iuv_bytes
from fnl_runtime import Runtime, to_original_frame


@pytest.fixture
def fake_export(tmp_path):
    return write_fake_export(tmp_path / "export")


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_runtime_resizes_then_maps_boxes_back_and_drops_empty_ones(fake_export):
    runtime = Runtime(fake_export, threads=1)
    original, resized = runtime.preprocess(_photo(100, 150))
    assert original.shape == (100, 150, 3) and resized.shape == (50, 75, 3)
    pred = runtime(original)
    np.testing.assert_array_equal(pred["boxes"], [[10.0, 20.0, 50.0, 80.0]])
    assert pred["scores"].tolist() == pytest.approx([0.9])
    assert pred["labels"].dtype == np.int64 and pred["image_hw"] == (100, 150)
    assert set(pred["densepose"]) == {"coarse_segm", "fine_segm", "u", "v"}
    assert pred["densepose"]["u"].shape == (1, 25, S, S)


def test_to_original_frame_clips_in_float32():
    boxes, keep = to_original_frame(
        np.array([[-3.0, 5.0, 300.0, 60.0], [10.0, 10.0, 10.0, 40.0]], np.float32),
        (50, 75),
        (100, 150),
    )
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes[0], [0.0, 10.0, 150.0, 100.0])
    assert keep.tolist() == [True, False]


def test_iuv_needs_chart_outputs(fake_export):
    pred = Runtime(fake_export)(_photo(100, 150))
    pred["densepose"] = {"embedding": np.zeros((1, 16, S, S), np.float32)}
    with pytest.raises(InputError, match="no chart outputs"):
        Runtime.iuv(pred)


def test_resize_bilinear_is_torch_align_corners_false():
    x = np.array([[[0.0, 1.0]]], np.float32)
    np.testing.assert_allclose(resize_bilinear(x, (1, 4))[0, 0], [0.0, 0.25, 0.75, 1.0])
    y = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    np.testing.assert_array_equal(resize_bilinear(y, (3, 4)), y)
    np.testing.assert_allclose(resize_bilinear(y, (1, 1)), [[[5.5]]])


def test_charts_follow_the_coarse_mask_and_the_fine_part():
    out = fake_outputs(1)
    (iuv,) = densepose_to_iuv(np.array([[0.0, 0.0, 8.0, 8.0]], np.float32), out)
    assert iuv.shape == (3, 8, 8) and iuv.dtype == np.uint8
    assert (iuv[0][2:6, 2:6] == 3).all() and iuv[0].sum() == 3 * 16
    u = np.clip(out["u"][0, 3] * np.float32(255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(iuv[1][2:6, 2:6], u[2:6, 2:6])
    assert (iuv[1:, 0] == 0).all()  # U, V are 0 on the background
    with pytest.raises(ValueError, match="2 boxes but DensePose outputs for 1/1/1/1"):
        densepose_to_iuv(np.zeros((2, 4), np.float32), out)


def test_coco_results_are_what_fnl_run_writes(fake_export, tmp_path):
    runtime = Runtime(fake_export, threads=1)
    photo = _photo(100, 150)
    Image.fromarray(photo).save(tmp_path / "x.png")
    assert (
        main(["run", str(fake_export), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 0
    )
    written = json.loads((tmp_path / "o" / "results.json").read_text())
    (entry,) = runtime.coco_results(1, runtime(photo))
    assert json.loads(json.dumps(entry)) == written[0]


def test_fnl_run_writes_what_fnl_predict_writes(fake_export, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(_photo(100, 150)).save(tmp_path / folder / "x.png")
    out = tmp_path / "out"
    rc = main(["run", str(fake_export), str(tmp_path / "a"), str(tmp_path / "b" / "x.png"),
               "--out", str(out), "--min-score", "0.5"])  # fmt: skip
    assert rc == 0, capsys.readouterr()
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_x_densepose.png", "a_x_iuv.png", "b_x_densepose.png", "b_x_iuv.png",
                     "images.json", "results.json"]  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert [r["image_id"] for r in results] == [1, 2]
    assert results[0]["bbox"] == [10.0, 20.0, 40.0, 60.0] and results[0]["category_id"] == 1
    shape, raw = decode_iuv_bytes(results[0]["densepose"])
    assert shape == (3, 60, 40) and len(raw) == 3 * 60 * 40
    index = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["height"], i["width"], i["detections"]) for i in index] == [
        (1, 100, 150, 1),
        (2, 100, 150, 1),
    ]
    iuv = np.asarray(Image.open(out / "a_x_iuv.png"))
    assert iuv.shape == (100, 150, 3) and set(np.unique(iuv[..., 0])) == {0, 3}


def test_fnl_run_skips_unreadable_files_and_exits_1(fake_export, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(_photo(60, 60)).save(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    rc = main(["run", str(fake_export), str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "broken.jpg" in err and "1 of 2 inputs failed" in err
    assert len(json.loads((tmp_path / "out" / "images.json").read_text())) == 1


def test_bad_model_folders_give_one_line_errors(fake_export, tmp_path):
    with pytest.raises(InputError, match=r"manifest\.json: missing"):
        Runtime(tmp_path)
    with pytest.raises(InputError, match="no int8 graph"):
        Runtime(fake_export, int8=True)
    manifest = json.loads((fake_export / "manifest.json").read_text())
    (fake_export / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(InputError, match="format_version 1 is not the one"):
        Runtime(fake_export / "model.onnx")


def test_fnl_run_does_not_import_torch(fake_export, tmp_path):
    Image.fromarray(_photo(40, 50)).save(tmp_path / "p.png")
    code = (
        "import sys; from fnl_core.cli import main; "
        f"rc = main(['run', {str(fake_export)!r}, {str(tmp_path / 'p.png')!r}, "
        f"'--out', {str(tmp_path / 'o')!r}]); "
        "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_fnl_run_on_a_video(fake_export, tmp_path):
    av = pytest.importorskip("av", reason="PyAV (fnl-runtime[video]) not installed")
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(4):
            frame = av.VideoFrame.from_ndarray(_photo(48, 64, seed=k), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    assert main(["run", str(fake_export), str(clip), "--out", str(out)]) == 0
    index = json.loads((out / "images.json").read_text())
    assert [i["frame"] for i in index] == [0, 1, 2, 3]
    results = json.loads((out / "results.json").read_text())
    assert [r["frame"] for r in results] == [0, 1, 2, 3]
    with av.open(str(out / "clip_densepose.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 4


def test_chunked_resized_argmax_is_the_first_maximum(monkeypatch):
    """Logits resized a few channels at a time give argmax(0) of the full resize, ties
    (equal channels) resolved to the first, as numpy's argmax does."""
    from fnl_core import charts

    maps = np.random.default_rng(0).normal(size=(25, 9, 7)).round().astype(np.float32)
    maps[11] = maps[4]
    expected = charts.resize_bilinear(maps, (40, 23)).argmax(0)
    for chunk in (10**9, 40 * 23 * 3, 1):
        monkeypatch.setattr(charts, "CHUNK_VALUES", chunk)
        np.testing.assert_array_equal(charts.resized_argmax(maps, (40, 23)), expected)


def test_damaged_graphs_give_one_line_errors(fake_export):
    """Issue #24, item 4: a truncated graph, a missing int8 graph and a bit-flipped graph are
    refused in one line (the manifest's sha256 of each graph file)."""
    import hashlib

    manifest_path = fake_export / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    graph = fake_export / "model.onnx"
    good = graph.read_bytes()
    manifest["sha256"] = {"model.onnx": hashlib.sha256(good).hexdigest()}
    manifest["int8"] = {"model": "model.int8.onnx"}
    manifest_path.write_text(json.dumps(manifest))
    Runtime(fake_export)  # the recorded hash matches
    with pytest.raises(InputError, match=r"model\.int8\.onnx: missing"):
        Runtime(fake_export, int8=True)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    graph.write_bytes(bytes(flipped))
    with pytest.raises(InputError, match="sha256 differs"):
        Runtime(fake_export)
    graph.write_bytes(good[: len(good) // 2])  # truncated, in a manifest without hashes
    del manifest["sha256"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="onnxruntime cannot load this graph") as info:
        Runtime(fake_export)
    assert "\n" not in str(info.value)


def test_fnl_run_skips_images_too_thin_to_resize(fake_export, tmp_path, capsys):
    """Issue #24, item 6: named and skipped, the other images still run."""
    (tmp_path / "in").mkdir()
    Image.fromarray(_photo(100, 150)).save(tmp_path / "in" / "a.png")
    Image.fromarray(np.zeros((1, 4000, 3), np.uint8)).save(tmp_path / "in" / "strip.png")
    rc = main(["run", str(fake_export), str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "strip.png" in err and "too thin" in err
    assert len(json.loads((tmp_path / "out" / "images.json").read_text())) == 1
