"""CPU inference runs torchvision's single-threaded kernels side by side: same results, no
OpenMP teams in the pool threads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torchvision.ops import batched_nms

from fnl_detector.modeling.parallel import (
    batched_nms_by_group,
    parallel_workers,
    run_pieces,
    split_evenly,
)
from fnl_detector.modeling.poolers import RoIPooler


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _random_boxes(n: int, size: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size * 0.8
    wh = torch.rand(n, 2, generator=g) * size * 0.5 + 2
    return torch.cat([xy, xy + wh], dim=1)


def test_split_evenly():
    assert split_evenly(0, 3) == []
    assert split_evenly(5, 2) == [slice(0, 3), slice(3, 5)]
    assert split_evenly(2, 5) == [slice(0, 1), slice(1, 2)]
    assert split_evenly(4, 0) == [slice(0, 4)]


@pytest.mark.parametrize("costs", [None, [1.0, 9.0, 1.0, 5.0, 2.0]])
def test_run_pieces_keeps_order(two_threads, costs):
    with torch.no_grad():
        out = run_pieces(lambda a, b: a * 10 + b, [(k, 1) for k in range(5)], 2, costs=costs)
    assert out == [1, 11, 21, 31, 41]
    with pytest.raises(ValueError, match="2 costs for 5 pieces"):
        run_pieces(lambda a: a, [(k,) for k in range(5)], 2, costs=[1.0, 2.0])


def test_parallel_only_when_it_cannot_change_behaviour(two_threads):
    cpu = torch.device("cpu")
    assert parallel_workers(cpu) == 1  # gradients on
    with torch.no_grad():
        assert parallel_workers(cpu) == 2
        torch.set_num_threads(1)
        assert parallel_workers(cpu) == 1
    with torch.inference_mode():
        assert parallel_workers(torch.device("meta")) == 1


@pytest.mark.parametrize("channels", [64, 256])
def test_multilevel_pooler_matches_serial(two_threads, channels):
    torch.manual_seed(0)
    strides = [4, 8, 16, 32]
    features = {
        f"p{k + 2}": torch.randn(2, channels, 256 // s, 320 // s) for k, s in enumerate(strides)
    }
    pooler = RoIPooler(in_features=list(features), strides=strides, resolution=7, sampling_ratio=0)
    # Image 1 has no boxes on the top level; image 0 has many small (P2) boxes.
    boxes = [_random_boxes(300, 250, seed=1), _random_boxes(40, 120, seed=2)]
    serial = pooler(features, boxes)  # gradients on: the serial path
    with torch.inference_mode():
        parallel = pooler(features, boxes)
        cl = {k: v.contiguous(memory_format=torch.channels_last) for k, v in features.items()}
        parallel_cl = pooler(cl, boxes)
        empty = pooler(features, [torch.zeros((0, 4)), torch.zeros((0, 4))])
    assert torch.equal(parallel, serial)
    assert torch.equal(parallel_cl, serial)
    assert parallel_cl.is_contiguous(memory_format=torch.channels_last)
    assert empty.shape == (0, channels, 7, 7)


def test_single_level_pooler_matches_serial(two_threads):
    torch.manual_seed(0)
    feats = {"p2": torch.randn(1, 16, 64, 80)}
    pooler = RoIPooler(in_features=["p2"], strides=[4], resolution=7, sampling_ratio=2)
    boxes = [_random_boxes(200, 250, seed=3)]
    serial = pooler(feats, boxes)
    with torch.no_grad():
        assert torch.equal(pooler(feats, boxes), serial)


def test_batched_nms_by_group_matches_torchvision(two_threads):
    g = torch.Generator().manual_seed(0)
    boxes = _random_boxes(3000, 300, seed=4)
    scores = torch.rand(3000, generator=g)
    groups = torch.randint(0, 5, (3000,), generator=g)
    expected = batched_nms(boxes, scores, groups, 0.5)
    with torch.inference_mode():
        got = batched_nms_by_group(boxes, scores, groups, 0.5)
        small = batched_nms_by_group(boxes[:500], scores[:500], groups[:500], 0.5)
    assert torch.equal(got, expected)
    assert torch.equal(small, batched_nms(boxes[:500], scores[:500], groups[:500], 0.5))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_pool_threads_do_not_start_openmp_teams():
    """A pool thread entering an OpenMP region gets a team of its own and libgomp then stops
    spinning for every op (Mobile B's backbone measured 38 -> 50-65 ms): the process must end
    with only the caller's team plus the pool threads."""
    script = textwrap.dedent(
        """
        import os, torch
        from fnl_detector.modeling.poolers import RoIPooler
        torch.set_num_threads(2)
        x = {f"p{k}": torch.randn(1, 64, 512 >> k, 512 >> k) for k in (2, 3, 4, 5)}
        conv = torch.nn.Conv2d(64, 64, 3)
        with torch.inference_mode():
            conv(x["p2"])  # the caller's OpenMP team exists before the pool does
            before = len(os.listdir("/proc/self/task"))
            xy = torch.rand(1000, 2) * 400
            rois = [torch.cat([xy, xy + torch.rand(1000, 2) * 100 + 4], 1)]
            pooler = RoIPooler(in_features=list(x), strides=[4, 8, 16, 32], resolution=7)
            for _ in range(3):
                pooler(x, rois)
            conv(x["p2"])
        print(len(os.listdir("/proc/self/task")) - before)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert int(out.strip().splitlines()[-1]) == 2  # the two pool threads, nothing more
