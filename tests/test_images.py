import io

import numpy as np
import pytest
from PIL import Image

from fruitlake.images import ImageRejected, decode
from fruitlake.models import mobilenet_v2_normalise

MAX = 40_000_000


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_rgb_jpeg_is_resized_to_the_network_input():
    image = Image.new("RGB", (100, 60), (200, 30, 10))
    array = decode(encode(image, "JPEG", quality=95), 224, MAX)
    assert array.shape == (224, 224, 3) and array.dtype == np.uint8
    assert abs(int(array[112, 112, 0]) - 200) <= 3 and abs(int(array[112, 112, 1]) - 30) <= 3


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.new("L", (40, 40), 120), "PNG"),
        (Image.new("RGBA", (40, 40), (120, 120, 120, 255)), "PNG"),
        (Image.new("P", (40, 40), 7), "PNG"),
        (Image.new("CMYK", (40, 40), (0, 0, 0, 135)), "JPEG"),
        (Image.new("LA", (40, 40), (120, 255)), "PNG"),
        (Image.new("1", (40, 40), 1), "PNG"),
        (Image.fromarray(np.full((40, 40), 30000, dtype=np.uint16)), "PNG"),
    ],
    ids=["L", "RGBA", "P", "CMYK", "LA", "1", "I;16"],
)
def test_every_mode_becomes_rgb(image, fmt):
    array = decode(encode(image, fmt), 32, MAX)
    assert array.shape == (32, 32, 3)
    assert len(np.unique(array.reshape(-1, 3), axis=0)) == 1  # a flat image stays flat: no channel mix-up


def test_sixteen_bit_grey_is_scaled_not_clipped():
    image = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    assert image.mode.startswith("I;16")
    array = decode(encode(image), 8, MAX)
    assert 120 <= int(array[0, 0, 0]) <= 135


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert decode(encode(image), 10, MAX)[0, 0].tolist() == [255, 255, 255]


def test_empty_file_is_rejected_with_its_reason():
    with pytest.raises(ImageRejected, match="empty file"):
        decode(b"", 224, MAX)


def test_text_and_truncated_files_are_rejected():
    with pytest.raises(ImageRejected, match="not an image"):
        decode(b"hello, I am not a JPEG", 224, MAX)
    jpeg = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(ImageRejected, match="truncated|corrupt"):
        decode(jpeg[: len(jpeg) // 2], 224, MAX)


def test_too_many_pixels_are_rejected_before_decoding():
    with pytest.raises(ImageRejected, match="exceeds the limit of 1000 pixels"):
        decode(encode(Image.new("RGB", (50, 50))), 32, 1000)


def test_normalisation_matches_keras():
    from keras.applications.mobilenet_v2 import preprocess_input

    batch = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    expected = preprocess_input(batch.astype(np.float32))
    np.testing.assert_allclose(mobilenet_v2_normalise(batch), expected, atol=1e-6)
