"""Every command checks ``--out`` before any work (issue #24, items 1-2): a path that cannot be
written is one line (exit 2) within seconds, and earlier results are not replaced without
``--overwrite``. The bad paths fail as root too (a path under a regular file; a file where a
folder is expected and the reverse)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from fnl_core.cli import main
from fnl_core.imaging import save_png

SPEC = "mobile_parsing_rcnn_b"
TOY = "mobile_parsing_rcnn_b_toy"


def _argv(command: str, tmp: Path, out: str) -> list[str]:
    image = tmp / "in" / "a.png"
    if not image.exists():
        image.parent.mkdir(parents=True, exist_ok=True)
        save_png(np.zeros((12, 8, 3), np.uint8), image)  # also a valid atlas (N = 2)
        (tmp / "x.pth").write_bytes(b"")
        (tmp / "gt.json").write_text("{}")
        (tmp / "res.json").write_text("[]")
    return {
        "predict": ["predict", str(image), "--model", TOY, "--out", out],
        "run": ["run", str(tmp / "onnx"), str(image), "--out", out],
        "train": ["train", SPEC, "--data", "toy", "--out", out],
        "export": ["export", SPEC, "--out", out],
        "quantize": ["quantize", SPEC, "--weights", str(tmp / "x.pth"), "--out", out],
        "eval": [
            "eval",
            "--gt",
            str(tmp / "gt.json"),
            "--results",
            str(tmp / "res.json"),
            "--out",
            out,
        ],
        "eval-model": ["eval", "--model", TOY, "--data", "toy", "--out", out],
        "convert": ["convert", str(tmp / "x.pth"), "--spec", SPEC, "--out", out],
        "texture": ["texture", str(image), "--model", TOY, "--out", out],
        "retexture": [
            "retexture",
            str(image),
            "--model",
            TOY,
            "--texture",
            str(image),
            "--out",
            out,
        ],
        "demo": ["demo", "--out", out],
    }[command]


FOLDER_COMMANDS = ["predict", "run", "train", "export", "quantize", "texture", "retexture", "demo"]
FILE_COMMANDS = ["eval", "eval-model", "convert"]


def _fails_fast(capsys, argv: list[str], expected: str) -> None:
    start = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert elapsed < 3.0, f"{argv[0]} took {elapsed:.1f} s to report its --out"


@pytest.mark.parametrize("command", FOLDER_COMMANDS + FILE_COMMANDS)
def test_out_under_a_regular_file(tmp_path, capsys, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    name = "w.safetensors" if command == "convert" else "m.json"
    out = blocker / "sub" / name
    _fails_fast(capsys, _argv(command, tmp_path, str(out)), f"{blocker} is a file, not a folder")


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_out_is_a_file_where_a_folder_is_expected(tmp_path, capsys, command):
    out = tmp_path / "taken.txt"
    out.write_text("a file")
    _fails_fast(capsys, _argv(command, tmp_path, str(out)), "is a file, not a folder")
    assert out.read_text() == "a file"


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_out_is_a_folder_where_a_file_is_expected(tmp_path, capsys, command):
    out = tmp_path / ("w.safetensors" if command == "convert" else "metrics.json")
    out.mkdir()
    _fails_fast(capsys, _argv(command, tmp_path, str(out)), "is a folder, not a file")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
@pytest.mark.parametrize("command", ["predict", "run", "eval", "convert"])
def test_out_in_a_read_only_folder(tmp_path, capsys, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        name = "w.safetensors" if command == "convert" else "m.json"
        _fails_fast(capsys, _argv(command, tmp_path, str(locked / name)), "cannot write there")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    ("command", "earlier"),
    [
        ("predict", "results.json"),
        ("run", "results.json"),
        ("export", "model.onnx"),
        ("quantize", "model_int8.pt"),
        ("texture", "a_person1_atlas.png"),
        ("retexture", "a_retextured.png"),
    ],
)
def test_earlier_results_need_overwrite(tmp_path, capsys, command, earlier):
    out = tmp_path / "out"
    out.mkdir()
    (out / earlier).write_text("500 detections")
    _fails_fast(capsys, _argv(command, tmp_path, str(out)), "--overwrite")
    assert (out / earlier).read_text() == "500 detections"


@pytest.mark.parametrize("command", ["eval", "convert"])
def test_existing_output_file_needs_overwrite(tmp_path, capsys, command):
    out = tmp_path / ("w.safetensors" if command == "convert" else "metrics.json")
    out.write_text("earlier")
    _fails_fast(capsys, _argv(command, tmp_path, str(out)), "--overwrite")
    assert out.read_text() == "earlier"
