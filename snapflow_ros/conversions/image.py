"""sensor_msgs/Image and CompressedImage ↔ (H, W, 3) uint8 RGB arrays.

A numpy conversion instead of cv_bridge: PyPI's cv-bridge is broken on numpy ≥ 2.3 and
OpenCV 5 (see README); this handles row padding (``step``) and the 8-bit colour encodings.
"""

from __future__ import annotations

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


class ImageConversionError(ValueError):
    """An image message that cannot be turned into RGB; the message says why and the fix."""


def _bytes(data: Any) -> np.ndarray:
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) → (H, W, 3) uint8 RGB, a new array."""
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
    row = width * channels
    if step < row:
        raise ImageConversionError(
            f"image step {step} is smaller than width*channels = {row} for {encoding}"
        )
    data = _bytes(msg.data)
    if data.size < step * height:
        raise ImageConversionError(
            f"image data holds {data.size} bytes, expected step*height = {step * height} "
            f"({height}x{width} {encoding}, step {step})"
        )
    img = data[: step * height].reshape(height, step)[:, :row].reshape(height, width, channels)
    if channels == 1:
        return np.repeat(img, 3, axis=2)
    rgb = img[..., 2::-1] if bgr else img[..., :3]
    return np.ascontiguousarray(rgb)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) → (H, W, 3) uint8 RGB."""
    import cv2

    data = _bytes(msg.data)
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if decoded is None:
        raise ImageConversionError(
            f"could not decode CompressedImage (format {getattr(msg, 'format', '')!r}, "
            f"{data.size} bytes): only jpeg and png are supported"
        )
    return np.ascontiguousarray(decoded[..., ::-1])


def to_rgb(msg: Any) -> np.ndarray:
    """Either message type → (H, W, 3) uint8 RGB (CompressedImage has a ``format`` field)."""
    return compressed_to_rgb(msg) if hasattr(msg, "format") else image_to_rgb(msg)


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
