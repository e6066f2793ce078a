"""Bytes -> RGB uint8 array at the network's input size. Pure functions: no Spark, no TensorFlow."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class ImageRejected(Exception):
    """This file cannot become a network input; the message is the reason recorded in rejects/."""


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grey: Pillow cannot convert these to RGB directly; scale to 8 bits ourselves.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels onto white, like a browser shows them, not onto undefined colours.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def decode(data: bytes, size: int, max_pixels: int) -> np.ndarray:
    """Decode any image Pillow reads into a (size, size, 3) uint8 RGB array, or raise ImageRejected."""
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected(
                    f"image too large to decode safely: {width}x{height} = {width * height} pixels "
                    f"exceeds the limit of {max_pixels} pixels"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not an image Pillow can identify") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"image too large to decode safely: {exc}") from None
    except OSError as exc:
        raise ImageRejected(f"corrupt or truncated image: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file rejection, never a dead job
        raise ImageRejected(f"cannot decode image: {type(exc).__name__}: {exc}") from None
