"""Fuzz the readers of user files with mutated inputs from a fixed seed.

Each case must either load or fail with FnL's own error type (:class:`fnl_core.errors.FnLError`)
and a message; no other exception may escape and no case may take longer than ``LIMIT_S``.
Readers: DensePose-COCO JSON (``fnl_data.coco``), results JSON through the evaluator
(``fnl_eval``), images (``fnl_core.imaging.read_image``), weights and trainer states
(``fnl_detector.train.checkpoint``).
"""

from __future__ import annotations

import copy
import io
import json
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fnl_core.errors import FnLError

SEED = 20261126
LIMIT_S = 2.0

#: Values a mutation puts in place of a field: wrong types, edge and absurd numbers.
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**70, -(2**70), 1e308, -1e308, float("nan"), float("inf"),
    0.5, "", "x", "1", "nan", [], [1, 2], [[1, 2]], {}, {"a": 1}, [None], ["x"] * 3,
]  # fmt: skip


class CaseTimeoutError(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeoutError


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a JSON value."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:6]):
            out += _paths(v, (*prefix, i))
    return out


def mutate_json(obj: Any, rng: random.Random) -> Any:
    """One to three structural mutations: delete, replace, duplicate, truncate, wrap."""
    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(obj) if p]
        if not paths:
            return rng.choice(ODD_VALUES)
        path = rng.choice(paths)
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = rng.randrange(5)
        if op == 0:
            del parent[key]
        elif op == 1:
            parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif op == 2 and isinstance(parent[key], list):
            parent[key] = parent[key] + parent[key][:2]
        elif op == 3 and isinstance(parent[key], list):
            parent[key] = parent[key][: rng.randrange(len(parent[key]) + 1)]
        else:
            parent[key] = [parent[key]] if rng.random() < 0.5 else {"v": parent[key]}
    return obj


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Byte-level damage: flips, truncation, insertion, a zeroed run."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if not buf:
            break
        pos = rng.randrange(len(buf))
        if op == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            del buf[rng.randrange(len(buf)) :]
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            n = rng.randint(1, 16)
            buf[pos : pos + n] = bytes(min(n, len(buf) - pos))
    return bytes(buf)


def run_cases(
    name: str, cases: list[bytes], path: Path, read: Callable[[Path], Any]
) -> dict[str, int]:
    """Write each case to ``path`` and read it; count outcomes, fail on escapes or hangs."""
    counts = {"loaded": 0, "rejected": 0}
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for k, data in enumerate(cases):
            path.write_bytes(data)
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, LIMIT_S)
            try:
                read(path)
                counts["loaded"] += 1
            except CaseTimeoutError:
                pytest.fail(f"{name} case {k} took longer than {LIMIT_S} s: {data[:200]!r}")
            except FnLError as exc:
                assert str(exc).strip(), f"{name} case {k}: empty message"
                counts["rejected"] += 1
            except Exception as exc:  # the point: catch anything that escapes
                pytest.fail(
                    f"{name} case {k} escaped as {type(exc).__name__}: {exc!s:.300} "
                    f"(input {data[:300]!r})"
                )
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            assert time.perf_counter() - start < LIMIT_S
    finally:
        signal.signal(signal.SIGALRM, previous)
    return counts


def json_cases(base: Any, n: int, rng: random.Random) -> list[bytes]:
    """The valid text, then ``n`` inputs: structural mutations (2/3) and byte damage (1/3)."""
    text = json.dumps(base).encode()
    out = [text]
    for k in range(n):
        if k % 3 == 2:
            out.append(mutate_bytes(text, rng))
        else:
            out.append(json.dumps(mutate_json(base, rng)).encode())
    return out


# ------------------------------------------------------------------------------- inputs
def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def densepose_coco() -> dict[str, Any]:
    body = np.zeros((256, 256), np.uint8)
    body[40:200, 60:180] = 1
    ann = {
        "id": 1, "image_id": 1, "category_id": 1, "bbox": [10.0, 20.0, 50.0, 80.0],
        "area": 4000.0, "iscrowd": 0,
        "dp_x": [10.0, 120.5, 200.0], "dp_y": [30.0, 100.0, 250.0], "dp_I": [1.0, 2.0, 24.0],
        "dp_U": [0.1, 0.5, 1.0], "dp_V": [0.0, 0.3, 0.9],
        "dp_masks": [_rle(body)] + [[] for _ in range(13)],
    }  # fmt: skip
    crowd = {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 5.0, 5.0],
             "iscrowd": 1, "area": 25.0}  # fmt: skip
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 120, "width": 100}],
        "annotations": [ann, crowd],
        "categories": [{"id": 1, "name": "person"}],
    }


def results_list() -> list[dict[str, Any]]:
    from fnl_eval.results import make_result

    iuv = np.zeros((3, 80, 50), np.uint8)
    iuv[0, 10:70, 10:40] = 2
    iuv[1:, 10:70, 10:40] = 128
    return [
        make_result(1, [10.0, 20.0, 50.0, 80.0], 0.9, iuv),
        {"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.2},
    ]


# -------------------------------------------------------------------------------- tests
def test_fuzz_densepose_coco_reader(tmp_path):
    pytest.importorskip("fnl_data", reason="needs fnl-data")
    from fnl_data.coco import read_densepose_coco

    cases = json_cases(densepose_coco(), 240, random.Random(SEED))
    counts = run_cases("coco", cases, tmp_path / "gt.json", read_densepose_coco)
    assert counts["loaded"] > 10 and counts["rejected"] > 100, counts


def test_fuzz_results_reader_through_the_evaluator(tmp_path):
    pytest.importorskip("fnl_eval", reason="needs fnl-eval")
    from fnl_eval import DensePoseEvaluator

    gt = densepose_coco()
    evaluator = DensePoseEvaluator(None, metrics=("bbox", "segm", "dp_segm"))
    cases = json_cases(results_list(), 150, random.Random(SEED + 1))
    counts = run_cases(
        "results", cases, tmp_path / "results.json", lambda p: evaluator.evaluate(gt, p)
    )
    assert counts["loaded"] > 1 and counts["rejected"] > 50, counts


def test_fuzz_ground_truth_through_the_evaluator(tmp_path):
    pytest.importorskip("fnl_eval", reason="needs fnl-eval")
    from fnl_eval import DensePoseEvaluator

    results = results_list()
    evaluator = DensePoseEvaluator(None, metrics=("bbox", "segm", "dp_segm"))
    cases = json_cases(densepose_coco(), 150, random.Random(SEED + 2))
    counts = run_cases(
        "evaluator gt", cases, tmp_path / "gt.json", lambda p: evaluator.evaluate(p, results)
    )
    assert counts["loaded"] > 10 and counts["rejected"] > 50, counts


def _image_bytes(fmt: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def test_fuzz_image_reader(tmp_path):
    from fnl_core.imaging import read_image

    rng = random.Random(SEED + 3)
    cases = [mutate_bytes(_image_bytes(fmt), rng) for fmt in ("PNG", "JPEG") for _ in range(80)]
    cases += [b"", b"not an image", _image_bytes("PNG")[:40]]
    counts = run_cases("image", cases, tmp_path / "image.bin", read_image)
    assert counts["loaded"] > 5 and counts["rejected"] > 40, counts


def test_fuzz_weights_and_trainer_state(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save

    from fnl_detector.train.checkpoint import load_state
    from fnl_detector.weights import FORMAT, read_weights

    rng = random.Random(SEED + 4)
    weights = save({"a.weight": torch.ones(4, 3), "b": torch.arange(5)}, metadata={"k": "v"})
    cases = [mutate_bytes(weights, rng) for _ in range(120)] + [b"", b"\x00" * 8]
    counts = run_cases("safetensors", cases, tmp_path / "model.safetensors", read_weights)
    assert counts["rejected"] > 60, counts

    buf = io.BytesIO()
    torch.save({"format": FORMAT, "iteration": 3, "optimizer": {"lr": torch.ones(2)}}, buf)
    cases = [mutate_bytes(buf.getvalue(), rng) for _ in range(60)]
    counts = run_cases("trainer state", cases, tmp_path / "trainer_state.pt", load_state)
    assert counts["rejected"] > 30, counts
