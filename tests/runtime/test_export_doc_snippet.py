"""docs/export.md's "onnxruntime alone" snippet runs against an export folder and resizes by
the sizes its manifest records (not a hard-coded short side)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fake_export import fake_outputs, write_fake_export
from PIL import Image

from fnl_core.imaging import resized_shape

EXPORT_DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"


def _onnxruntime_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", EXPORT_DOC.read_text(), re.S)
    found = [b for b in blocks if "ort.InferenceSession" in b]
    assert len(found) == 1, "docs/export.md: one python block runs onnxruntime alone"
    return found[0]


def test_onnxruntime_snippet_resizes_by_the_manifest(tmp_path, monkeypatch, capsys):
    ort = pytest.importorskip("onnxruntime")
    write_fake_export(tmp_path / "onnx-b", min_size=60, max_size=100)
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    fed = []
    real_session = ort.InferenceSession

    class Recording(real_session):
        def run(self, names, feed, *args, **kwargs):
            fed.append(feed["image"].shape)
            return super().run(names, feed, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    namespace: dict = {}
    exec(compile(_onnxruntime_snippet(), str(EXPORT_DOC), "exec"), namespace)
    assert fed == [(*resized_shape(90, 120, 60, 100), 3)]  # 60x80, not 512 on the short side
    scale = 90 / 60
    np.testing.assert_allclose(namespace["boxes"], fake_outputs()["boxes"] * scale, rtol=1e-6)
    assert "(2, 4)" in capsys.readouterr().out
