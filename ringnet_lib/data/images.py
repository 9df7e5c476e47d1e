"""Reading images: every photo and dataset image of the library goes through :func:`read_image`.

Photos come in many modes; each is converted so that nothing is silently wrong:

* 8-bit RGB, palette, CMYK: PIL's conversion to RGB;
* grey-scale (8 or 16 bit): the grey value in all three channels;
* 16-bit (PNG ``I;16``, ``I`` with values up to 65535): **scaled** to 8 bits (value / 257), not
  clipped (PIL's plain ``convert("RGB")`` clips them, and a 16-bit photo turns white);
* with alpha (RGBA, LA, palette with transparency): composited over :data:`BACKGROUND`;
* larger than PIL's ``Image.MAX_IMAGE_PIXELS`` (89 M pixels): refused before decoding (a
  decompression bomb); the photo tools downscale large photos that pass before detecting faces.

Errors are :class:`ImageError`, one line naming the file.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

BACKGROUND = (0, 0, 0)  # what transparent pixels become (the renderer's and the crops' padding colour)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(ValueError):
    """An image cannot be read as a photo; the message names the file and says why."""


def _to_uint8_rgb(handle: Image.Image) -> np.ndarray:
    """A PIL image of any common mode -> ``H x W x 3`` uint8 (see the module docstring)."""
    mode = handle.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(handle, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        values = np.asarray(handle, dtype=np.float64)
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in handle.info):
        rgba = handle.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return np.asarray(Image.alpha_composite(flat, rgba).convert("RGB"))
    return np.asarray(handle.convert("RGB"))


def read_image(path: str | Path) -> np.ndarray:
    """An image file -> ``H x W x 3`` uint8 RGB, whatever its mode and bit depth.

    Raises:
        ImageError: no such file, not an image, truncated, or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                handle.load()
                return _to_uint8_rgb(handle)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: refused: more than {Image.MAX_IMAGE_PIXELS:,} pixels (a decompression bomb, or a "
                         "photo to downscale first)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"{path}: not an image that can be read ({type(error).__name__}: {error}); "
                         "give a .jpg or .png photo") from None
