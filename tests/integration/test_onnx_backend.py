"""``Predictor(backend="onnxruntime")`` and ``fnl predict --backend onnxruntime``: the model is
exported once, verified, cached by content, and gives PyTorch's predictions. ``"auto"``, the
default, picks it for optimised float models on the CPU and falls back to PyTorch, warning,
when the export does not verify."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from fnl_core.errors import InputError
from fnl_detector.predictor import Predictor

OVERRIDES = [
    "input.min_size_test=128",
    "input.max_size_test=256",
    "test.score_thresh=0.0",
    "test.detections_per_image=4",
]


@pytest.fixture(autouse=True)
def _one_thread_and_a_private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FNL_CACHE_DIR", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model_and_image():
    from fnl_detector.analysis import benchmark_image, calibrate_batch_norm
    from fnl_detector.build import build_detector
    from fnl_detector.spec import load_spec

    torch.manual_seed(0)
    model = build_detector(load_spec("mobile_parsing_rcnn_b", OVERRIDES)).eval()
    image = benchmark_image(128).round().to(torch.uint8)
    calibrate_batch_norm(model, [image.float()])
    pixels = np.ascontiguousarray(benchmark_image(150).round().byte().permute(1, 2, 0).numpy())
    return model, pixels[:, :140]  # not the test size: the resize is exercised


def test_onnxruntime_backend_gives_the_torch_predictions_and_caches_the_export(
    tmp_path, monkeypatch
):
    from fnl_detector import export

    model, image = _model_and_image()
    torch_pred = Predictor.from_model(model, optimize=False)(image, iuv=True)
    ort = Predictor.from_model(model, backend="onnxruntime", threads=1)
    assert ort.optimizations["backend"] == "onnxruntime"
    manifest = json.loads((ort.onnx.folder / export.MANIFEST).read_text())
    assert manifest["verification"]["ok"] and manifest["verification"]["matched"] > 0
    got = ort(image, iuv=True)
    assert len(got["boxes"]) == len(torch_pred["boxes"]) == 4
    assert got["image_size"] == torch_pred["image_size"] == image.shape[:2]
    torch.testing.assert_close(got["boxes"], torch_pred["boxes"], rtol=0, atol=1e-2)
    torch.testing.assert_close(got["scores"], torch_pred["scores"], rtol=0, atol=1e-4)
    assert got["labels"].dtype == torch.int64
    assert sorted(got["densepose"]) == sorted(torch_pred["densepose"])
    for key, value in got["densepose"].items():
        scale = float(torch_pred["densepose"][key].abs().max())
        assert float((value - torch_pred["densepose"][key]).abs().max()) <= 1e-3 * scale, key
    differ = float((got["iuv"] != torch_pred["iuv"]).any(-1).float().mean())
    assert differ < 0.01, f"{differ:.2%} of IUV pixels differ"

    # a second predictor of the same model reuses the verified export
    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    real_export = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", no_export)
    again = Predictor.from_model(model, backend="onnxruntime")
    assert again.onnx.folder == ort.onnx.folder
    # a damaged cache entry is exported again instead of failing for good
    monkeypatch.setattr(export, "export_onnx", real_export)
    (ort.onnx.folder / export.MODEL_FILE).write_bytes(b"not an onnx graph")
    repaired = Predictor.from_model(model, backend="onnxruntime", threads=1)
    assert repaired.onnx.folder == ort.onnx.folder
    assert torch.equal(repaired(image)["boxes"], got["boxes"])
    # other weights are another cache entry
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    from fnl_detector.onnx_backend import model_key

    assert model_key(model, 17)[:24] != ort.onnx.folder.name


def _mismatch(*args, **kwargs):
    """A verification report of an export that does not reproduce PyTorch."""
    return {"ok": False, "matched": 0, "detections": 4, "images": [{"max_diff": {"boxes": 9}}]}


def test_a_failed_verification_is_an_error_and_caches_nothing(tmp_path, monkeypatch):
    model, _ = _model_and_image()

    monkeypatch.setattr("fnl_detector.export.verify_export", _mismatch)
    with pytest.raises(InputError, match="does not reproduce the PyTorch model"):
        Predictor.from_model(model, backend="onnxruntime")
    cache = tmp_path / "cache" / "onnx"
    assert not [p for p in cache.iterdir()], "a failed export left files in the cache"


def test_an_unknown_backend_is_refused():
    model, _ = _model_and_image()
    with pytest.raises(InputError, match="backend must be one of auto, torch, onnxruntime"):
        Predictor.from_model(model, backend="tensorrt")


def test_auto_runs_onnxruntime_where_it_applies(monkeypatch):
    from fnl_detector import predictor as predictor_module
    from fnl_detector.predictor import choose_backend

    model, image = _model_and_image()
    cpu = torch.device("cpu")
    assert choose_backend(model, cpu) == "onnxruntime"
    # PyTorch for what the graph cannot be: the plain model, single speed-ups off, GPUs
    assert choose_backend(model, cpu, optimize=False) == "torch"
    assert choose_backend(model, cpu, fold_bn=False) == "torch"
    assert choose_backend(model, cpu, channels_last=False) == "torch"
    assert choose_backend(model, cpu, parallel_ops=False) == "torch"
    assert choose_backend(model, torch.device("cuda")) == "torch"
    said = []
    auto = Predictor.from_model(model, optimize=True, threads=1, progress=said.append)
    assert auto.backend == "onnxruntime" and auto.onnx is not None
    assert len(said) == 1 and said[0].startswith("exporting the model to ONNX")
    explicit = Predictor.from_model(model, backend="onnxruntime", threads=1, progress=said.append)
    assert len(said) == 1, "the cached export is reused silently"
    got, want = auto(image), explicit(image)
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(got[key], want[key]), key
    for key, value in want["densepose"].items():
        assert torch.equal(got["densepose"][key], value), key
    view = Predictor.from_model(model, optimize=False)  # evaluation during training
    assert view.backend == "torch" and view.model is model
    monkeypatch.setattr(predictor_module, "onnxruntime_installed", lambda: False)
    assert Predictor.from_model(model, optimize=True).backend == "torch"


def test_auto_keeps_torch_for_a_model_that_resizes_itself():
    from fnl_detector.build import build_detector
    from fnl_detector.predictor import choose_backend
    from fnl_detector.spec import load_spec

    spec = load_spec("mobile_parsing_rcnn_b", [*OVERRIDES, "input.resize=interpolate"])
    model = build_detector(spec).eval()
    assert choose_backend(model, torch.device("cpu")) == "torch"
    assert Predictor.from_model(model, optimize=True).backend == "torch"
    with pytest.raises(InputError, match=r"input\.resize='pil_bilinear_uint8'"):
        Predictor.from_model(model, backend="onnxruntime")


def test_auto_falls_back_to_torch_with_a_warning(tmp_path, monkeypatch):
    model, image = _model_and_image()

    monkeypatch.setattr("fnl_detector.export.verify_export", _mismatch)
    with pytest.warns(UserWarning, match="backend auto: the ONNX Runtime backend is unavailable"):
        predictor = Predictor.from_model(model, optimize=True)
    assert predictor.backend == "torch" and predictor.onnx is None
    assert predictor.optimizations["fold_bn"] > 0  # the PyTorch speed-ups apply instead
    assert len(predictor(image)["boxes"]) == 4


def test_fnl_predict_on_onnxruntime_writes_what_torch_writes(tmp_path, capsys):
    from PIL import Image

    from fnl_core.cli import main
    from fnl_detector.weights import save_weights

    model, image = _model_and_image()
    weights = tmp_path / "b.safetensors"
    save_weights(model.state_dict(), weights)
    Image.fromarray(image).save(tmp_path / "x.png")
    outputs = {}
    for backend in ("torch", "onnxruntime", "default"):
        out = tmp_path / backend
        args = ["predict", str(tmp_path / "x.png"), "--spec", "mobile_parsing_rcnn_b"]
        args += ["--weights", str(weights), "--out", str(out), "--min-score", "0", "--no-progress"]
        args += {"torch": ["--plain"], "onnxruntime": ["--backend", "onnxruntime"]}.get(backend, [])
        capsys.readouterr()
        assert main([*args, "--set", *OVERRIDES]) == 0
        run_by = "torch" if backend == "torch" else "onnxruntime"
        assert f"network run by {run_by}" in capsys.readouterr().out
        results = json.loads((out / "results.json").read_text())
        outputs[backend] = (results, np.asarray(Image.open(out / "x_iuv.png")))
    # the default is ONNX Runtime here: the same files as asking for it
    assert outputs["default"][0] == outputs["onnxruntime"][0]
    assert np.array_equal(outputs["default"][1], outputs["onnxruntime"][1])
    (torch_results, torch_iuv), (ort_results, ort_iuv) = outputs["torch"], outputs["onnxruntime"]
    assert len(torch_results) == len(ort_results) == 4
    for a, b in zip(torch_results, ort_results, strict=True):
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-2)
    assert (torch_iuv != ort_iuv).any(-1).mean() < 0.01


def test_fnl_predict_falls_back_to_torch_in_one_line(tmp_path, monkeypatch, capsys):
    """An unusable cache folder costs the fast path, not the run: one warning line."""
    from PIL import Image

    from fnl_core.cli import main
    from fnl_detector.weights import save_weights

    model, image = _model_and_image()
    weights = tmp_path / "b.safetensors"
    save_weights(model.state_dict(), weights)
    Image.fromarray(image).save(tmp_path / "x.png")
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("FNL_CACHE_DIR", str(tmp_path / "not-a-folder"))
    args = ["predict", str(tmp_path / "x.png"), "--spec", "mobile_parsing_rcnn_b", "--weights"]
    args += [str(weights), "--out", str(tmp_path / "out"), "--no-progress", "--set", *OVERRIDES]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "network run by torch" in captured.out
    lines = [line for line in captured.err.splitlines() if "backend auto" in line]
    assert len(lines) == 1, captured.err
    expected = "fnl predict: warning: backend auto: the ONNX Runtime backend is unavailable ("
    assert lines[0].startswith(expected), lines[0]
