"""Fixtures of the fnl-eval tests; the builders live in fnl_eval_fixtures.py."""

from __future__ import annotations

import pytest
from fnl_eval_fixtures import GridSurface


@pytest.fixture(scope="session")
def surface() -> GridSurface:
    return GridSurface()
