"""``fnl demo`` end to end on a few toy images (slow: about a minute on one core)."""

from __future__ import annotations

import json

import pytest

from fnl_core.cli import main
from fnl_detector.export import INT8_FILE
from fnl_detector.predictor import onnxruntime_installed


@pytest.mark.slow
def test_demo_rows_runtimes_and_files(tmp_path, capsys):
    from importlib.util import find_spec

    out = tmp_path / "demo"
    args = ["demo", "--minutes", "0.05", "--train-images", "4", "--val-images", "2"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "demo_summary.json").read_text())
    runtimes = [row["runtime"] for row in report["rows"]]
    onnx = onnxruntime_installed() and find_spec("fnl_runtime") is not None
    float_backend = "onnxruntime" if onnxruntime_installed() else "torch"
    expected = [float_backend, "torch int8", *(["onnxruntime int8"] if onnx else [])]
    assert runtimes == [*expected, float_backend]
    assert all(0 <= row["box_AP"] <= 100 and row["latency_ms"] > 0 for row in report["rows"])
    for name in ("predictions.png", "scratch_predictions.png", "scratch/model.safetensors"):
        assert (out / name).is_file(), name
    if onnx:  # the int8 graph the row measured is there for fnl run
        assert (out / "shipped_onnx" / INT8_FILE).is_file()
    table = capsys.readouterr().out
    assert "runtime" in table and "box AP" in table
