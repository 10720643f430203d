"""Image loading and Janus preprocessing in numpy/PIL: resize the long side, pad to a square, normalise.

Loading is defensive: it refuses what is not an image, is truncated or would decompress to an unreasonable
size, and converts every mode users throw at it (RGBA, palette, grayscale, CMYK, 16-bit) to RGB, honouring EXIF
orientation. Float images holding NaN or infinity are refused (PIL would turn them into black pixels). Any
exception PIL raises while decoding the user's bytes is an `ImageError`: its plugins raise many kinds on corrupt
input (OSError, SyntaxError, struct.error, EOFError ...).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError
from .manifest import Preprocessing

MAX_PIXELS = 64_000_000  # 8000 x 8000: far above any useful input for a 384 x 384 model
ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]


def load_image(source: ImageInput) -> Image.Image:
    """Returns an RGB PIL image from a path, encoded bytes, a PIL image or an HxWx3 uint8 array."""
    if isinstance(source, Image.Image):
        image, name = source, "the image"
    elif not isinstance(source, (str, Path, bytes, np.ndarray)):
        raise ImageError(f"an image is of type {type(source).__name__}",
                         "pass a file path, encoded bytes, a PIL image or an HxWx3 uint8 array")
    elif isinstance(source, np.ndarray):
        if source.ndim == 3 and source.shape[2] == 1:
            source = source[:, :, 0]
        channels_ok = source.ndim == 2 or (source.ndim == 3 and source.shape[2] in (3, 4))
        if not channels_ok or source.dtype != np.uint8:
            raise ImageError(f"an image array must be HxW, HxWx3 or HxWx4 uint8, got {source.dtype} {source.shape}",
                             "convert it with np.asarray(image, dtype=np.uint8)")
        image, name = Image.fromarray(source), "the array"
    else:
        data, name = _read_bytes(source)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name} is too large to decode safely, a decompression-bomb guard ({exc})",
                             "resize it below 8000x8000; the model sees 384x384") from None
        except Exception as exc:  # UnidentifiedImageError mostly; any plugin error on these bytes is the file's
            raise ImageError(f"{name} is not an image PIL can read ({exc.__class__.__name__})",
                             "pass a PNG, JPEG, WebP, BMP or TIFF file") from None
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(f"{name} is empty ({width}x{height} pixels)", "pass an image with content")
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name} is {width}x{height} pixels, over the {MAX_PIXELS:,}-pixel limit "
                         "(a decompression-bomb guard)", "resize it below 8000x8000; the model sees 384x384")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except Exception as exc:  # decoding the pixels: any plugin error is the file's (see the module docstring)
        raise ImageError(f"{name} is truncated or corrupt ({exc.__class__.__name__}: {exc})",
                         "re-save or re-download the image") from None
    return _to_rgb(image, name)


def _read_bytes(source) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "the image bytes"
    path = Path(source)
    if path.is_dir():
        raise ImageError(f"image path {path} is a directory", "pass an image file")
    if not path.is_file():
        raise ImageError(f"image file {path} does not exist", "check the path")
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ImageError(f"image file {path} cannot be read ({exc.strerror})", "check its permissions") from None


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    if image.mode == "F" and not np.isfinite(np.asarray(image)).all():
        raise ImageError(f"{name} is a float image holding NaN or infinity", "pass finite pixel values")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale, don't clip, to 8 bits
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageError(f"{name} has mode {image.mode}, which PIL cannot convert to RGB ({exc})",
                         "convert it to RGB yourself first") from None


def preprocess(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """RGB PIL image -> float32 [3, S, S]: long side to S (bicubic), centred on a background square, normalised."""
    size = spec.image_size
    width, height = image.size
    scale = size / max(width, height)
    new_w, new_h = max(round(width * scale), spec.min_size), max(round(height * scale), spec.min_size)
    resample = getattr(Image.Resampling, spec.resample.upper())
    resized = np.asarray(image.resize((new_w, new_h), resample=resample, reducing_gap=None), dtype=np.uint8)
    side = max(new_w, new_h)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[...] = np.asarray(spec.background, dtype=np.uint8)
    top, left = (side - new_h) // 2, (side - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    pixels = canvas.astype(np.float32) * np.float32(spec.rescale_factor)
    pixels = (pixels - np.asarray(spec.image_mean, np.float32)) / np.asarray(spec.image_std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """VQ decoder output [B,3,H,W] in [-1,1] -> uint8 [B,H,W,3], as the official recipe does."""
    return np.clip((pixels.transpose(0, 2, 3, 1) + 1.0) / 2.0 * 255.0, 0, 255).astype(np.uint8)


def make_grid(images: list[Image.Image], columns: int | None = None) -> Image.Image:
    """Tiles equally sized images into one picture, row by row."""
    columns = columns or min(len(images), 4)
    rows = -(-len(images) // columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid
