import io
import struct
import zlib

import numpy as np
import pytest
from helpers import encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from fruitlake.images import ImageRejected, decode
from fruitlake.models import mobilenet_v2_normalise

MAX = 40_000_000


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


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height but whose pixel data is a few bytes."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")


def jpeg_bytes(size=(64, 48)) -> bytes:
    return encode(gradient(size), "JPEG", quality=90)


def gradient(size=(64, 48)) -> Image.Image:
    """Not symmetric in any direction, so a wrong rotation or flip shows."""
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None]
    rgb = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                    np.full((height, width), 90.0)], axis=-1)
    rgb[: height // 4, : width // 4] = (255, 0, 0)  # a red corner: top-left when upright
    return Image.fromarray(rgb.astype(np.uint8))


RANDOM_BYTES = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", r"^empty file \(0 bytes\)$"),
        (jpeg_bytes()[:300], r"^truncated image: "),
        (b"Hello, I am a text file\nnamed .jpg\n", r"^not an image: the file holds text$"),
        (RANDOM_BYTES, r"^not an image: no JPEG, PNG, GIF, BMP, WEBP header found$"),
        (png_claiming(300, 200), r"^(truncated image|corrupt image data): "),
    ],
    ids=["zero-bytes", "truncated-jpeg", "text-named-jpg", "random-bytes", "png-without-its-pixels"],
)
def test_each_bad_file_gets_its_own_reason(data, reason):
    with pytest.raises(ImageRejected, match=reason):
        decode(data, 224, MAX)


def test_too_many_pixels_are_rejected_before_decoding_with_the_limit_in_the_reason():
    with pytest.raises(ImageRejected, match=r"50x50 = 2500 pixels exceeds the limit of 1000 pixels"):
        decode(encode(Image.new("RGB", (50, 50))), 32, 1000)
    # A decompression bomb: the header claims 20000 x 20000; refused from the header, nothing is allocated.
    bomb = r"too large to decode safely: 400000000 pixels exceeds the limit of 40000000 pixels"
    with pytest.raises(ImageRejected, match=bomb):
        decode(png_claiming(20_000, 20_000), 32, 40_000_000)


def test_formats_photos_do_not_use_are_not_decoded():
    """Pillow would open TIFF or EPS (Ghostscript!) from any bytes; only photo formats are tried."""
    with pytest.raises(ImageRejected, match="not an image"):
        decode(encode(Image.new("RGB", (8, 8)), "TIFF"), 8, MAX)
    with pytest.raises(ImageRejected, match="not an image"):
        decode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", 8, MAX)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "BMP", "WEBP"])
def test_the_content_decides_not_the_name(fmt):
    """A GIF or PNG saved as `.jpg`: decode never sees the name, only the bytes."""
    image = Image.new("RGB", (40, 40), (200, 30, 10))
    array = decode(encode(image, fmt), 16, MAX)
    assert array.shape == (16, 16, 3)
    assert abs(int(array[8, 8, 0]) - 200) <= 8 and abs(int(array[8, 8, 1]) - 30) <= 8


# EXIF orientation -> how the stored pixels must be turned to look upright (what viewers do)
ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_270,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_rotated_jpeg_gives_the_same_array_as_the_upright_image(orientation):
    upright = gradient((64, 48))
    inverse = {Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
               Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270}
    turn = ORIENTATIONS[orientation]
    stored = upright.transpose(inverse.get(turn, turn))  # what the camera saved, sideways
    exif = Image.Exif()
    exif[0x0112] = orientation
    rotated_jpeg = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    # The upright reference: the very pixels of that JPEG, turned by hand, stored losslessly.
    with Image.open(io.BytesIO(rotated_jpeg)) as raw:
        upright_png = encode(raw.convert("RGB").transpose(turn), "PNG")
    got = decode(rotated_jpeg, 32, MAX)
    np.testing.assert_array_equal(got, decode(upright_png, 32, MAX))
    assert got[2, 2].tolist()[0] > 200 and got[2, 2].tolist()[1] < 60  # the red corner is top-left again
    if orientation != 3:
        assert not np.array_equal(got, decode(encode(stored, "PNG"), 32, MAX))


def test_every_decoded_image_has_the_network_shape():
    array = decode(encode(Image.new("RGB", (1, 300), (9, 9, 9))), 32, MAX)
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8


def _decodes_or_is_rejected(data: bytes) -> None:
    try:
        array = decode(data, 32, 1_000_000)
    except ImageRejected as rejected:
        assert str(rejected)  # a reason, always
        return
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8


ORIENTATION_6 = Image.Exif()
ORIENTATION_6[0x0112] = 6
VALID = {
    "jpeg": encode(gradient((40, 30)), "JPEG", quality=80),
    "png": encode(gradient((40, 30)), "PNG"),
    "png-rgba": encode(gradient((24, 24)).convert("RGBA"), "PNG"),
    "gif": encode(gradient((24, 24)).convert("P"), "GIF"),
    "jpeg-exif": encode(gradient((40, 30)), "JPEG", exif=ORIENTATION_6.tobytes()),
}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_are_rejected(data):
    _decodes_or_is_rejected(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_bytes_behind_a_real_image_header_decode_or_are_rejected(tail):
    for valid in VALID.values():
        _decodes_or_is_rejected(valid[:64] + tail)


@FUZZ
@given(
    st.sampled_from(sorted(VALID)),
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=12),
    st.floats(0.05, 1.0),
)
def test_mutated_valid_images_decode_or_are_rejected(kind, flips, keep):
    data = bytearray(VALID[kind])
    for where, value in flips:
        data[int(where * len(data))] = value
    _decodes_or_is_rejected(bytes(data[: max(1, int(keep * len(data)))]))


def test_normalisation_matches_keras():
    from keras.applications.mobilenet_v2 import preprocess_input

    batch = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    expected = preprocess_input(batch.astype(np.float32))
    np.testing.assert_allclose(mobilenet_v2_normalise(batch), expected, atol=1e-6)


def _photo(size: tuple[int, int]) -> Image.Image:
    """Photo-like content: gradients, a few shapes, noise; a red top-left corner to check the orientation."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 255], axis=-1)
    pixels += np.random.default_rng(5).normal(0, 12, pixels.shape)
    pixels[height // 3: height // 2, width // 4: width // 2] = (30, 160, 40)
    pixels[: height // 8, : width // 8] = (250, 20, 20)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _full_decode(data: bytes, size: int) -> np.ndarray:
    """The reference: every pixel decoded, then turned upright and resized, as before draft decoding."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        upright = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(upright.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["baseline", "progressive", "exif-rotated", "cmyk"])
def test_a_large_jpeg_decoded_at_a_draft_scale_matches_full_decoding(kind, monkeypatch):
    photo = _photo((1600, 1200))
    options: dict = {"quality": 92}
    if kind == "progressive":
        options["progressive"] = True
    if kind == "exif-rotated":  # stored sideways, orientation 6: the red corner must come back top-left
        exif = Image.Exif()
        exif[0x0112] = 6
        photo, options["exif"] = photo.transpose(Image.Transpose.ROTATE_90), exif.tobytes()
    if kind == "cmyk":
        photo = photo.convert("CMYK")
    data = encode(photo, "JPEG", **options)
    from PIL import JpegImagePlugin

    scaled: list[tuple[int, int]] = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        found = draft(self, mode, size)
        scaled.append(self.size)
        return found

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    got = decode(data, 224, MAX)
    monkeypatch.undo()
    assert scaled and max(scaled[0]) < 1600 and min(scaled[0]) >= 224  # decoded at 1/2..1/8, never below 224
    reference = _full_decode(data, 224)
    assert got.shape == (224, 224, 3)
    assert np.abs(got.astype(float) - reference).mean() < 3.0  # of 255: the same picture
    if kind != "cmyk":
        assert got[5, 5, 0] > 200 and got[5, 5, 1] < 80  # upright
    with pytest.raises(ImageRejected, match="too large"):  # the guard reads the header's full size, as before
        decode(data, 224, 1600 * 1200 - 1)
