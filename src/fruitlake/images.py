"""Bytes -> RGB uint8 array at the network's input size. Pure functions: no Spark, no TensorFlow."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

# Only the decoders photos need: Pillow would otherwise also try EPS (Ghostscript), TIFF, PSD... on any bytes.
# The content decides, not the name: a GIF or PNG saved as `.jpg` is decoded as what it is.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")  # JPEG includes phones' multi-picture (MPO) files
_REASON_CHARS = 200
EMPTY_FILE = "empty file (0 bytes)"


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


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(char.isprintable() or char in "\r\n\t" for char in text)


def _short(message: object) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _too_large(pixels: object, limit: int) -> ImageRejected:
    return ImageRejected(
        f"image too large to decode safely: {pixels} pixels exceeds the limit of {limit} pixels"
    )


def decode(data: bytes, size: int, max_pixels: int) -> NDArray[np.uint8]:
    """Decode a photo into a (size, size, 3) uint8 RGB array, or raise ImageRejected saying why not.

    Nothing else escapes: whatever a decoder throws on hostile or broken bytes becomes a rejection.
    """
    if not data:
        raise ImageRejected(EMPTY_FILE)
    try:
        with warnings.catch_warnings():
            # Our own limit is checked below; Pillow's hard limit (2x its warning threshold) still applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > max_pixels:  # checked on the header, before a pixel is decoded
                raise _too_large(f"{width}x{height} = {width * height}", max_pixels)
            if image.format in ("JPEG", "MPO"):
                # libjpeg's DCT scaling: decode at 1/2, 1/4 or 1/8 while both sides stay >= the network's input,
                # ~3x less work on a 12 MP photo than decoding it whole to shrink it afterwards.
                image.draft(image.mode, (size, size))
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(rgb, dtype=np.uint8)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        if _looks_like_text(data):
            raise ImageRejected("not an image: the file holds text") from None
        raise ImageRejected(f"not an image: no {', '.join(FORMATS)} header found") from None
    except Image.DecompressionBombError as exc:
        found = re.search(r"(\d+) pixels", str(exc))
        limit = min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else max_pixels
        raise _too_large(found.group(1) if found else "more", limit) from None
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise ImageRejected(f"truncated image: {_short(exc)}") from None
        raise ImageRejected(f"corrupt image data: {_short(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file rejection, never a dead job
        raise ImageRejected(f"cannot decode image: {type(exc).__name__}: {_short(exc)}") from None
    if array.shape != (size, size, 3):  # e.g. a zero-sized frame: never hand the network a wrong shape
        raise ImageRejected(f"cannot decode image: decoded to shape {array.shape}")
    return array
