"""fnl_core.texture: the atlas convention, extraction, accumulation, painting, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from fnl_core.results import encode_array, make_result
from fnl_core.texture import (
    Chart,
    IoUTracker,
    accumulate,
    apply_texture,
    atlas_shape,
    box_iou,
    chart_of,
    extract_texture,
    read_atlas,
    tile_of,
    to_rgba,
)


def _chart(rng, h=90, w=70, parts=(1, 2, 15, 24)):
    """A chart whose foreground is split into vertical bands of ``parts`` with random U, V."""
    iuv = np.zeros((3, h, w), dtype=np.uint8)
    band = np.repeat(np.array(parts, dtype=np.uint8), -(-w // len(parts)))[:w]
    iuv[0] = band[None, :]
    iuv[0, :5] = 0  # a background strip
    iuv[1:] = rng.integers(0, 256, (2, h, w), dtype=np.uint8)
    return iuv


def _smooth_atlas(rng, tile):
    """A random atlas smooth at the texel scale: 8 x 8 random colours per tile, upsampled."""
    from PIL import Image

    coarse = rng.integers(0, 256, (6 * 8, 4 * 8, 3), dtype=np.uint8)
    h, w = atlas_shape(tile)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))


def test_atlas_convention_tile_and_axes():
    tile = 10
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[1, 1] = (200, 100, 50)
    iuv = np.zeros((3, 4, 4), dtype=np.uint8)
    iuv[:, 1, 1] = (8, 255, 0)  # part 8: row (8-1) % 6 = 1, column (8-1) // 6 = 1; U=1, V=0
    atlas, coverage = extract_texture(image, Chart(0, 0, iuv), tile=tile)
    assert atlas.shape == (60, 40, 3) and coverage.shape == (60, 40)
    (r,), (c,) = np.nonzero(coverage)
    assert (r, c) == (1 * tile + tile - 1, 1 * tile + tile - 1)  # x ~ U, y ~ 1 - V
    assert tuple(atlas[r, c]) == (200, 100, 50)
    iuv[:, 1, 1] = (1, 0, 255)  # part 1, U=0, V=1: the tile's top-left texel
    atlas, coverage = extract_texture(image, Chart(0, 0, iuv), tile=tile)
    assert list(zip(*np.nonzero(coverage))) == [(0, 0)]


def test_tile_of_and_read_atlas():
    assert tile_of((1200, 800, 4)) == 200
    for bad in ((1200, 801), (600, 800), (6, 4)):
        with pytest.raises(ValueError, match="6N pixels tall"):
            tile_of(bad)
    rgb = np.full((60, 40, 3), 7, np.uint8)
    rgba = read_atlas(rgb)
    assert rgba.shape == (60, 40, 4) and (rgba[..., 3] == 255).all()
    with pytest.raises(ValueError):
        read_atlas(np.zeros((61, 40, 3), np.uint8))


def test_read_atlas_file(tmp_path):
    from PIL import Image

    from fnl_core.errors import ImageReadError

    rgba = np.zeros((60, 40, 4), np.uint8)
    rgba[:30, :, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.array_equal(read_atlas(tmp_path / "a.png"), rgba)
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError):
        read_atlas(tmp_path / "b.png")


@pytest.mark.parametrize("tile", [256, 200])
def test_round_trip_reproduces_the_atlas(tile):
    """Paint a random atlas with a chart, extract it with the same chart. With N = 256 the
    8-bit U/V land on texel centres, so any random atlas comes back within 3 grey levels (in
    fact exactly); with N = 200 the bilinear lookup falls between texels while extraction
    takes the nearest texel, so a smooth random atlas comes back within half a texel's
    gradient: under 1.5 grey levels on average."""
    rng = np.random.default_rng(tile)
    h, w = atlas_shape(tile)
    if tile == 256:
        atlas = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        atlas = _smooth_atlas(rng, tile)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    chart = Chart(100, 60, _chart(rng, 150, 120))
    painted = apply_texture(image, chart, atlas)
    assert not np.array_equal(painted, image)
    got, coverage = extract_texture(painted, chart, tile=tile)
    covered = coverage > 0
    assert covered.sum() > 5000
    err = np.abs(got[covered].astype(int) - atlas[covered].astype(int))
    if tile == 256:
        assert err.max() <= 3, err.max()
    else:
        assert err.mean() < 1.5, err.mean()
    # outside the person the photo is untouched
    fg = np.zeros((240, 320), bool)
    fg[60:210, 100:220] = chart.iuv[0] > 0
    assert np.array_equal(painted[~fg], image[~fg])


def test_round_trip_fails_with_another_chart():
    rng = np.random.default_rng(0)
    atlas = rng.integers(0, 256, (*atlas_shape(256), 3), dtype=np.uint8)
    image = np.zeros((200, 200, 3), np.uint8)
    chart = Chart(10, 10, _chart(rng, 100, 80))
    painted = apply_texture(image, chart, atlas)
    other = Chart(10, 10, _chart(rng, 100, 80))
    got, coverage = extract_texture(painted, other, tile=256)
    covered = coverage > 0
    assert np.abs(got[covered].astype(int) - atlas[covered].astype(int)).mean() > 30


def test_results_entry_equals_chart_and_clips_to_the_image():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    iuv = _chart(rng, 60, 50)
    entry = make_result(1, [90.7, 60.2, 50.0, 60.0], 0.9, iuv)  # runs past the right/bottom
    chart = chart_of(entry)
    assert (chart.x, chart.y) == (90, 60) and np.array_equal(chart.iuv, iuv)
    a1, c1 = extract_texture(image, entry, tile=32)
    a2, c2 = extract_texture(image, Chart(90, 60, iuv), tile=32)
    assert np.array_equal(a1, a2) and np.array_equal(c1, c2)
    visible = iuv[0, :40, :30] > 0
    assert 0 < (c1 > 0).sum() <= visible.sum()
    painted = apply_texture(image, [entry], np.full((192, 128, 3), 9, np.uint8))
    assert (painted[60:, 90:][visible] == 9).all()
    assert np.array_equal(painted[:60], image[:60])


def test_weights_chart_area_and_sigma():
    image = np.zeros((10, 10, 3), np.uint8)
    image[:, :5] = 100
    image[:, 5:] = 200
    iuv = np.zeros((3, 10, 10), np.uint8)
    iuv[0, :, :5] = 3  # 50 pixels of part 3 at the texel of (U, V) = 0
    iuv[0, 0, 5] = 3  # 1 pixel of part 3, another colour, the same texel
    iuv[0, 1:, 5:] = 4
    atlas, coverage = extract_texture(image, Chart(0, 0, iuv), tile=8)
    r, c = 2 * 8 + 7, 0  # part 3: tile row 2, column 0; V = 0 -> bottom row
    assert coverage[r, c] == 51 * 51  # each pixel weighs its part's area (51)
    assert atlas[r, c, 0] == round((50 * 100 + 200) / 51)
    sigma = np.full((10, 10), 3.0, np.float32)  # weight 1 / (1 + 3) = 0.25
    entry = make_result(1, [0, 0, 10, 10], 0.9, iuv)
    entry["confidences"] = {"sigma_2": encode_array(sigma)}
    _, coverage = extract_texture(image, entry, tile=8)
    assert coverage[r, c] == pytest.approx(51 * 0.25)
    # confidence blends the painted colour with the photo
    painted = apply_texture(image, entry, np.full((48, 32, 3), 0, np.uint8))
    assert painted[5, 2, 0] == 75  # 100 + 0.25 * (0 - 100)


def test_uncovered_texels_do_not_paint():
    iuv = np.zeros((3, 4, 4), np.uint8)
    iuv[:, :, :] = np.array([1, 0, 255], np.uint8)[:, None, None]  # part 1, top-left texel
    image = np.full((4, 4, 3), 50, np.uint8)
    atlas = np.zeros((48, 32, 4), np.uint8)  # fully transparent
    assert np.array_equal(apply_texture(image, Chart(0, 0, iuv), atlas), image)
    atlas[0, 0] = (255, 0, 0, 255)
    assert (apply_texture(image, Chart(0, 0, iuv), atlas) == (255, 0, 0)).all()


def test_accumulate_fills_in_and_weights():
    a1 = np.zeros((12, 8, 3), np.uint8)
    a2 = np.zeros((12, 8, 3), np.uint8)
    c1 = np.zeros((12, 8), np.float32)
    c2 = np.zeros((12, 8), np.float32)
    a1[0, 0], c1[0, 0] = 100, 1.0
    a2[0, 0], c2[0, 0] = 200, 3.0  # same texel, three times the weight
    a2[5, 5], c2[5, 5] = 40, 2.0  # only seen in the second frame
    atlas, coverage = accumulate([(a1, c1), (a2, c2)])
    assert atlas[0, 0, 0] == 175 and atlas[5, 5, 0] == 40
    assert coverage[0, 0] == 4.0 and (coverage > 0).sum() == 2
    rgba = to_rgba(atlas, coverage)
    assert rgba.shape == (12, 8, 4) and rgba[..., 3].sum() == 2 * 255
    with pytest.raises(ValueError, match="at least one"):
        accumulate([])
    with pytest.raises(ValueError, match="different sizes"):
        accumulate([(a1, c1), (np.zeros((6, 4, 3), np.uint8), np.zeros((6, 4), np.float32))])


def test_box_iou_and_tracker():
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]).tolist() == [[1 / 3, 0.0]]
    tracker = IoUTracker(min_iou=0.3)
    assert tracker.update([[0, 0, 10, 10], [50, 0, 60, 10]]) == [0, 1]
    # the two people move a little and come in the other order; a third appears
    assert tracker.update([[52, 0, 62, 10], [100, 0, 110, 10], [1, 0, 11, 10]]) == [1, 2, 0]
    assert tracker.update([]) == []
    assert tracker.update([[1, 0, 11, 10]]) == [3]  # a gap ends a track
    with pytest.raises(ValueError):
        IoUTracker(min_iou=0)
