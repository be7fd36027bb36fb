"""fnl_core.imaging: the one image reader and resize rule of every inference path."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fnl_core.errors import ImageReadError, InputError
from fnl_core.imaging import read_image, resize_image, resize_shortest_edge, resized_shape

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("FNL_FIXTURES", REPO.parent / "shared" / "fixtures"))
RESIZED_FIXTURES = ("fnl-mobile-b-wc2m-reference", "fnl-mobile-b-cse-reference")


def test_resized_shape_rounds_half_up_and_caps_the_long_side():
    assert resized_shape(480, 640, 512, 1333) == (512, 683)
    assert resized_shape(240, 320, 240, 1333) == (240, 320)
    assert resized_shape(100, 2000, 512, 1333) == (67, 1333)
    with pytest.raises(ValueError, match="positive"):
        resized_shape(0, 10, 512, 1333)


@pytest.mark.parametrize("name", RESIZED_FIXTURES)
def test_resize_reproduces_the_reference_pixels(name):
    folder = FIXTURES / name
    if not (folder / "outputs.npz").is_file():
        pytest.skip(f"shared fixture {folder} not present")
    expected = np.load(folder / "outputs.npz")["resized_image"]
    image = read_image(folder / "input.png")
    assert image.shape == (480, 640, 3)
    resized = resize_shortest_edge(image, 512, 1333)
    np.testing.assert_array_equal(resized, expected)


def test_resize_is_pillow_bilinear_not_a_float_interpolation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    out = resize_image(image, (17, 23))
    expected = np.asarray(Image.fromarray(image).resize((23, 17), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)
    assert resize_image(image, (30, 40)) is image


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    out = read_image(path)
    assert out.shape == (40, 20, 3)
    assert out[3, 16, 0] > 200 and out[3, 16, 1] < 60  # the red corner moved to the top right
    assert out[3, 3, 0] < 60


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "depth.png"
    Image.fromarray(values).save(path)
    out = read_image(path)
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])


def test_alpha_is_composited_on_white_and_arrays_are_accepted():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    assert read_image(Image.fromarray(rgba, "RGBA"))[0, 0].tolist() == [255, 255, 255]
    assert read_image(np.zeros((3, 5), np.uint8)).shape == (3, 5, 3)
    with pytest.raises(ImageReadError, match="HxWx3"):
        read_image(np.zeros((3, 5, 2), np.uint8))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not an image at all", "not an image file"),
        (None, "unreadable image"),  # truncated PNG
    ],
)
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content is None:
        content = _png_bytes(Image.new("RGB", (64, 64), (10, 20, 30)))[:60]
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, InputError)


def test_too_many_pixels_is_refused(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(path)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(path, max_pixels=1000)
    assert read_image(path).shape == (100, 200, 3)


def test_float_arrays_are_0_to_1_and_other_ranges_are_refused():
    pixels = np.array([[[0, 128, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(read_image(pixels / 255.0), pixels)
    with pytest.raises(ImageReadError, match=r"float image values must be in 0\.\.1"):
        read_image(pixels.astype(np.float32))  # 0..255 as float: refused, not guessed
    with pytest.raises(ImageReadError, match="must be a path, a PIL image"):
        read_image(3.5)
