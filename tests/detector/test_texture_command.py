"""``fnl texture`` / ``fnl retexture`` on images, merged folders and videos (tiny model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detector_standins import smooth_picture, tiny_spec
from PIL import Image

from fnl_core.cli import main
from fnl_detector import build_detector
from fnl_detector.analysis import calibrate_batch_norm
from fnl_detector.weights import save_weights


@pytest.fixture
def weights(tiny_components, tmp_path):
    torch.manual_seed(0)
    model = build_detector(tiny_spec(test={"score_thresh": 0.0, "detections_per_image": 3}))
    model.eval()
    with torch.no_grad():  # every pixel of every box on the body, part 5, so charts have texels
        for name, module in model.named_modules():
            if name.endswith("heads.coarse_segm") or name.endswith("heads.fine_segm"):
                module.weight.zero_()
                module.bias.zero_()
                module.bias[1 if name.endswith("coarse_segm") else 5] = 10.0
    calibrate_batch_norm(model, [torch.from_numpy(smooth_picture()).permute(2, 0, 1).float()])
    path = tmp_path / "tiny.safetensors"
    save_weights(model.state_dict(), path, {"spec": json.dumps(model.spec.to_dict())})
    return path


@pytest.fixture
def frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(smooth_picture(seed=0)).save(folder / f"{k}.png")  # a still "video"
    return folder


def _run(*args: str) -> int:
    return main([*args, "--device", "cpu", "--no-progress", "--min-score", "0"])


def test_texture_per_image_and_merged(weights, frames, tmp_path):
    out = tmp_path / "out"
    assert _run("texture", str(frames), "--weights", str(weights), "--out", str(out),
                "--tile", "16") == 0  # fmt: skip
    atlases = sorted(p.name for p in out.glob("*_atlas.png"))
    assert atlases == [f"{k}_person{j}_atlas.png" for k in range(3) for j in range(3)]
    rgba = Image.open(out / "0_person0_atlas.png")
    assert rgba.mode == "RGBA" and rgba.size == (64, 96)
    conf = np.asarray(Image.open(out / "0_person0_confidence.png"))
    alpha = np.asarray(rgba)[..., 3]
    assert alpha[4 * 16 : 5 * 16, :16].any() and not alpha[:16, :16].any()  # part 5: row 4
    assert np.array_equal(conf[..., 0] > 0, alpha > 0)
    merged = tmp_path / "merged"
    assert _run("texture", str(frames), "--weights", str(weights), "--out", str(merged),
                "--tile", "16", "--merge") == 0  # fmt: skip
    report = json.loads((merged / "merged_tracks.json").read_text())
    assert "IoU" in report["tracking"]
    # the same picture three times: three tracks, each seen in all three frames
    assert [len(t["frames"]) for t in report["tracks"]] == [3, 3, 3]
    for t in report["tracks"]:
        assert (merged / t["atlas"]).is_file()


def test_retexture_images_and_errors(weights, frames, tmp_path, capsys):
    atlas = tmp_path / "atlas.png"
    Image.fromarray(np.full((96, 64, 3), (255, 0, 255), np.uint8)).save(atlas)
    (frames / "broken.png").write_bytes(b"no picture")
    out = tmp_path / "out"
    code = _run("retexture", str(frames), "--texture", str(atlas), "--weights", str(weights),
                "--out", str(out))  # fmt: skip
    assert code == 1 and "skipped" in capsys.readouterr().err
    painted = np.asarray(Image.open(out / "0_retextured.png"))
    assert painted.shape == (96, 128, 3)
    changed = (painted != smooth_picture(seed=0)).any(-1)
    assert changed.any() and (painted[changed] == (255, 0, 255)).all()
    bad = tmp_path / "bad.png"
    Image.fromarray(np.zeros((50, 64, 3), np.uint8)).save(bad)
    assert _run("retexture", str(frames), "--texture", str(bad), "--weights", str(weights),
                "--out", str(out)) == 2  # fmt: skip
    assert "6N pixels tall" in capsys.readouterr().err


def test_texture_and_retexture_on_a_video(weights, tmp_path):
    pytest.importorskip("av")
    from fnl_detector.video import VideoWriter

    video = tmp_path / "clip.mp4"
    with VideoWriter(video, 5, 128, 96) as writer:
        for _ in range(4):
            writer.write(smooth_picture(seed=0))
    out = tmp_path / "out"
    assert _run("texture", str(video), "--weights", str(weights), "--out", str(out),
                "--tile", "16") == 0  # fmt: skip
    report = json.loads((out / "clip_tracks.json").read_text())
    assert report["tracks"] and all(len(t["frames"]) == 4 for t in report["tracks"])
    atlas = tmp_path / "atlas.png"
    Image.fromarray(np.full((96, 64, 3), 200, np.uint8)).save(atlas)
    assert _run("retexture", str(video), "--texture", str(atlas), "--weights", str(weights),
                "--out", str(out)) == 0  # fmt: skip
    assert (out / "clip_retextured.mp4").stat().st_size > 0
