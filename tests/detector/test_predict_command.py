"""``fnl predict`` on images and folders: outputs, bad files, name collisions, EXIF, Ctrl-C."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detector_standins import smooth_picture, tiny_spec
from PIL import Image

from fnl_core.cli import main
from fnl_core.prediction_writer import output_names
from fnl_detector import build_detector
from fnl_detector.analysis import calibrate_batch_norm
from fnl_detector.weights import save_weights


@pytest.fixture
def weights(tiny_components, tmp_path):
    """Tiny model weights with the spec in the safetensors metadata (no --spec needed)."""
    torch.manual_seed(0)
    model = build_detector(tiny_spec(test={"score_thresh": 0.0, "detections_per_image": 3}))
    model.eval()
    calibrate_batch_norm(model, [torch.from_numpy(smooth_picture()).permute(2, 0, 1).float()])
    path = tmp_path / "tiny.safetensors"
    save_weights(model.state_dict(), path, {"spec": json.dumps(model.spec.to_dict())})
    return path


def _predict(*args: str) -> int:
    return main(["predict", *args, "--device", "cpu", "--no-progress", "--min-score", "0"])


def test_folder_in_name_order_with_outputs(weights, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, name in enumerate(["b.png", "a.png", "c.jpg"]):
        Image.fromarray(smooth_picture(seed=k)).save(folder / name)
    out = tmp_path / "out"
    assert _predict(str(folder), "--weights", str(weights), "--out", str(out)) == 0
    images = json.loads((out / "images.json").read_text())
    assert [e["file_name"].rsplit("/", 1)[-1] for e in images] == ["a.png", "b.png", "c.jpg"]
    assert [e["id"] for e in images] == [1, 2, 3]
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 9 and {r["image_id"] for r in results} == {1, 2, 3}
    for stem in ("a", "b", "c"):
        assert Image.open(out / f"{stem}_iuv.png").size == (128, 96)
        assert Image.open(out / f"{stem}_densepose.png").size == (128, 96)
    assert not (out / "results.jsonl").exists()  # line files are folded into the JSON


def test_bad_files_are_reported_and_skipped(weights, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(smooth_picture()).save(folder / "good.png")
    (folder / "notes.jpg").write_text("this is not a picture")
    Image.fromarray(smooth_picture(seed=1)).save(folder / "cut.png")
    data = (folder / "cut.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    assert _predict(str(folder), "--weights", str(weights), "--out", str(out)) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "skipped" in line]
    assert len(lines) == 3
    assert any("notes.jpg" in line for line in lines) and any("cut.png" in line for line in lines)
    assert "3 of 4 input(s) failed" in err
    images = json.loads((out / "images.json").read_text())
    assert [e["file_name"].rsplit("/", 1)[-1] for e in images] == ["good.png"]
    assert (out / "good_iuv.png").is_file()


def test_same_file_names_in_two_folders_do_not_collide(weights, tmp_path):
    for k, sub in enumerate(("a", "b")):
        (tmp_path / sub).mkdir()
        Image.fromarray(smooth_picture(seed=k)).save(tmp_path / sub / "x.jpg")
    out = tmp_path / "out"
    args = [str(tmp_path / "a"), str(tmp_path / "b"), "--weights", str(weights), "--out", str(out)]
    assert _predict(*args) == 0
    assert (out / "a_x_iuv.png").is_file() and (out / "b_x_iuv.png").is_file()
    assert (out / "a_x_densepose.png").is_file() and (out / "b_x_densepose.png").is_file()
    assert len(json.loads((out / "images.json").read_text())) == 2


def test_output_names_unique_stems_and_deep_collisions(tmp_path):
    p = tmp_path
    files = [p / "a/x.jpg", p / "b/x.jpg", p / "y.png", p / "c/d/z.png", p / "e/d/z.png"]
    names = output_names(files)
    assert names[p / "y.png"] == "y"
    assert names[p / "a/x.jpg"] == "a_x" and names[p / "b/x.jpg"] == "b_x"
    assert names[p / "c/d/z.png"] == "c_d_z" and names[p / "e/d/z.png"] == "e_d_z"
    same_stem = output_names([p / "x.jpg", p / "x.png"])
    assert len(set(same_stem.values())) == 2


def test_exif_orientation_is_applied(weights, tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(smooth_picture(96, 128)).save(path, exif=exif)
    out = tmp_path / "out"
    assert _predict(str(path), "--weights", str(weights), "--out", str(out)) == 0
    (entry,) = json.loads((out / "images.json").read_text())
    assert (entry["height"], entry["width"]) == (128, 96)
    assert Image.open(out / "phone_densepose.png").size == (96, 128)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "high"])
def test_min_score_must_be_a_fraction(weights, tmp_path, value, capsys):
    args = ["predict", str(tmp_path), "--weights", str(weights), "--out", "o"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--min-score", value])
    assert exc.value.code == 2
    assert "--min-score" in capsys.readouterr().err


def test_ctrl_c_keeps_what_was_done(weights, tmp_path, monkeypatch, capsys):
    from fnl_detector.predictor import Predictor

    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(4):
        Image.fromarray(smooth_picture(seed=k)).save(folder / f"{k}.png")
    calls = {"n": 0}
    original = Predictor.__call__

    def interrupted(self, images, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, images, **kwargs)

    monkeypatch.setattr(Predictor, "__call__", interrupted)
    out = tmp_path / "out"
    assert _predict(str(folder), "--weights", str(weights), "--out", str(out)) == 130
    assert "interrupted" in capsys.readouterr().err
    images = json.loads((out / "images.json").read_text())
    assert [e["file_name"].rsplit("/", 1)[-1] for e in images] == ["0.png", "1.png"]
    assert len(json.loads((out / "results.json").read_text())) == 6


def test_batches_give_the_same_results(weights, tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(smooth_picture(seed=k)).save(folder / f"{k}.png")
    outs = []
    for batch in ("1", "3"):
        out = tmp_path / f"out{batch}"
        args = [str(folder), "--weights", str(weights), "--out", str(out), "--batch-size", batch]
        assert _predict(*args) == 0
        outs.append(json.loads((out / "results.json").read_text()))
    assert [r["image_id"] for r in outs[0]] == [r["image_id"] for r in outs[1]]
    for a, b in zip(*outs):
        assert np.allclose(a["bbox"], b["bbox"], atol=1e-3) and a["score"] == pytest.approx(
            b["score"], rel=1e-4, abs=1e-6
        )


def test_missing_spec_is_a_one_line_error(tiny_components, tmp_path, capsys):
    bare = tmp_path / "bare.safetensors"
    save_weights(build_detector(tiny_spec()).state_dict(), bare)
    Image.fromarray(smooth_picture()).save(tmp_path / "x.png")
    assert _predict(str(tmp_path / "x.png"), "--weights", str(bare), "--out", "o") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no --spec given" in err


def test_thin_images_are_skipped_and_named_and_max_pixels_is_an_option(weights, tmp_path, capsys):
    """Issue #24, item 6: a 20000x3 image does not stop the batch with Pillow's 'height and
    width must be > 0' but is skipped, named, like an unreadable file; --max-pixels sets the
    size limit that only the API had."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(smooth_picture()).save(folder / "good.png")
    Image.fromarray(np.zeros((3, 20000, 3), np.uint8)).save(folder / "strip.png")
    out = tmp_path / "out"
    assert _predict(str(folder), "--weights", str(weights), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "strip.png" in err and "too thin" in err
    index = json.loads((out / "images.json").read_text())
    assert [e["file_name"].rsplit("/", 1)[-1] for e in index] == ["good.png"]
    small = tmp_path / "out2"
    args = [str(folder / "good.png"), "--weights", str(weights), "--out", str(small)]
    assert _predict(*args, "--max-pixels", "5000") == 1
    assert "too large" in capsys.readouterr().err
