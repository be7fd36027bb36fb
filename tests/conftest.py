"""Settings shared by every test: nothing is written to the user's cache."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory):
    """``$FNL_CACHE_DIR`` in a folder of this test session (downloads, ONNX exports of the
    Predictor's default backend); tests that need their own set it again with monkeypatch."""
    previous = os.environ.get("FNL_CACHE_DIR")
    os.environ["FNL_CACHE_DIR"] = str(tmp_path_factory.mktemp("fnl-cache"))
    yield
    if previous is None:
        os.environ.pop("FNL_CACHE_DIR", None)
    else:
        os.environ["FNL_CACHE_DIR"] = previous
