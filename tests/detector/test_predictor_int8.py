"""The int8 model of ``fnl quantize`` runs through the Predictor and ``fnl predict --weights``."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fnl_core import registry
from fnl_core.cli import main
from fnl_detector import Predictor
from fnl_detector.analysis import benchmark_image, prepare_benchmark_model

pytest.importorskip("fnl_quant", reason="fnl-quant is not installed")
from fnl_quant.artifact import save_quantized

warnings.filterwarnings("ignore", module="torch.ao")
#: PTQ of the real Mobile B takes minutes on a busy 2-core CPU
pytestmark = pytest.mark.slow
SIZE, K = 128, 3


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory):
    """An int8 Mobile Parsing R-CNN (B) saved as fnl quantize saves it, and its input image."""
    torch.manual_seed(0)
    image = benchmark_image(SIZE)
    model = prepare_benchmark_model("mobile_parsing_rcnn_b", image, K, fold_bn=False)
    config = registry.get("fnl.quantizers", "ptq")(num_calibration_images=1)
    int8 = config.build().quantize(model, [([image],)])
    folder = tmp_path_factory.mktemp("int8")
    save_quantized(int8, folder, config, extra={"spec": model.spec.model_dump(mode="json")})
    (folder / "spec.json").write_text(model.spec.model_dump_json(indent=2))
    pixels = image.round().to(torch.uint8).permute(1, 2, 0).numpy()
    with torch.inference_mode():
        expected = int8([torch.from_numpy(pixels).permute(2, 0, 1).float()])[0]
    return folder, pixels, expected


def test_predictor_loads_the_int8_folder(int8_folder):
    folder, pixels, expected = int8_folder
    for weights in (folder, folder / "model_int8.pt"):
        predictor = Predictor(None, weights, device="cpu")
        assert predictor.optimizations["fold_bn"] == 0  # int8 modules are left as converted
        out = predictor(pixels)
        assert len(out["boxes"]) == K
        torch.testing.assert_close(out["boxes"], expected["boxes"])
        torch.testing.assert_close(out["densepose"]["u"], expected["densepose"]["u"])


def test_fnl_predict_with_int8_weights(int8_folder, tmp_path):
    folder, pixels, _ = int8_folder
    Image.fromarray(pixels).save(tmp_path / "x.png")
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "x.png"), "--weights", str(folder / "model_int8.pt")]
    assert main([*args, "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert len(json.loads((out / "results.json").read_text())) == K
    assert np.asarray(Image.open(out / "x_iuv.png")).shape == (*pixels.shape[:2], 3)
