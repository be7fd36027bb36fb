"""fnl_core.files: a destination holds the old file or the whole new one, nothing in between."""

from __future__ import annotations

import os
import stat

import pytest

from fnl_core.files import atomic_output, atomic_write_bytes, atomic_write_text


def test_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "results.json"
    atomic_write_text(path, "[1]")
    atomic_write_bytes(path, b"[2]")
    assert path.read_text() == "[2]"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(path, suffix=".part") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".part")
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_the_mode_is_what_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "w.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "w.bin").stat().st_mode) == 0o666 & ~umask
