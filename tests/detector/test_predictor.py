"""fnl_detector.Predictor: preprocessing, speed-ups equal to the plain model, batching, inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detector_standins import tiny_spec
from PIL import Image

from fnl_core.errors import ImageReadError, InputError
from fnl_core.imaging import resize_image, resized_shape
from fnl_detector import Predictor, build_detector
from fnl_detector.analysis import calibrate_batch_norm
from fnl_detector.loading import spec_from_weights
from fnl_detector.optimize import example_image
from fnl_detector.predictor import choose_backend
from fnl_detector.weights import save_weights

#: Forced detections: score threshold 0 and 5 per image (random weights).
FORCED = {"score_thresh": 0.0, "detections_per_image": 5}
#: Speed-ups are rounding-level changes: boxes agree to this fraction of the image size.
BOX_RTOL = 1e-4


def _spec(**test):
    return tiny_spec(test={**FORCED, **test})


def _image(h=120, w=160, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = rng.random((h // 8, w // 8, 3))
    return np.asarray(
        Image.fromarray((low * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    ).copy()


@pytest.fixture
def calibrated(tiny_components, tmp_path):
    """(spec dict, weights path) of a tiny model whose BatchNorm was calibrated on an image."""
    torch.manual_seed(0)
    spec = _spec()
    model = build_detector(spec).eval()
    calibrate_batch_norm(model, [torch.from_numpy(_image()).permute(2, 0, 1).float()])
    weights = tmp_path / "tiny.safetensors"
    save_weights(model.state_dict(), weights, {"spec": json.dumps(model.spec.to_dict())})
    return spec, weights


def _assert_same(a, b, image_hw, exact=False):
    assert len(a["boxes"]) == len(b["boxes"]) == 5
    assert torch.equal(a["labels"], b["labels"])
    scale = max(image_hw)
    if exact:
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
        return
    assert float((a["boxes"] - b["boxes"]).abs().max()) <= BOX_RTOL * scale
    assert torch.allclose(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
    for key in a["densepose"]:
        ref = b["densepose"][key]
        tol = 1e-3 * max(float(ref.abs().max()), 1e-6)
        assert float((a["densepose"][key] - ref).abs().max()) <= tol, key


def test_optimized_predictor_equals_plain_model(calibrated):
    spec, weights = calibrated
    fast = Predictor(spec, weights, device="cpu", backend="torch")
    plain = Predictor(spec, weights, device="cpu", optimize=False)
    assert fast.optimizations["fold_bn"] == 1 and fast.optimizations["channels_last"]
    assert plain.optimizations == {
        "fold_bn": 0,
        "channels_last": False,
        "parallel_ops": False,
        "backend": "torch",
    }
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.model.modules())
    image = _image()
    _assert_same(fast(image), plain(image), image.shape[:2])


def test_resize_is_pillow_bilinear_on_uint8(calibrated):
    spec, weights = calibrated
    predictor = Predictor(spec, weights, device="cpu", optimize=False)
    assert predictor.resize_mode == "pil_bilinear_uint8"
    image = _image(90, 150)
    (tensor,), (original,) = predictor.preprocess([image])
    size = resized_shape(90, 150, 128, 192)
    assert original == (90, 150) and tuple(tensor.shape[-2:]) == size
    pixels = tensor.to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(pixels, resize_image(image, size))
    # the model is given the resized pixels and maps boxes back to the original frame
    model = predictor.model
    with torch.inference_mode():
        direct = model([tensor], original_sizes=[original])[0]
    _assert_same(predictor(image), direct, (90, 150), exact=True)
    assert float(direct["boxes"][:, 2].max()) <= 150 and float(direct["boxes"][:, 3].max()) <= 90


def test_interpolate_mode_leaves_the_resize_to_the_model(tiny_components):
    torch.manual_seed(0)
    spec = _spec()
    spec["input"] = {**spec["input"], "resize": "interpolate"}
    predictor = Predictor(spec, device="cpu", optimize=False, random_weights=True)
    image = _image(90, 150)
    (tensor,), _ = predictor.preprocess([image])
    assert tuple(tensor.shape[-2:]) == (90, 150)
    with torch.inference_mode():
        direct = predictor.model([tensor])[0]
    _assert_same(predictor(image), direct, (90, 150), exact=True)


def test_batch_of_three_equals_three_single_calls(calibrated):
    spec, weights = calibrated
    predictor = Predictor(spec, weights, device="cpu")
    images = [_image(seed=s) for s in range(3)]
    batched = predictor(images)
    assert isinstance(batched, list) and len(batched) == 3
    for image, out in zip(images, batched):
        _assert_same(out, predictor(image), image.shape[:2])


def test_paths_pil_images_and_arrays_give_the_same_result(calibrated, tmp_path):
    spec, weights = calibrated
    predictor = Predictor(spec, weights, device="cpu")
    image = _image()
    path = tmp_path / "x.png"
    Image.fromarray(image).save(path)
    results = [predictor(path), predictor(str(path)), predictor(Image.open(path)), predictor(image)]
    for r in results[1:]:
        _assert_same(r, results[0], image.shape[:2], exact=True)
    assert results[0]["image_size"] == (120, 160)


def test_iuv_outputs(calibrated):
    spec, weights = calibrated
    predictor = Predictor(spec, weights, device="cpu")
    out = predictor(_image(), iuv=True)
    assert out["iuv"].shape == (120, 160, 3) and out["iuv"].dtype == torch.uint8
    assert len(out["charts"]) == 5 and all(c.shape[0] == 3 for c in out["charts"])
    none = predictor(_image(), iuv=True, iuv_min_score=1.0)
    assert not none["iuv"].any()


def _tensors_and_arrays(value, path="result"):
    """(path, kind) of every array-like leaf of a result: 'torch' or 'numpy'."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _tensors_and_arrays(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in _tensors_and_arrays(v, f"{path}[{i}]")]
    if isinstance(value, torch.Tensor):
        return [(path, "torch")]
    if isinstance(value, np.ndarray):
        return [(path, "numpy")]
    return []


def test_results_are_torch_tensors_throughout_and_numpy_on_request(calibrated):
    spec, weights = calibrated
    out = Predictor(spec, weights, device="cpu", backend="torch")(_image(), iuv=True)
    kinds = _tensors_and_arrays(dict(out))
    assert {k for _, k in kinds} == {"torch"}, kinds
    assert out["labels"].dtype == torch.int64 and out["charts"][0].dtype == torch.uint8
    arrays = out.numpy()
    assert {k for _, k in _tensors_and_arrays(dict(arrays))} == {"numpy"}
    np.testing.assert_array_equal(arrays["iuv"], out["iuv"].numpy())
    assert arrays["image_size"] == (120, 160)


def test_torch_tensors_and_float_images_follow_torchvision(calibrated):
    spec, weights = calibrated
    predictor = Predictor(spec, weights, device="cpu", backend="torch")
    image = _image()
    reference = predictor(image)
    chw = torch.from_numpy(image).permute(2, 0, 1)  # torchvision's uint8 C×H×W
    _assert_same(predictor(chw), reference, image.shape[:2], exact=True)
    _assert_same(predictor(torch.from_numpy(image)), reference, image.shape[:2], exact=True)
    _assert_same(predictor(chw.float() / 255), reference, image.shape[:2], exact=True)
    _assert_same(predictor(image / 255.0), reference, image.shape[:2], exact=True)
    with pytest.raises(ImageReadError, match=r"float image values must be in 0\.\.1.*255"):
        predictor(chw.float())  # a 0..255 image cast to float: refused, not guessed
    with pytest.raises(ImageReadError, match="must be a path, a PIL image"):
        predictor(12)


def test_plot_and_save_draw_the_result(calibrated, tmp_path):
    spec, weights = calibrated
    predictor = Predictor(spec, weights, device="cpu", backend="torch")
    image = _image()
    out = predictor(image)
    picture = out.plot(image, min_score=0.0)
    assert picture.shape == image.shape and picture.dtype == np.uint8
    assert not np.array_equal(picture, image)  # five detections drawn
    path = out.save(tmp_path / "x.png", image, min_score=0.0)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), picture)
    with pytest.raises(InputError, match="plot: the image is 60x80"):
        out.plot(image[:60, :80])


def test_spec_read_from_safetensors_metadata(calibrated):
    spec, weights = calibrated
    assert spec_from_weights(weights)["input"]["min_size_test"] == 128
    _assert_same(
        Predictor(None, weights, device="cpu")(_image()),
        Predictor(spec, weights, device="cpu")(_image()),
        (120, 160),
        exact=True,
    )


def test_spec_json_next_to_weights_without_metadata(calibrated, tmp_path):
    spec, _ = calibrated
    bare = tmp_path / "run" / "model.safetensors"
    bare.parent.mkdir()
    save_weights(build_detector(spec).state_dict(), bare)
    (bare.parent / "spec.json").write_text(json.dumps(_spec(detections_per_image=2)))
    assert len(Predictor(None, bare, device="cpu")(_image())["boxes"]) == 2


def test_missing_spec_and_bad_inputs_are_one_line_errors(calibrated, tmp_path):
    spec, _ = calibrated
    bare = tmp_path / "bare.safetensors"
    save_weights(build_detector(spec).state_dict(), bare)
    with pytest.raises(InputError, match=r"no spec given for .*bare\.safetensors"):
        Predictor(None, bare)
    predictor = Predictor(spec, device="cpu", optimize=False, random_weights=True)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageReadError, match=r"bad\.jpg"):
        predictor(bad)
    with pytest.raises(InputError, match="threads"):
        Predictor(spec, threads=0)


def test_view_on_a_training_model_changes_nothing(tiny_components):
    torch.manual_seed(0)
    model = build_detector(_spec()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = Predictor.from_model(model, optimize=False, parallel_ops=True)
    out = predictor(example_image(96))
    assert len(out["boxes"]) == 5
    assert model.training and predictor.model is model
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_from_model_optimize_copies(tiny_components):
    torch.manual_seed(0)
    model = build_detector(_spec()).eval()
    predictor = Predictor.from_model(model, optimize=True, backend="torch")
    assert predictor.model is not model and predictor.optimizations["fold_bn"] == 1
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_bench_plain_times_the_unoptimised_model(tiny_components, tmp_path):
    from fnl_detector.commands.bench import run_benchmark

    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(tiny_spec()))
    common = {"size": 96, "detections": 3, "runs": 1, "warmup": 0, "device": "cpu"}
    common["overrides"] = ["rpn.post_nms_top_n_test=60"]
    (plain,) = run_benchmark([str(spec_file)], plain=True, **common)
    (user,) = run_benchmark([str(spec_file)], **common)
    (torch_user,) = run_benchmark([str(spec_file)], backend="torch", **common)
    assert plain["plain"] and plain["optimizations"] == {
        "fold_bn": 0,
        "channels_last": False,
        "parallel_ops": False,
        "backend": "torch",
    }
    # without --plain it times what fnl predict runs: ONNX Runtime where installed
    assert not user["plain"] and user["detections"] == 3
    assert user["optimizations"]["backend"] == choose_backend(
        build_detector(tiny_spec()), torch.device("cpu")
    )
    assert torch_user["optimizations"]["fold_bn"] == 1
    assert torch_user["optimizations"]["channels_last"]


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_bench_stages_on_each_backend(tiny_components, tmp_path, backend):
    """`fnl bench --stages`: per-stage medians on the backend that runs (module hooks on
    PyTorch, the node profiler on ONNX Runtime), every stage of the model present."""
    from fnl_detector.commands.bench import run_benchmark
    from fnl_detector.predictor import onnxruntime_installed

    if backend == "onnxruntime" and not onnxruntime_installed():
        pytest.skip("onnxruntime not installed")
    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(tiny_spec()))
    (row,) = run_benchmark(
        [str(spec_file)],
        size=96,
        detections=3,
        runs=2,
        warmup=0,
        device="cpu",
        overrides=["rpn.post_nms_top_n_test=60"],
        backend=backend,
        stages=True,
    )
    assert row["optimizations"]["backend"] == backend
    stages = row["stages"]
    for name in (
        "backbone",
        "RPN + NMS",
        "box pooling",
        "box head",
        "DensePose pooling",
        "DensePose head",
        "outside the network",
        "chart pasting",
    ):
        assert stages[name] > 0, (name, stages)
    assert sum(stages.values()) < 50 * row["median_ms"] + 1000


def test_onnx_node_stages_follow_the_module_tree():
    from fnl_detector.stages import INPUT, node_stage, onnx_profile_stages

    assert node_stage("/backbone/body/blocks/Conv") == "backbone"
    assert node_stage("/roi_heads/box_pooler/RoiAlign_1") == "box pooling"
    assert node_stage("/roi_heads/box_head/conv1/Conv") == "box head"
    assert node_stage("/roi_heads/TopK") == "box selection"
    assert node_stage("/roi_heads/densepose_pooler/RoiAlign") == "DensePose pooling"
    assert node_stage("/Cast") == INPUT
    # nodes the runtime inserts belong to the stage run before them
    assert node_stage("ReorderOutput_token_3", "box head") == "box head"
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 10_000},
        {"cat": "Node", "name": "/neck/Conv_kernel_time", "ts": 10, "dur": 4_000},
        {"cat": "Node", "name": "Reorder_token_1_kernel_time", "ts": 5_000, "dur": 1_000},
        {"cat": "Node", "name": "/neck/Conv_fence_before", "ts": 9, "dur": 0},
    ]
    (run,) = onnx_profile_stages(events)
    assert run == {"neck": 5.0, "graph overhead": 5.0}
