"""sensor_msgs/Image and CompressedImage ↔ (H, W, 3) uint8 RGB arrays.

A numpy conversion instead of cv_bridge: PyPI's cv-bridge is broken on numpy ≥ 2.3 and
OpenCV 5 (see README); this handles row padding (``step``) and the 8-bit colour encodings.

Untrusted input is bounded and quiet: every conversion takes ``max_pixels``, checked against the
size the message *declares* (Image's height × width, a PNG's IHDR, a JPEG's SOFn) before any
pixel is decoded, so a small compressed "decompression bomb" is refused in microseconds.
CompressedImage bytes are decoded by Pillow (PNG and JPEG only, chosen by the bytes, not the
``format`` string), which reports corrupt data as an error instead of printing to stderr as
OpenCV's libjpeg/libpng do; a bad image raises ``ImageConversionError``.
"""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np

#: encoding → (channels, channel order is BGR)
ENCODINGS: dict[str, tuple[int, bool]] = {
    "rgb8": (3, False),
    "bgr8": (3, True),
    "rgba8": (4, False),
    "bgra8": (4, True),
    "mono8": (1, False),
    "8uc1": (1, False),
    "8uc3": (3, True),  # OpenCV's default channel order
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a JPEG marker: 0xFF, any 0xFF fill bytes, then a code that is neither fill nor a stuffed 0x00
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xff])")
# start-of-frame markers, which carry the frame size (C4 DHT, C8 JPG and CC DAC are not SOFs)
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                       0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# markers without a length field: TEM, RST0-7, SOI
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


class ImageConversionError(ValueError):
    """An image message that cannot be turned into RGB; the message says why and the fix."""


def _bytes(data: Any) -> memoryview:
    return memoryview(data).cast("B")


def _png_size(data: memoryview) -> tuple[int, int] | None:
    # signature, then the IHDR chunk: length (4), type (4), width (4), height (4), ...
    if len(data) < 24 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return (height, width) if height > 0 and width > 0 else None


def _jpeg_size(data: memoryview) -> tuple[int, int] | None:
    # walk the marker segments up to the first SOFn (as libjpeg does, bytes between segments
    # are skipped); each step jumps over a whole segment, so this reads headers only
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while (match := _JPEG_MARKER.search(data, pos)) is not None:
        marker, pos = match.group(1)[0], match.end()
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA) or pos + 2 > len(data):  # EOI or scan data before any SOF
            return None
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _JPEG_SOF:
            if length < 7 or pos + 7 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, pos + 3)  # after precision
            return (height, width) if height > 0 and width > 0 else None  # 0: DNL, unsupported
        if length < 2:
            return None
        pos += length
    return None


def _compressed_kind_size(data: memoryview) -> tuple[str, tuple[int, int] | None] | None:
    if data[:8] == _PNG_SIGNATURE:
        return "png", _png_size(data)
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg", _jpeg_size(data)
    return None


def declared_size(msg: Any) -> tuple[int, int] | None:
    """The (height, width) an image message declares, without decoding any pixel.

    Args:
        msg: sensor_msgs/Image (its ``height`` and ``width`` fields) or CompressedImage (the
            PNG IHDR or JPEG SOFn header of its bytes, whatever its ``format`` string says).

    Returns:
        (height, width) as stored (before any EXIF rotation), or None when the message is
        neither a PNG nor a JPEG or its header cannot be read.
    """
    if hasattr(msg, "format"):
        found = _compressed_kind_size(_bytes(msg.data))
        return None if found is None else found[1]
    try:
        return int(msg.height), int(msg.width)
    except (AttributeError, TypeError, ValueError):
        return None


def _check_pixels(what: str, height: int, width: int, max_pixels: int | None) -> None:
    if max_pixels is not None and height * width > max_pixels:
        raise ImageConversionError(
            f"{what} declares {height}x{width} = {height * width} pixels, over the cap "
            f"max_pixels={max_pixels}; refused without decoding. Publish smaller images "
            f"(camera resolution, or image_proc's resize) or raise max_pixels if this size is "
            f"intended"
        )


def image_to_rgb(msg: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) → (H, W, 3) uint8 RGB, a new array.

    Args:
        msg: the Image message; ``data`` must hold exactly ``step * height`` bytes.
        max_pixels: refuse images whose height × width exceeds this (None: no cap).

    Raises:
        ImageConversionError: unsupported encoding, over ``max_pixels``, or inconsistent
            ``step`` / ``data`` length.
    """
    encoding = str(msg.encoding).lower()
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)} "
            f"(publish 8-bit colour or mono images, or convert them upstream)"
        )
    channels, bgr = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 1 or width < 1:
        raise ImageConversionError(f"image has no pixels ({height}x{width})")
    _check_pixels("Image", height, width, max_pixels)
    row = width * channels
    if step < row:
        raise ImageConversionError(
            f"image step {step} is smaller than width*channels = {row} for {encoding}"
        )
    data = np.frombuffer(_bytes(msg.data), dtype=np.uint8)
    if data.size != step * height:
        raise ImageConversionError(_length_mismatch(data.size, height, width, step, row,
                                                    encoding))
    img = data.reshape(height, step)[:, :row].reshape(height, width, channels)
    if channels == 1:
        return np.repeat(img, 3, axis=2)
    rgb = img[..., 2::-1] if bgr else img[..., :3]
    return np.ascontiguousarray(rgb)


def _length_mismatch(size: int, height: int, width: int, step: int, row: int,
                     encoding: str) -> str:
    expected = step * height
    diff = (f"{size - expected} bytes too long" if size > expected
            else f"{expected - size} bytes too short")
    if size % height == 0 and size // height >= row:
        cause = (f"the data is {height} rows of {size // height} bytes, so `step` is probably "
                 f"wrong: it must count each row's padding (step = {size // height})")
    else:
        cause = "a truncated or mis-sized message: check height, width, step and encoding"
    return (f"image data holds {size} bytes, expected step*height = {expected} "
            f"({height}x{width} {encoding}, step {step}): {diff}; likely {cause}")


def compressed_to_rgb(msg: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (PNG or JPEG bytes) → (H, W, 3) uint8 RGB, a new array.

    The bytes decide the codec (``format`` may be ``jpeg``, ``png``, ``bgr8; jpeg compressed
    bgr8``, ...). The declared size is checked before decoding; nothing is printed to stderr.
    Grey, palette, alpha and 16-bit images, and EXIF orientation, are handled as OpenCV's
    ``imdecode(..., IMREAD_COLOR)`` does (alpha dropped, 16 bits → high byte).

    Args:
        msg: the CompressedImage message.
        max_pixels: refuse images whose declared height × width exceeds this (None: no cap).

    Raises:
        ImageConversionError: not a PNG/JPEG, over ``max_pixels``, or corrupt/truncated data.
    """
    data = _bytes(msg.data)
    fmt = str(getattr(msg, "format", ""))
    found = _compressed_kind_size(data)
    if found is None or found[1] is None:
        what = "not a PNG or JPEG" if found is None else f"unreadable {found[0]} header"
        hint = ("compressedDepth images are not colour images; "
                if "compresseddepth" in fmt.lower() else "")
        raise ImageConversionError(
            f"could not decode CompressedImage (format {fmt!r}, {len(data)} bytes): {what}; "
            f"{hint}only jpeg and png are supported"
        )
    kind, (height, width) = found
    _check_pixels(f"CompressedImage ({kind}, format {fmt!r})", height, width, max_pixels)
    try:
        return _decode(kind, data, max_pixels)
    except ImageConversionError:
        raise
    except Exception as err:  # any decoder failure on untrusted bytes
        raise ImageConversionError(
            f"could not decode CompressedImage (format {fmt!r}, {len(data)} bytes, {kind} "
            f"{height}x{width}): {err or type(err).__name__} (corrupt or truncated data?)"
        ) from err


def _decode(kind: str, data: memoryview, max_pixels: int | None) -> np.ndarray:
    import io

    from PIL import JpegImagePlugin, PngImagePlugin

    # the plugin classes directly, not Image.open: no format guessing and no global
    # MAX_IMAGE_PIXELS warning/error (max_pixels is this module's bound); opening reads headers
    cls = PngImagePlugin.PngImageFile if kind == "png" else JpegImagePlugin.JpegImageFile
    with cls(io.BytesIO(data)) as im:
        width, height = im.size
        _check_pixels(f"CompressedImage ({kind})", height, width, max_pixels)
        im.load()
        rgb = _pil_to_rgb(im)
        orientation = _exif_orientation(im.info.get("exif"))
    return _orient(rgb, orientation)


def _pil_to_rgb(im: Any) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.array(im)
    if mode == "L":
        return np.repeat(np.asarray(im)[..., None], 3, axis=2)
    if mode.startswith("I"):  # 16-bit grey: the high byte, as OpenCV converts it
        grey = (np.asarray(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    im.info.pop("transparency", None)  # alpha is dropped anyway; avoids Pillow's warning
    return np.array(im.convert("RGB"))


def _exif_orientation(exif: bytes | None) -> int:
    # the Orientation tag (0x0112) of IFD0, read without Pillow's (warning-prone) EXIF parser
    if not exif:
        return 1
    tiff = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind, n = struct.unpack_from(order + "HHI", tiff, entry)
        if tag == 0x0112 and kind == 3 and n >= 1:
            (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    if orientation == 1:
        return rgb
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }[orientation](rgb)
    return np.ascontiguousarray(turned)


def to_rgb(msg: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """Either message type → (H, W, 3) uint8 RGB (CompressedImage has a ``format`` field).

    Args:
        msg: sensor_msgs/Image or CompressedImage (rclpy's or rosbags').
        max_pixels: refuse images whose declared height × width exceeds this, before
            decoding (None: no cap).

    Raises:
        ImageConversionError: the image cannot be converted; the message says why.
    """
    if hasattr(msg, "format"):
        return compressed_to_rgb(msg, max_pixels=max_pixels)
    return image_to_rgb(msg, max_pixels=max_pixels)


def resize_rgb(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to height × width (area interpolation when shrinking); no-op when equal."""
    if rgb.shape[:2] == (height, width):
        return rgb
    import cv2

    shrink = height < rgb.shape[0] or width < rgb.shape[1]
    return cv2.resize(rgb, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def fill_image_msg(msg: Any, rgb: np.ndarray) -> Any:
    """Fill an Image message (rclpy's) with an (H, W, 3) uint8 RGB array as rgb8; returns msg."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(rgb.shape[1]) * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg
