"""Image bytes → the model's input tensor: the pure logic of the preprocess actor (DESIGN §3).

The actor glue (lattice, PreprocessRequest decoding) lives elsewhere and calls
:func:`image_to_tensor` (or :func:`convert`); nothing here touches NATS.

The pipeline, and the decisions behind it:

* **Formats**: JPEG, PNG, GIF (first frame), BMP and WebP, recognised by their magic bytes before
  Pillow sees them; only the matching Pillow plugin is asked to open the body. Anything else is
  415 ``UnsupportedMediaType`` naming what the body looks like (PDF, TIFF, HEIF, JSON, …) and its
  first bytes. A body that starts like a supported format but does not decode (truncated,
  corrupt) is 400 ``RequestError``. An empty body is 400 ``RequestError``.
* **Decompression bombs**: the size in the image header is checked against ``max_pixels``
  (default :data:`DEFAULT_MAX_PIXELS`) before any pixel is decoded: 413 ``PayloadTooLarge``.
  Pillow's own ``DecompressionBombWarning``/``Error`` (global ``Image.MAX_IMAGE_PIXELS``, ~89 M)
  are turned into the same 413, never a printed warning or a crash; so the effective limit is
  ``min(max_pixels, Image.MAX_IMAGE_PIXELS)``.
* **EXIF orientation** is honoured (the same tag and transposes as ``ImageOps.exif_transpose``,
  which also reads an XMP orientation), but applied to the small resized image, where a
  transpose costs microseconds instead of milliseconds; resizing and transposing commute.
* **Colour**: everything becomes RGB. Grey (``1``, ``L``) is resized as one plane and broadcast
  to three channels. Palette and CMYK/YCbCr go through Pillow's conversion (CMYK naively: embedded
  ICC profiles are ignored). 16-bit grey (``I;16*``, ``I``) is scaled by 1/65535 as float, not
  clipped to 255 as Pillow's ``convert("L")`` would. **Transparency is composited on white**
  (``background``): transparent pixels often store black or junk colour that no viewer shows,
  and white is what a browser shows the user. Alpha images are resized premultiplied, so junk
  colour under transparent pixels never bleeds into the result.
* **Resize** straight to the model's H×W (no crop, aspect not kept, as the original project did)
  with Pillow's bilinear filter, which is a triangle filter widened when downscaling
  (antialiased), the filter the reference numbers in FACTS were computed with.
* **Speed** (chelsea 451×300 PNG: see the tests' timing): a JPEG is decoded at a reduced DCT scale
  (``Image.draft``) and other large images are box-reduced first (``reducing_gap``), the way
  Pillow's own ``thumbnail`` does it, both keeping at least ``reducing_gap``× the target
  resolution, so the final bilinear pass still sees enough detail. With the default 2.0 the
  tensor moves by a few hundredths (in normalised units) on large photos and not at all on images
  under twice the target size (chelsea is decoded in full); pass ``reducing_gap=None`` for exact
  full-resolution decoding. Normalisation is one multiply-add per channel with a precomputed
  scale ``1/(255·std)`` and offset ``−mean/std``, written straight into the output array.
* **Output**: the layout follows ``dimensions``: ``[1,3,H,W]`` (NCHW, the default) or
  ``[1,H,W,3]`` (NHWC, channels-last, e.g. TFLite), with or without the batch axis; a channel count
  of 1 gives luminance (ITU-R 601, Pillow's ``L``) normalised with the mean of ``mean``/``std``
  when three values are given. ``ValueF32``/``ValueF16``/``ValueF64`` are normalised floats.
  ``ValueU8`` is the raw 0–255 RGB pixels, not normalised: uint8 models (quantised TFLite, the
  Coral Edge TPU) fold scale and zero point into the model. Other value types are 400.
"""

from __future__ import annotations

import io
import string
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import ExifTags, Image

from mlcloud.errors import (
    MLCloudError,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
)
from mlcloud.imagemath import affine
from mlcloud.interfaces import PreprocessRequest, Tensor, ValueType

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_DIMENSIONS = (1, 3, 224, 224)
# 50 megapixels: a 48 MP phone photo (8000×6000) passes; decoded it is ~150 MB of RGB.
DEFAULT_MAX_PIXELS = 50_000_000
# Pillow's thumbnail() default: decode/reduce to no less than 2× the target, then filter.
DEFAULT_REDUCING_GAP = 2.0
WHITE = (255, 255, 255)

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_SUPPORTED_TEXT = "JPEG, PNG, GIF, BMP or WebP"

_FLOAT_TYPES = {ValueType.ValueF16, ValueType.ValueF32, ValueType.ValueF64}

# Orientation tag value → the transpose that makes the image upright (as ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {5, 6, 7, 8}

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


# --------------------------------------------------------------------------- sniffing


def sniff(data: bytes) -> str:
    """Name the kind of content ``data`` starts with: a Pillow format name for the supported
    formats (``"JPEG"``, ``"PNG"``, ``"GIF"``, ``"BMP"``, ``"WEBP"``), else a human-readable
    guess (``"PDF document"``, ``"TIFF image"``, ``"text"``, ``"unknown binary data"``…)."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    # "BM" alone is too weak (any text starting "BM…"); the DIB header size must be a known one.
    if head.startswith(b"BM") and len(head) >= 18 and int.from_bytes(head[14:18], "little") in (
        12, 16, 40, 52, 56, 64, 108, 124,
    ):
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return _describe_other(head)


def _describe_other(head: bytes) -> str:
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF image"
    if head.startswith(b"%PDF"):
        return "PDF document"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF image"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF/HEIC image"
        return "ISO media (MP4/QuickTime) file"
    if head.startswith(b"\x00\x00\x00\x0cjP  "):
        return "JPEG 2000 image"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        return "JPEG XL image"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ICO image"
    if head.startswith(b"8BPS"):
        return "Photoshop document"
    if head.startswith(b"qoif"):
        return "QOI image"
    if head[:4] == b"RIFF":
        return "RIFF container (not WebP)"
    if head.startswith(b"PK\x03\x04"):
        return "ZIP archive"
    if head.startswith(b"\x1f\x8b"):
        return "gzip data"
    try:
        text = head.decode("utf-8").lstrip("\ufeff \t\r\n")
    except UnicodeDecodeError:
        # A multi-byte character cut at byte 32 is still text.
        text = head[:28].decode("utf-8", errors="ignore")
        if not text or any(c not in string.printable for c in text if ord(c) < 128):
            return _binary(head)
    if text.startswith(("<svg", "<?xml")) and b"<svg" in head:
        return "SVG image"
    if text.startswith("<"):
        return "HTML/XML text"
    if text.startswith(("{", "[")):
        return "JSON text"
    if all(c in string.printable or ord(c) >= 128 for c in text):
        return "text"
    return _binary(head)


def _binary(head: bytes) -> str:
    if head.startswith(b"BM"):
        return "BMP-like data with an invalid header"
    return "unknown binary data"


def _hex_head(data: bytes, n: int = 16) -> str:
    return data[:n].hex(" ")


# --------------------------------------------------------------------------- decoding


def decode_image(
    data: bytes,
    *,
    target_size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    reducing_gap: float | None = DEFAULT_REDUCING_GAP,
) -> tuple[Image.Image, tuple[float, float, float, float] | None, int]:
    """Open and decode ``data``; return ``(image, box, orientation)``.

    ``image`` is loaded but not yet oriented; ``box`` is the region of it that corresponds to the
    whole original picture when a JPEG was decoded at reduced scale (pass it to ``resize``), and
    ``orientation`` the EXIF orientation (1–8) still to apply. ``target_size`` (W, H), upright,
    lets a JPEG be decoded at a reduced DCT scale of at least ``reducing_gap`` × that size.

    Raises RequestError (empty or corrupt body), UnsupportedMediaType (not a supported format),
    PayloadTooLarge (more than ``max_pixels`` pixels).
    """
    if not data:
        raise RequestError(f"empty request body: expected the bytes of a {_SUPPORTED_TEXT} image")
    kind = sniff(data)
    if kind not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(
            f"unsupported media type: the body ({len(data)} bytes) looks like {kind} "
            f"(first bytes: {_hex_head(data)}); expected a {_SUPPORTED_TEXT} image",
            detected=kind,
            head=_hex_head(data),
        )
    try:
        # Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that. The warning
        # must neither be printed per request nor escape as an exception when a process runs
        # with warnings as errors, so it is made an error here and turned into a 413 below.
        # catch_warnings swaps process-wide filters: should a concurrent thread's exit drop
        # ours, Pillow merely prints the warning and the pixel check below still refuses.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"image of {width}×{height} = {width * height:,} pixels exceeds the limit of "
                    f"{max_pixels:,} pixels (decompression bomb protection)",
                    width=width,
                    height=height,
                    max_pixels=max_pixels,
                )
            orientation = _orientation(image)
            box = None
            if kind == "JPEG" and target_size is not None and reducing_gap is not None:
                w, h = target_size
                if orientation in _SWAPS_AXES:
                    w, h = h, w
                drafted = image.draft(image.mode, (int(w * reducing_gap), int(h * reducing_gap)))
                if drafted is not None and image.size != (width, height):
                    box = drafted[1]
            image.load()
            if orientation == 1:
                # PNG and WebP may keep EXIF after the pixel data; it is known only after load.
                orientation = _orientation(image)
    except MLCloudError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(
            f"image refused as a possible decompression bomb: {exc}", max_pixels=max_pixels
        ) from exc
    except Exception as exc:
        # The decoders run on untrusted bytes and fail in many ways (OSError for truncation,
        # SyntaxError, ValueError for oversized PNG text chunks, struct.error, EOFError, …);
        # whatever the way, the body is at fault, so every one of them is a 400 with its reason.
        raise RequestError(
            f"corrupt or truncated {kind} image ({len(data)} bytes): "
            f"{type(exc).__name__}: {exc}",
            detected=kind,
        ) from exc
    return image, box, orientation


def _orientation(image: Image.Image) -> int:
    try:
        value = int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:
        # A broken EXIF block is common in the wild and is no reason to refuse the picture.
        return 1
    return value if value in _ORIENTATION else 1


# --------------------------------------------------------------------------- layout


def tensor_layout(dimensions: Sequence[int]) -> tuple[bool, int, int, int]:
    """``(channels_last, channels, height, width)`` for a model input of ``dimensions``.

    Accepted: ``[1, C, H, W]``, ``[1, H, W, C]``, ``[C, H, W]``, ``[H, W, C]`` with C in {1, 3}.
    Channels-first wins when both readings fit (``[1, 3, H, 3]``).
    """
    dims = [int(d) for d in dimensions]
    if len(dims) == 4:
        if dims[0] != 1:
            raise RequestError(
                f"preprocess makes one image, but the model input {dims} has batch size {dims[0]}"
            )
        dims = dims[1:]
    if len(dims) != 3 or any(d <= 0 for d in dims):
        raise RequestError(
            f"preprocess cannot make an image tensor of dimensions {list(dimensions)}: "
            "expected [1, C, H, W] or [1, H, W, C] with C 1 or 3"
        )
    if dims[0] in (1, 3):
        return False, dims[0], dims[1], dims[2]
    if dims[2] in (1, 3):
        return True, dims[2], dims[0], dims[1]
    raise RequestError(
        f"preprocess cannot make an image tensor of dimensions {list(dimensions)}: "
        "no axis of 1 or 3 channels"
    )


# --------------------------------------------------------------------------- pipeline


def image_to_array(
    data: bytes,
    dimensions: Sequence[int] = DEFAULT_DIMENSIONS,
    value_type: ValueType | str = ValueType.ValueF32,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = WHITE,
    reducing_gap: float | None = DEFAULT_REDUCING_GAP,
) -> np.ndarray:
    """Decode image bytes into an array of exactly ``dimensions`` and ``value_type``'s dtype.

    See the module docstring for formats, colour handling, layout and value types.
    Raises RequestError (400), UnsupportedMediaType (415), PayloadTooLarge (413).
    """
    try:
        value_type = ValueType(value_type)
    except ValueError:
        raise RequestError(f"unknown tensor value type {value_type!r}") from None
    if value_type not in _FLOAT_TYPES and value_type is not ValueType.ValueU8:
        raise RequestError(
            f"preprocess makes ValueF32, ValueF16, ValueF64 or ValueU8 tensors, not {value_type}"
        )
    channels_last, channels, height, width = tensor_layout(dimensions)

    image, box, orientation = decode_image(
        data, target_size=(width, height), max_pixels=max_pixels, reducing_gap=reducing_gap
    )
    small = _resize_upright(image, box, orientation, (width, height), reducing_gap)
    pixels, unit = _pixels(small, background, channels)

    if value_type is ValueType.ValueU8:
        if unit != 255.0:
            pixels = np.rint(pixels * 255.0).astype(np.uint8)
        out = _arrange(pixels, channels, channels_last, np.uint8)
    else:
        work = "<f8" if value_type is ValueType.ValueF64 else "<f4"
        scale, offset = affine(tuple(mean), tuple(std), channels, unit, work)
        out = _normalise(pixels, scale, offset, channels, channels_last, work)
        if value_type is ValueType.ValueF16:
            out = out.astype("<f2")
    return out.reshape([int(d) for d in dimensions])


def image_to_tensor(
    data: bytes,
    dimensions: Sequence[int] = DEFAULT_DIMENSIONS,
    value_type: ValueType | str = ValueType.ValueF32,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **options,
) -> Tensor:
    """:func:`image_to_array` as the wire ``Tensor`` (little-endian ``data``, one copy)."""
    array = image_to_array(data, dimensions, value_type, mean, std, **options)
    return Tensor(
        dimensions=[int(d) for d in dimensions],
        value_types=[ValueType(value_type)],
        data=array.tobytes(),
    )


def convert(request: PreprocessRequest, **options) -> Tensor:
    """The preprocess actor's operation: a ``PreprocessRequest`` → the model's input tensor.

    ``options`` are those of :func:`image_to_array` (``mean``, ``std``, ``max_pixels``, …),
    which the actor takes from its settings.
    """
    return image_to_tensor(request.image, request.dimensions, request.value_type, **options)


def _resize_upright(
    image: Image.Image,
    box: tuple[float, float, float, float] | None,
    orientation: int,
    size: tuple[int, int],
    reducing_gap: float | None,
) -> Image.Image:
    """Resize to ``size`` (W, H, upright) in a mode the filter handles, then orient."""
    image = _resizable(image)
    width, height = size
    if orientation in _SWAPS_AXES:
        width, height = height, width
    if image.size != (width, height) or box is not None:
        image = image.resize(
            (width, height), Image.Resampling.BILINEAR, box=box, reducing_gap=reducing_gap
        )
    if orientation != 1:
        image = image.transpose(_ORIENTATION[orientation])
    return image


def _resizable(image: Image.Image) -> Image.Image:
    """Bring ``image`` into RGB, L, premultiplied RGBa/La, or F (16-bit grey scaled to [0,1])."""
    mode = image.mode
    if mode in ("RGB", "L", "RGBa", "La"):
        return image
    if mode == "RGBA":
        return image.convert("RGBa")
    if mode == "LA":
        return image.convert("La")
    if mode in ("P", "PA"):
        if mode == "PA" or "transparency" in image.info:
            return image.convert("RGBA").convert("RGBa")
        return image.convert("RGB")
    if mode == "1":
        return image.convert("L")
    if mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(image).astype(np.float32)
        np.multiply(grey, np.float32(1.0 / 65535.0), out=grey)
        np.clip(grey, 0.0, 1.0, out=grey)
        return Image.fromarray(grey)
    try:
        return image.convert("RGB")  # CMYK, YCbCr, RGBX, LAB, HSV, …
    except (ValueError, OSError) as exc:
        raise UnsupportedMediaType(f"image mode {mode} cannot be converted to RGB: {exc}") from exc


def _pixels(
    image: Image.Image, background: tuple[int, int, int], channels: int
) -> tuple[np.ndarray, float]:
    """The resized image as ``(array, unit)``: uint8 H×W or H×W×3 (unit 255), or float32 H×W
    (unit 1); premultiplied alpha composited on ``background``; luminance when ``channels`` is 1."""
    if image.mode in ("RGBa", "La"):
        arr = np.asarray(image)
        colour, alpha = arr[..., :-1], arr[..., -1:]
        # colour is already colour·α: add background·(1−α). Grey on a non-grey background
        # becomes colour, so it is broadcast to three channels first.
        bg = np.asarray(background, dtype=np.float32)
        if image.mode == "La" and len(set(background)) == 1:
            bg = bg[:1]
        composite = colour + bg * ((255 - alpha.astype(np.float32)) * np.float32(1 / 255))
        arr = np.clip(np.rint(composite), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if image.mode == "F":
        return np.asarray(image), 1.0
    if channels == 1 and image.mode == "RGB":
        image = image.convert("L")
    return np.asarray(image), 255.0


def _planes(pixels: np.ndarray, channels: int) -> list[np.ndarray]:
    if pixels.ndim == 2:
        return [pixels] * channels
    return [pixels[:, :, c] for c in range(channels)]


def _normalise(
    pixels: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    channels: int,
    channels_last: bool,
    dtype: str,
) -> np.ndarray:
    height, width = pixels.shape[:2]
    if channels_last and pixels.ndim == 3 and channels == 3:
        # Interleaved in and out: one contiguous multiply-add over rows of W·3 values with the
        # per-channel constants tiled along the row (a length-3 inner loop is ~6× slower).
        out = np.empty((height, width * 3), dtype=dtype)
        rows = pixels.reshape(height, width * 3)
        np.multiply(rows, np.tile(scale, width), out=out)
        out += np.tile(offset, width)
        return out
    if channels_last:
        out = np.empty((height, width, channels), dtype=dtype)
        for c, plane in enumerate(_planes(pixels, channels)):
            np.multiply(plane, scale[c], out=out[:, :, c])
            out[:, :, c] += offset[c]
        return out
    out = np.empty((channels, height, width), dtype=dtype)
    for c, plane in enumerate(_planes(pixels, channels)):
        # Written straight into the output plane: no float copy of the image, no transpose.
        np.multiply(plane, scale[c], out=out[c])
        out[c] += offset[c]
    return out


def _arrange(pixels: np.ndarray, channels: int, channels_last: bool, dtype) -> np.ndarray:
    if channels_last:
        if pixels.ndim == 3:
            return pixels
        return np.repeat(pixels[:, :, None], channels, axis=2)
    if pixels.ndim == 2:
        return np.broadcast_to(pixels, (channels, *pixels.shape)).astype(dtype)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=dtype)
