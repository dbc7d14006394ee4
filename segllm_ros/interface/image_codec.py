"""Conversion between ``sensor_msgs/Image`` fields and NumPy arrays, without cv_bridge.

Why not cv_bridge: the PyPI ``cv-bridge`` package is ROS 1 code and does not work with ROS 2,
and the apt one ties the node to a system OpenCV. The conversion is small enough to own:
a zero-copy strided view over the message buffer followed by exactly one copy into a
C-contiguous RGB array (the channel reorder and the copy are the same pass).

Everything here works on plain attributes (``height``, ``width``, ``encoding``,
``is_bigendian``, ``step``, ``data``) so it is testable without ROS installed.
"""

from __future__ import annotations

import array
from array import array as byte_array_type
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENCODABLE_ENCODINGS",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "decode_compressed",
    "decode_image",
    "encode_compressed",
    "encode_image",
    "fill_image_msg",
    "image_from_msg",
    "set_image_fields",
]

SUPPORTED_ENCODINGS: tuple[str, ...] = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
"""Raw encodings :func:`decode_image` accepts (plus the aliases ``8UC1`` and ``8UC3``)."""

ENCODABLE_ENCODINGS: tuple[str, ...] = ("rgb8", "bgr8", "mono8")
"""Encodings :func:`encode_image` can produce."""

DEFAULT_MAX_PIXELS = 4096 * 4096
"""Largest ``height * width`` accepted by default; bounds memory use from a hostile header."""

# encoding -> (channels, cv2 conversion code to RGB, or None when the bytes already are RGB)
_DECODERS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    # OpenCV type names some drivers publish; 8UC3 follows OpenCV's BGR channel order.
    "8uc1": (1, cv2.COLOR_GRAY2RGB),
    "8uc3": (3, cv2.COLOR_BGR2RGB),
}

_COMPRESSED_FORMATS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


class ImageDecodeError(ValueError):
    """An image message (raw or compressed) could not be turned into an RGB array."""


def _as_byte_array(data: Any) -> np.ndarray:
    """View any message payload as a flat uint8 array, copying only when it is not a buffer."""
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        return data.reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        if isinstance(data, memoryview) and not data.c_contiguous:
            data = data.tobytes()
        return np.frombuffer(data, dtype=np.uint8)
    if data is None:
        raise ImageDecodeError("image data is missing (None)")
    # Last resort (e.g. a list of ints assigned by hand): one conversion.
    try:
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(
            f"image data of type {type(data).__name__} is not a byte buffer"
        ) from exc


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(f"{name} must be an integer, got {value!r}") from exc
    if number <= 0:
        raise ImageDecodeError(f"{name} must be positive, got {number}")
    return number


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: bytes | bytearray | memoryview | array.array | np.ndarray,
    is_bigendian: int | bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode raw ``sensor_msgs/Image`` fields into an ``HxWx3`` uint8 RGB array.

    The header is validated before anything is allocated, so a forged header (huge size,
    short data) fails fast. Row padding in ``step`` is skipped through a strided view; the
    result is one fresh C-contiguous copy that stays valid after the message is released.
    ``is_bigendian`` is accepted but has no effect: all supported encodings are 8-bit.
    """
    key = str(encoding).strip().lower()
    if key not in _DECODERS:
        raise ImageDecodeError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    channels, code = _DECODERS[key]
    del is_bigendian  # byte order is irrelevant for 8-bit channels

    height = _positive_int("height", height)
    width = _positive_int("width", width)
    if height * width > max_pixels:
        raise ImageDecodeError(f"image size {width}x{height} exceeds max_pixels={max_pixels}")
    try:
        step = int(step)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(f"step must be an integer, got {step!r}") from exc
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than width*channels = {width}*{channels} = {row_bytes} "
            f"for encoding {key!r}"
        )

    buf = _as_byte_array(data)
    needed = step * height
    if buf.size < needed:
        raise ImageDecodeError(
            f"data has {buf.size} bytes, expected step*height = {step}*{height} = {needed}"
        )

    # Zero-copy view: (height, step) rows, cropped to the pixel bytes, split into channels.
    rows = buf[:needed].reshape(height, step)[:, :row_bytes]
    view = rows if channels == 1 else rows.reshape(height, width, channels)

    if code is None:
        return np.array(view, dtype=np.uint8, order="C", copy=True)
    try:
        out = cv2.cvtColor(view, code)
    except cv2.error:
        # Some OpenCV builds refuse a padded/read-only view; fall back to NumPy (still one copy).
        out = _numpy_to_rgb(view, key)
    return out if out.flags.c_contiguous and out.flags.owndata else np.array(out, copy=True)


def _numpy_to_rgb(view: np.ndarray, key: str) -> np.ndarray:
    if view.ndim == 2:
        return np.repeat(view[:, :, None], 3, axis=2)
    if key in ("bgr8", "8uc3", "bgra8"):
        return np.ascontiguousarray(view[:, :, 2::-1])
    return np.ascontiguousarray(view[:, :, :3])


def _encode_array(array: np.ndarray, encoding: str) -> tuple[int, int, int, np.ndarray]:
    """``(height, width, step, pixels)`` with ``pixels`` C-contiguous in ``encoding``; no copy
    when the array already is."""
    key = str(encoding).strip().lower()
    if key not in ENCODABLE_ENCODINGS:
        raise ValueError(
            f"cannot encode to {encoding!r}; supported: {', '.join(ENCODABLE_ENCODINGS)}"
        )
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"array must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"array must be HxW or HxWx3, got shape {arr.shape}")
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"array must not be empty, got shape {arr.shape}")

    if key == "mono8":
        out = arr if arr.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)
        channels = 1
    else:
        out = arr if arr.ndim == 3 else cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_GRAY2RGB)
        if key == "bgr8":
            out = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2BGR)
        channels = 3
    return height, width, width * channels, np.ascontiguousarray(out)


def encode_image(array: np.ndarray, encoding: str) -> tuple[int, int, int, bytes]:
    """Encode an RGB ``HxWx3`` (or grey ``HxW``) uint8 array as ``(height, width, step, data)``.

    Used to publish overlays and masks. Rows are packed (``step == width * channels``).
    """
    height, width, step, pixels = _encode_array(array, encoding)
    return height, width, step, pixels.tobytes()


def decode_compressed(
    format: str,
    data: bytes | bytearray | memoryview | array.array | np.ndarray,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode ``sensor_msgs/CompressedImage`` data (JPEG/PNG/...) into ``HxWx3`` uint8 RGB.

    ``format`` is only used to reject ``compressedDepth`` payloads, which are not colour
    images; OpenCV detects the codec from the bytes. ``max_pixels`` is checked after decoding
    (OpenCV's own ``OPENCV_IO_MAX_IMAGE_PIXELS`` bounds the decode itself).
    """
    if "compresseddepth" in str(format).replace(" ", "").lower():
        raise ImageDecodeError(f"compressed depth images are not supported (format {format!r})")
    buf = _as_byte_array(data)
    if buf.size == 0:
        raise ImageDecodeError(f"compressed image data is empty (format {format!r})")
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageDecodeError(
            f"could not decode {buf.size} bytes of compressed image (format {format!r}): {exc}"
        ) from exc
    if bgr is None:
        raise ImageDecodeError(
            f"could not decode {buf.size} bytes as a compressed image (format {format!r}); "
            "the data is corrupt or not JPEG/PNG"
        )
    height, width = bgr.shape[:2]
    if height * width > max_pixels:
        raise ImageDecodeError(f"image size {width}x{height} exceeds max_pixels={max_pixels}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Compress an RGB (or grey) uint8 image to JPEG or PNG bytes, for tests and the demo."""
    ext = _COMPRESSED_FORMATS.get(str(fmt).strip().lower())
    if ext is None:
        raise ValueError(f"unsupported compressed format {fmt!r}; supported: jpeg, png")
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    img = arr if arr.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, encoded = cv2.imencode(ext, img, params)
    if not ok:
        raise ValueError(f"OpenCV failed to encode the image as {fmt!r}")
    return encoded.tobytes()


def image_from_msg(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode any object with ``sensor_msgs/Image`` attributes into ``HxWx3`` uint8 RGB."""
    return decode_image(
        msg.encoding,
        msg.height,
        msg.width,
        msg.step,
        msg.data,
        is_bigendian=getattr(msg, "is_bigendian", False),
        max_pixels=max_pixels,
    )


def fill_image_msg(msg: Any, array: np.ndarray, encoding: str = "rgb8") -> Any:
    """Fill the image fields of ``msg`` (duck-typed ``sensor_msgs/Image``) and return it.

    The header is left alone so the caller can stamp it with the source frame's time. The
    pixels are copied once, straight into the ``array('B')`` that ROS message ``data``
    fields hold (assigning ``bytes`` would make the message setter copy them again).
    """
    height, width, step, pixels = _encode_array(array, encoding)
    data = byte_array_type("B")
    data.frombytes(pixels)
    return set_image_fields(msg, height, width, encoding, step, data)


def set_image_fields(
    msg: Any, height: int, width: int, encoding: str, step: int, data: array.array
) -> Any:
    """Set the pixel fields of a (duck-typed) ``sensor_msgs/Image``; header left alone."""
    msg.height = height
    msg.width = width
    msg.encoding = str(encoding).strip().lower()
    msg.is_bigendian = 0
    msg.step = step
    msg.data = data
    return msg
