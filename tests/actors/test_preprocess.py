"""The preprocess actor's logic: image bytes → model input tensor (actors/preprocess/imaging.py).

Every expected tensor comes from a straightforward reference: Pillow decode, ``convert("RGB")``
(after compositing on white when there is alpha), ``resize`` bilinear, then numpy
``(x/255 - mean)/std`` and a transpose. Images are made in memory with Pillow.
"""

from __future__ import annotations

import io
import statistics
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from mlcloud.errors import PayloadTooLarge, RequestError, UnsupportedMediaType
from mlcloud.interfaces import PreprocessRequest, Tensor, ValueType

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
WHITE_NORMALISED = (1.0 - MEAN) / STD
EXACT = 1e-5  # same pixels, different float evaluation order
ROUNDING = 2.5 / 255 / 0.224  # up to two 8-bit levels apart (premultiplied alpha), normalised


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def reference(image: Image.Image, size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """NCHW float32 the plain way, from an already decoded (and oriented) image."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    rgb = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    x = np.asarray(rgb).astype(np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1)[None]


def solid(colour: np.ndarray, height: int, width: int) -> np.ndarray:
    """A CHW block of one normalised colour."""
    return np.broadcast_to(np.asarray(colour)[:, None, None], (3, height, width))


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def photo(chelsea_png: bytes) -> Image.Image:
    """A small real photo (chelsea at 160×106) for the format and mode matrix."""
    return decoded(chelsea_png).resize((160, 106), Image.Resampling.BILINEAR)


# --------------------------------------------------------------------------- chelsea


def test_chelsea_png_matches_reference(imaging, chelsea_png):
    tensor = imaging.image_to_tensor(chelsea_png)
    assert isinstance(tensor, Tensor)
    assert tensor.dimensions == [1, 3, 224, 224]
    assert tensor.value_types == [ValueType.ValueF32]
    assert len(tensor.data) == 4 * 3 * 224 * 224
    array = tensor.to_numpy()
    np.testing.assert_allclose(array, reference(decoded(chelsea_png)), atol=EXACT)
    # The numbers look like a normalised photo: within the range normalisation allows, centred
    # near zero, spread about one.
    low, high = (0 - MEAN) / STD, (1 - MEAN) / STD
    for c in range(3):
        assert low[c] - EXACT <= array[0, c].min() and array[0, c].max() <= high[c] + EXACT
    assert abs(float(array.mean())) < 0.5
    assert 0.4 < float(array.std()) < 1.5


def test_chelsea_jpeg_matches_reference(imaging, chelsea_jpeg):
    array = imaging.image_to_array(chelsea_jpeg)
    assert array.dtype == np.float32 and array.shape == (1, 3, 224, 224)
    # 451×300 is under twice the target size: decoded in full, so exactly the reference.
    np.testing.assert_allclose(array, reference(decoded(chelsea_jpeg)), atol=EXACT)


def test_chelsea_timing(imaging, chelsea_jpeg, chelsea_png, capsys):
    """Per-image cost (report only; the bound is loose because CI machines are noisy)."""
    timings = {}
    for name, data in (("jpeg", chelsea_jpeg), ("png", chelsea_png)):
        imaging.image_to_tensor(data)
        runs = []
        for _ in range(15):
            start = time.perf_counter()
            imaging.image_to_tensor(data)
            runs.append(time.perf_counter() - start)
        timings[name] = statistics.median(runs) * 1e3
    with capsys.disabled():
        print(
            f"\nchelsea image_to_tensor median: jpeg {timings['jpeg']:.2f} ms, "
            f"png {timings['png']:.2f} ms"
        )
    assert timings["jpeg"] < 100


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "fmt, params",
    [
        ("JPEG", {"quality": 90}),
        ("PNG", {}),
        ("GIF", {}),
        ("BMP", {}),
        ("WEBP", {"lossless": True}),
        ("WEBP", {"quality": 80}),
    ],
)
def test_every_format_matches_reference(imaging, photo, fmt, params):
    data = encode(photo, fmt, **params)
    expected = reference(decoded(data))
    np.testing.assert_allclose(imaging.image_to_array(data), expected, atol=EXACT)


def test_gif_uses_the_first_frame(imaging):
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert getattr(decoded(data), "n_frames", 1) == 2
    array = imaging.image_to_array(data, [1, 3, 8, 8])
    red = (np.array([1, 0, 0], np.float32) - MEAN) / STD
    np.testing.assert_allclose(array[0, :, 4, 4], red, atol=EXACT)


def test_sniffing_names_supported_formats(imaging, photo):
    for fmt in imaging.SUPPORTED_FORMATS:
        assert imaging.sniff(encode(photo, fmt)) == fmt


# --------------------------------------------------------------------------- modes


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGB", "CMYK", "YCbCr"])
def test_opaque_modes_match_reference(imaging, photo, mode):
    image = photo.convert(mode)
    fmt = "JPEG" if mode in ("CMYK", "YCbCr") else "PNG"
    data = encode(image, fmt)
    expected = reference(decoded(data))
    np.testing.assert_allclose(imaging.image_to_array(data), expected, atol=EXACT)


@pytest.mark.parametrize(
    "mode, fmt", [("RGBA", "PNG"), ("LA", "PNG"), ("RGBA", "WEBP"), ("P", "PNG")]
)
def test_alpha_modes_composite_on_white(imaging, photo, mode, fmt):
    rgba = photo.convert("RGBA")
    # Alpha ramps from transparent (left) to opaque (right); a band of pure transparency.
    alpha = np.tile(np.linspace(0, 255, rgba.width).astype(np.uint8), (rgba.height, 1))
    alpha[:, :20] = 0
    rgba.putalpha(Image.fromarray(alpha))
    if mode == "P":
        # A palette with per-entry alpha (PNG tRNS), as quantisers write them.
        image = rgba.quantize(256, method=Image.Quantize.FASTOCTREE)
    else:
        image = rgba.convert(mode)
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(image, fmt, **params)
    array = imaging.image_to_array(data)
    expected = reference(decoded(data))
    assert np.abs(array - expected).max() < ROUNDING
    assert np.abs(array - expected).mean() < 0.005
    # The fully transparent band is white, whatever colour it stores.
    np.testing.assert_allclose(array[0, :, :, :10], solid(WHITE_NORMALISED, 224, 10), atol=1e-4)


def test_transparent_pixels_hide_their_colour(imaging):
    """Junk colour under alpha 0 must neither show nor bleed into its neighbours."""
    arr = np.zeros((40, 40, 4), np.uint8)
    arr[..., 0] = 255  # red everywhere …
    arr[:, 20:, 3] = 255  # … but only the right half is opaque
    arr[:, 20:, :3] = (0, 0, 255)  # and blue there
    data = encode(Image.fromarray(arr, "RGBA"), "PNG")
    array = imaging.image_to_array(data, [1, 3, 40, 40])
    blue = (np.array([0, 0, 1], np.float32) - MEAN) / STD
    np.testing.assert_allclose(array[0, :, :, :19], solid(WHITE_NORMALISED, 40, 19), atol=1e-4)
    np.testing.assert_allclose(array[0, :, :, 21:], solid(blue, 40, 19), atol=1e-4)
    # At the edge, red never appears: the red channel stays between blue's and white's.
    assert array[0, 0].max() <= WHITE_NORMALISED[0] + 1e-4


def test_palette_transparency_composites_on_white(imaging):
    image = Image.new("P", (16, 16), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (8, 0, 16, 16))
    data = encode(image, "GIF", transparency=0)
    array = imaging.image_to_array(data, [1, 3, 16, 16])
    green = (np.array([0, 1, 0], np.float32) - MEAN) / STD
    np.testing.assert_allclose(array[0, :, :, 2:3], solid(WHITE_NORMALISED, 16, 1), atol=1e-4)
    np.testing.assert_allclose(array[0, :, :, 13:14], solid(green, 16, 1), atol=1e-4)


def test_background_is_configurable(imaging):
    data = encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG")
    array = imaging.image_to_array(data, [1, 3, 8, 8], background=(0, 0, 0))
    np.testing.assert_allclose(array[0, :, 3, 3], -MEAN / STD, atol=1e-5)


def test_sixteen_bit_grey_is_scaled_not_clipped(imaging):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    image = Image.fromarray(ramp)
    data = encode(image, "PNG")
    assert decoded(data).mode.startswith("I")
    array = imaging.image_to_array(data, [1, 3, 48, 64])
    expected_grey = ramp.astype(np.float32) / 65535.0  # same size: no resampling
    expected = (expected_grey[None] - MEAN[:, None, None]) / STD[:, None, None]
    np.testing.assert_allclose(array[0], expected, atol=1e-5)
    # Mid-grey in 16 bits is mid-grey, not white (Pillow's convert("L") would clip it to 255).
    mid = encode(Image.fromarray(np.full((8, 8), 32768, np.uint16)), "PNG")
    np.testing.assert_allclose(
        imaging.image_to_array(mid, [1, 3, 8, 8])[0, :, 0, 0],
        (32768 / 65535 - MEAN) / STD,
        atol=1e-5,
    )


def test_sixteen_bit_grey_resized(imaging):
    ramp = np.tile(np.linspace(0, 65535, 300).astype(np.uint16), (200, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    grey = Image.fromarray(ramp.astype(np.float32) / 65535.0)
    grey = grey.resize((224, 224), Image.Resampling.BILINEAR)
    expected = (np.asarray(grey)[None] - MEAN[:, None, None]) / STD[:, None, None]
    np.testing.assert_allclose(imaging.image_to_array(data)[0], expected, atol=1e-4)
    u8 = imaging.image_to_array(data, [1, 224, 224, 3], "ValueU8")
    assert u8.dtype == np.uint8 and u8[0, 0, 0, 0] == 0 and u8[0, 0, -1, 0] == 255


# --------------------------------------------------------------------------- EXIF orientation


def _halves(width: int = 64, height: int = 32) -> Image.Image:
    """Left half red, right half blue, top-left corner green."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2 :] = (0, 0, 255)
    arr[: height // 4, : width // 8] = (0, 255, 0)
    return Image.fromarray(arr)


def _with_orientation(image: Image.Image, fmt: str, orientation: int, **params) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, fmt, exif=exif.tobytes(), **params)


def test_exif_orientation_rotates(imaging):
    # Orientation 6: the camera was turned; the viewer rotates 90° clockwise. Stored landscape
    # (left red, right blue) becomes portrait with red on top, blue below.
    data = _with_orientation(_halves(), "JPEG", 6, quality=95)
    array = imaging.image_to_array(data, [1, 3, 64, 32])
    red_channel = array[0, 0]
    assert red_channel[:24].mean() > 1.5  # top: red
    assert red_channel[40:].mean() < -1.5  # bottom: blue
    # Without orientation the same image gives red on the left, not on top.
    plain = imaging.image_to_array(encode(_halves(), "JPEG", quality=95), [1, 3, 64, 32])
    assert plain[0, 0, :, :12].mean() > 1.5 and plain[0, 0, :, 20:].mean() < -1.5


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_orientation_matches_exif_transpose(imaging, orientation, fmt):
    params = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    data = _with_orientation(_halves(96, 48), fmt, orientation, **params)
    upright = ImageOps.exif_transpose(decoded(data))
    array = imaging.image_to_array(data, [1, 3, 40, 56])
    expected = reference(upright, (56, 40))
    # Orienting after resizing instead of before moves values by float rounding only.
    np.testing.assert_allclose(array, expected, atol=1e-4)


def test_orientation_with_reduced_jpeg_decoding(imaging):
    big = _halves(3200, 1600)
    data = _with_orientation(big, "JPEG", 8, quality=95)  # 8: rotate 90° counter-clockwise
    image, box, orientation = imaging.decode_image(data, target_size=(224, 224))
    assert orientation == 8 and box is not None and image.size == (1600, 800)  # drafted to 1/2
    array = imaging.image_to_array(data)
    expected = reference(ImageOps.exif_transpose(decoded(data)))
    assert np.abs(array - expected).mean() < 0.02
    # Counter-clockwise: the stored right half (blue) is on top, the left (red) below.
    assert array[0, 0, :100].mean() < -1.5 and array[0, 0, 124:].mean() > 1.5


# --------------------------------------------------------------------------- speed shortcuts


def test_reduced_jpeg_decoding_keeps_values_close(imaging, chelsea_png):
    big = decoded(chelsea_png).resize((1804, 1200), Image.Resampling.LANCZOS)
    data = encode(big, "JPEG", quality=92)
    fast = imaging.image_to_array(data)
    exact = imaging.image_to_array(data, reducing_gap=None)
    np.testing.assert_allclose(exact, reference(decoded(data)), atol=EXACT)
    difference = np.abs(fast - exact)
    # Measured: max ~0.05, mean ~0.006 (normalised units; 0.018 is one 8-bit level).
    assert difference.max() < 0.15 and difference.mean() < 0.01


def test_large_png_is_box_reduced_first_and_stays_close(imaging, chelsea_png):
    big = decoded(chelsea_png).resize((1353, 900), Image.Resampling.LANCZOS)
    data = encode(big, "PNG", compress_level=1)
    exact = imaging.image_to_array(data, reducing_gap=None)
    difference = np.abs(imaging.image_to_array(data) - exact)
    assert difference.max() < 0.15 and difference.mean() < 0.01


# --------------------------------------------------------------------------- layouts and types


def test_channels_last_is_the_transpose(imaging, chelsea_jpeg):
    nchw = imaging.image_to_array(chelsea_jpeg, [1, 3, 224, 224])
    nhwc = imaging.image_to_array(chelsea_jpeg, [1, 224, 224, 3])
    assert nhwc.shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))
    chw = imaging.image_to_array(chelsea_jpeg, [3, 224, 224])
    np.testing.assert_array_equal(chw, nchw[0])
    hwc = imaging.image_to_array(chelsea_jpeg, [224, 224, 3])
    np.testing.assert_array_equal(hwc, nhwc[0])


def test_grey_input_channels_last(imaging, photo):
    data = encode(photo.convert("L"), "PNG")
    nhwc = imaging.image_to_array(data, [1, 224, 224, 3])
    np.testing.assert_allclose(nhwc, reference(decoded(data)).transpose(0, 2, 3, 1), atol=EXACT)


def test_non_square_input(imaging, chelsea_jpeg):
    array = imaging.image_to_array(chelsea_jpeg, [1, 3, 200, 300])
    assert array.shape == (1, 3, 200, 300)
    np.testing.assert_allclose(array, reference(decoded(chelsea_jpeg), (300, 200)), atol=EXACT)


def test_one_channel_model_gets_luminance(imaging, chelsea_jpeg):
    array = imaging.image_to_array(chelsea_jpeg, [1, 1, 224, 224])
    rgb = decoded(chelsea_jpeg).resize((224, 224), Image.Resampling.BILINEAR)
    grey = rgb.convert("L")
    expected = (np.asarray(grey).astype(np.float32) / 255 - MEAN.mean()) / STD.mean()
    np.testing.assert_allclose(array[0, 0], expected, atol=EXACT)


@pytest.mark.parametrize("dims", [[1, 3, 224, 224], [1, 224, 224, 3]])
def test_u8_is_raw_pixels(imaging, chelsea_jpeg, dims):
    tensor = imaging.image_to_tensor(chelsea_jpeg, dims, ValueType.ValueU8)
    assert tensor.value_types == [ValueType.ValueU8] and len(tensor.data) == 3 * 224 * 224
    pixels = np.asarray(decoded(chelsea_jpeg).resize((224, 224), Image.Resampling.BILINEAR))
    expected = pixels[None] if dims[-1] == 3 else pixels.transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(tensor.to_numpy(), expected)


@pytest.mark.parametrize("value_type, dtype", [("ValueF16", "<f2"), ("ValueF64", "<f8")])
def test_other_float_types(imaging, chelsea_jpeg, value_type, dtype):
    array = imaging.image_to_array(chelsea_jpeg, value_type=value_type)
    assert array.dtype == np.dtype(dtype)
    f32 = imaging.image_to_array(chelsea_jpeg)
    np.testing.assert_allclose(array.astype(np.float32), f32, atol=2e-3)


def test_custom_mean_and_std(imaging, chelsea_jpeg):
    array = imaging.image_to_array(chelsea_jpeg, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    pixels = np.asarray(decoded(chelsea_jpeg).resize((224, 224), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(array[0], pixels.transpose(2, 0, 1) / 127.5 - 1.0, atol=EXACT)


@pytest.mark.parametrize(
    "dims", [[2, 3, 224, 224], [1, 4, 224, 224], [1, 3, 0, 224], [224, 224], [1, 224, 224, 5]]
)
def test_unusable_dimensions_are_400(imaging, chelsea_jpeg, dims):
    with pytest.raises(RequestError) as err:
        imaging.image_to_array(chelsea_jpeg, dims)
    assert err.value.http_status == 400 and str(dims[0]) in err.value.message


@pytest.mark.parametrize("value_type", ["ValueS32", "ValueBool", "NotAType"])
def test_unusable_value_types_are_400(imaging, chelsea_jpeg, value_type):
    with pytest.raises(RequestError) as err:
        imaging.image_to_array(chelsea_jpeg, value_type=value_type)
    assert err.value.http_status == 400 and value_type in err.value.message


def test_convert_takes_a_preprocess_request(imaging, chelsea_jpeg):
    request = PreprocessRequest(image=chelsea_jpeg, dimensions=[1, 224, 224, 3])
    tensor = imaging.convert(request)
    assert tensor.dimensions == [1, 224, 224, 3] and tensor.value_types == [ValueType.ValueF32]


# --------------------------------------------------------------------------- bad bodies


def test_empty_body_is_400(imaging):
    with pytest.raises(RequestError) as err:
        imaging.image_to_tensor(b"")
    assert type(err.value) is RequestError and err.value.http_status == 400
    assert "empty" in err.value.message


@pytest.mark.parametrize(
    "body, named",
    [
        (b"hello, this is not an image", "text"),
        (b'{"dimensions": [1, 4]}', "JSON"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b"\x00\x01\x02\x03\xfe\xfd\xfc\xfb" * 8, "unknown binary"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "SVG"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00", "HEIF"),
        (b"BMW is a car, not a bitmap", "text"),
    ],
)
def test_garbage_is_415_naming_what_it_got(imaging, body, named):
    with pytest.raises(UnsupportedMediaType) as err:
        imaging.image_to_tensor(body)
    assert err.value.http_status == 415
    assert named in err.value.message
    assert body[:4].hex(" ") in err.value.message
    assert err.value.details["detected"]


def test_unsupported_image_format_is_415(imaging, photo):
    with pytest.raises(UnsupportedMediaType, match="TIFF"):
        imaging.image_to_tensor(encode(photo, "TIFF"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP"])
def test_truncated_image_is_400(imaging, photo, fmt):
    data = encode(photo, fmt)
    with pytest.raises(RequestError) as err:
        imaging.image_to_tensor(data[: len(data) // 2])
    assert type(err.value) is RequestError and err.value.http_status == 400
    assert fmt in err.value.message


def test_magic_then_garbage_is_400(imaging):
    bodies = (b"\xff\xd8\xff\xe0" + b"\x00" * 40, b"\x89PNG\r\n\x1a\n" + b"junk" * 10, b"GIF89a!!")
    for body in bodies:
        with pytest.raises(RequestError) as err:
            imaging.image_to_tensor(body)
        assert type(err.value) is RequestError and "corrupt" in err.value.message


# --------------------------------------------------------------------------- decompression bombs


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width``×``height`` pixels: signature, IHDR, a tiny IDAT, IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _gif_header_only(width: int, height: int) -> bytes:
    """A GIF whose logical screen is ``width``×``height``, with one 1×1 frame."""
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00"
    return b"GIF89a" + screen + frame + b";"


@pytest.mark.parametrize(
    "body",
    [
        _png_header_only(100_000, 100_000),  # beyond twice Pillow's limit: its Error
        _png_header_only(10_000, 10_000),  # beyond Pillow's limit: its Warning
        _png_header_only(8_000, 7_000),  # under Pillow's, over ours
        _gif_header_only(65_535, 65_535),
    ],
)
def test_decompression_bomb_is_413_quickly_and_silently(imaging, body):
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PayloadTooLarge) as err:
            imaging.image_to_tensor(body)
    assert time.perf_counter() - start < 0.5
    assert err.value.http_status == 413
    assert "pixels" in err.value.message
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_pixel_limit_is_configurable(imaging, photo):
    data = encode(photo.resize((40, 40)), "PNG")
    with pytest.raises(PayloadTooLarge, match="1,000 pixels"):
        imaging.image_to_tensor(data, max_pixels=1000)
    assert imaging.image_to_tensor(data, max_pixels=1600).dimensions == [1, 3, 224, 224]
