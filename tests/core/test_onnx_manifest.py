"""The export folder contract (``fnl_core.onnx_manifest``) that fnl-detector writes and
fnl-runtime reads."""

from __future__ import annotations

import subprocess
import sys

from fnl_core import onnx_manifest as m


def _manifest() -> dict:
    return {
        "format": m.FORMAT,
        "format_version": m.FORMAT_VERSION,
        "model": m.MODEL_FILE,
        "input": {"name": m.INPUT_NAME, "resize": {"rule": m.RESIZE_RULE}},
    }


def test_a_complete_manifest_has_no_problem():
    assert m.manifest_problem(_manifest()) is None


def test_each_problem_is_named():
    assert "format is 'x'" in m.manifest_problem({**_manifest(), "format": "x"})
    old = m.manifest_problem({**_manifest(), "format_version": 1})
    assert "format_version 1 is not the one" in old and "export the model again" in old
    rule = m.manifest_problem({**_manifest(), "input": {"resize": {"rule": "cv2"}}})
    assert "unknown resize rule 'cv2'" in rule
    assert "missing entry input.resize.rule" in m.manifest_problem({**_manifest(), "input": None})
    no_model = {k: v for k, v in _manifest().items() if k != "model"}
    assert "'model' must name the graph file" in m.manifest_problem(no_model)
    assert "JSON object" in m.manifest_problem([])


def test_the_contract_is_standard_library_only():
    code = (
        "import sys; import fnl_core.onnx_manifest; "
        "assert not {'numpy', 'torch', 'onnx', 'onnxruntime'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
