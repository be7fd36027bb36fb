"""Reading and resizing images the way every FnL inference path does (no torch).

One module for the PyTorch predictor, the ONNX runtime and the evaluation tools, so that each
of them sees the same pixels:

* :func:`read_image` turns a path, a PIL image, a numpy array or a torch tensor into an H×W×3
  uint8 RGB array: EXIF orientation applied, palette/greyscale/alpha/CMYK converted, 16-bit
  images scaled to 8 bits (not clipped), float arrays and tensors taken as 0..1 (torchvision's
  convention), and anything unreadable reported as :class:`ImageReadError` naming the file.
* :func:`resized_shape` and :func:`resize_image` are detectron2's ``ResizeShortestEdge`` at test
  time as the reference DensePose implementations run it: the new size rounds half up, and the
  uint8 image is resampled by Pillow's ``BILINEAR`` filter (which widens its support when
  shrinking). A float ``interpolate`` differs by up to one grey level in a few percent of the
  pixels, which is enough to change a network's proposals.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fnl_core.errors import ImageReadError

#: Images with more pixels than this are refused unless the caller raises the limit
#: (a 6000×4000 photo is 24 MP; decoding bombs are far larger).
MAX_PIXELS = 50_000_000


def resized_shape(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """Short side to ``short``, long side at most ``max_size``; sizes round half up.

    An image so thin that a side would shrink to nothing (20000×3 at 800/1333) raises
    :class:`~fnl_core.errors.ImageReadError` (a ``ValueError``), which commands report and skip
    like an unreadable file."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    size = int(height * scale + 0.5), int(width * scale + 0.5)
    if min(size) < 1:
        raise ImageReadError(
            f"a {height}x{width} image is too thin for the model: at its input size (short side "
            f"{short}, long side at most {max_size}) it would be {size[0]}x{size[1]} pixels"
        )
    return size


def resize_image(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """An H×W×3 uint8 image resampled to ``size_hw`` with Pillow bilinear (unchanged if equal)."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    if tuple(image.shape[:2]) == tuple(size_hw):
        return image
    height, width = size_hw
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_shortest_edge(image: np.ndarray, short: int, max_size: int) -> np.ndarray:
    """:func:`resize_image` to the size :func:`resized_shape` gives."""
    return resize_image(image, resized_shape(image.shape[0], image.shape[1], short, max_size))


def _to_8bit(array: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float pixel values scaled to uint8 over their type's range."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        top = 65535 if array.max(initial=0) > 255 else 255
        return np.clip(np.rint(array.astype(np.float64) * 255.0 / top), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64))
        top = 1.0 if finite.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(np.rint(finite * 255.0 / top), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {array.dtype}")


def _pil_to_rgb(image: Any) -> np.ndarray:
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = _to_8bit(np.asarray(image))
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"))


def _is_torch_tensor(source: Any) -> bool:
    """Whether ``source`` is a torch tensor (without importing torch)."""
    return type(source).__module__.split(".")[0] == "torch" and hasattr(source, "permute")


def _tensor_to_hwc(tensor: Any) -> np.ndarray:
    """A torch image tensor as an H×W(×C) numpy array: C×H×W (torchvision's layout) is
    transposed, H×W×C and H×W are kept."""
    array = tensor.detach().cpu().numpy()
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return array


def _float_to_8bit(array: np.ndarray) -> np.ndarray:
    """A float image in 0..1 (torchvision's convention) as uint8 0..255; other ranges refused."""
    finite = np.nan_to_num(array.astype(np.float64))
    low, high = float(finite.min(initial=0.0)), float(finite.max(initial=0.0))
    if low < 0.0 or high > 1.0:
        raise ImageReadError(
            f"float image values must be in 0..1 (torchvision's convention), got {low:g}..{high:g}:"
            " divide a 0..255 image by 255, or pass it as uint8"
        )
    return np.clip(np.rint(finite * 255.0), 0, 255).astype(np.uint8)


def read_image(source: Any, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """An H×W×3 uint8 RGB array from a path, a PIL image, a numpy array or a torch tensor.

    Arrays may be H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA, alpha dropped); torch tensors may
    also be C×H×W (torchvision's layout, C = 1, 3 or 4). uint8 values are 0..255; 16-bit
    integers are scaled, not clipped; float arrays and tensors must hold 0..1 (torchvision's
    ``to_tensor`` / ``convert_image_dtype`` convention) and are scaled by 255: a float image
    with values outside 0..1 (a 0..255 image cast to float, say) is refused with one line,
    rather than guessed. Files are decoded completely here, so a truncated file fails now, with
    its name, rather than later inside the model.
    """
    from PIL import Image

    if _is_torch_tensor(source):
        source = _tensor_to_hwc(source)
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape:
            raise ImageReadError(
                f"image array must be HxWx3 (RGB; torch tensors also 3xHxW), got shape "
                f"{tuple(array.shape)}"
            )
        array = array[..., :3]
        if np.issubdtype(array.dtype, np.floating):
            return np.ascontiguousarray(_float_to_8bit(array))
        return np.ascontiguousarray(_to_8bit(array))
    if not isinstance(source, (str, Path, Image.Image)) and not hasattr(source, "__fspath__"):
        raise ImageReadError(
            f"an image must be a path, a PIL image, a numpy array or a torch tensor, got "
            f"{type(source).__name__}"
        )
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    path = Path(source)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return _pil_to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(
            f"{path}: image too large ({exc}); at most {max_pixels} pixels expected"
        ) from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: unreadable image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


#: zlib level of the PNGs FnL writes: level 1 writes a 24 MP picture about 4× faster than
#: Pillow's default 6, for files about a fifth larger (still lossless).
PNG_COMPRESS_LEVEL = 1


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write an H×W×3 (or H×W) uint8 array as a lossless PNG, quickly (zlib level 1)."""
    from PIL import Image

    Image.fromarray(np.asarray(image)).save(path, compress_level=PNG_COMPRESS_LEVEL)
