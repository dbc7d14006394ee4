"""Tests for the cv_bridge-free image codec: correct RGB for every encoding, hostile headers."""

from __future__ import annotations

import array
import tracemalloc

import numpy as np
import pytest

from segllm_ros.interface.image_codec import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
    fill_image_msg,
    image_from_msg,
)

H, W = 5, 7


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def raw_pixels(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Build the HxWxC pixel layout a publisher would send for ``encoding``."""
    alpha = np.full((*rgb.shape[:2], 1), 77, dtype=np.uint8)
    if encoding == "rgb8":
        return rgb
    if encoding in ("bgr8", "8UC3"):
        return rgb[..., ::-1]
    if encoding == "rgba8":
        return np.concatenate([rgb, alpha], axis=2)
    if encoding == "bgra8":
        return np.concatenate([rgb[..., ::-1], alpha], axis=2)
    if encoding in ("mono8", "8UC1"):
        return rgb[..., :1]
    raise AssertionError(encoding)


def expected_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    if encoding in ("mono8", "8UC1"):
        return np.repeat(rgb[..., :1], 3, axis=2)
    return rgb


def pack(pixels: np.ndarray, padding: int = 0, fill: int = 0xAB) -> tuple[int, bytes]:
    """Rows of ``pixels`` followed by ``padding`` bytes of ``fill``; returns (step, data)."""
    h, w, c = pixels.shape
    rows = np.full((h, w * c + padding), fill, dtype=np.uint8)
    rows[:, : w * c] = pixels.reshape(h, w * c)
    return w * c + padding, rows.tobytes()


@pytest.mark.parametrize("encoding", [*SUPPORTED_ENCODINGS, "8UC1", "8UC3"])
def test_each_encoding_decodes_to_rgb(rgb: np.ndarray, encoding: str) -> None:
    step, data = pack(raw_pixels(rgb, encoding))
    out = decode_image(encoding, H, W, step, data)
    assert out.shape == (H, W, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected_rgb(rgb, encoding))


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_step_padding_is_skipped(rgb: np.ndarray, encoding: str) -> None:
    step, data = pack(raw_pixels(rgb, encoding), padding=7, fill=0xCD)
    out = decode_image(encoding, H, W, step, data)
    np.testing.assert_array_equal(out, expected_rgb(rgb, encoding))


def test_padding_garbage_not_in_output() -> None:
    pixels = np.zeros((H, W, 3), dtype=np.uint8)
    step, data = pack(pixels, padding=7, fill=0xFF)
    out = decode_image("bgr8", H, W, step, data)
    assert not (out == 0xFF).any()


def test_trailing_bytes_after_last_row_are_ignored(rgb: np.ndarray) -> None:
    step, data = pack(rgb)
    out = decode_image("rgb8", H, W, step, data + b"\x01" * 13)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("flag", [0, 1, True, False])
def test_bigendian_flag_accepted(rgb: np.ndarray, flag: int | bool) -> None:
    step, data = pack(raw_pixels(rgb, "bgr8"))
    out = decode_image("bgr8", H, W, step, data, is_bigendian=flag)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize(
    "kind", ["bytes", "bytearray", "memoryview", "array", "ndarray", "ndarray2d"]
)
def test_buffer_types(rgb: np.ndarray, kind: str) -> None:
    step, data = pack(raw_pixels(rgb, "bgr8"))
    payload = {
        "bytes": lambda: data,
        "bytearray": lambda: bytearray(data),
        "memoryview": lambda: memoryview(data),
        "array": lambda: array.array("B", data),
        "ndarray": lambda: np.frombuffer(data, dtype=np.uint8),
        "ndarray2d": lambda: np.frombuffer(data, dtype=np.uint8).reshape(H, step),
    }[kind]()
    np.testing.assert_array_equal(decode_image("bgr8", H, W, step, payload), rgb)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_output_owns_its_memory(rgb: np.ndarray, encoding: str) -> None:
    step, data = pack(raw_pixels(rgb, encoding), padding=3)
    buf = bytearray(data)
    out = decode_image(encoding, H, W, step, buf)
    before = out.copy()
    buf[:] = b"\x00" * len(buf)
    np.testing.assert_array_equal(out, before)
    assert out.base is None or not isinstance(out.base, (bytes, bytearray, memoryview))
    out[0, 0, 0] ^= 0xFF  # writeable


def test_unknown_encoding_message() -> None:
    with pytest.raises(ImageDecodeError, match=r"unsupported encoding 'yuv422'.*rgb8.*mono8"):
        decode_image("yuv422", 2, 2, 4, b"\x00" * 8)


def test_short_data_message() -> None:
    with pytest.raises(ImageDecodeError, match=r"data has 100 bytes, expected step\*height"):
        decode_image("rgb8", 480, 640, 1920, b"\x00" * 100)


def test_step_too_small_message() -> None:
    with pytest.raises(ImageDecodeError, match=r"step 20 is smaller than width\*channels"):
        decode_image("bgr8", H, W, 20, b"\x00" * 20 * H)


@pytest.mark.parametrize(("height", "width"), [(0, 4), (4, 0), (-1, 4)])
def test_zero_or_negative_size(height: int, width: int) -> None:
    with pytest.raises(ImageDecodeError, match=r"(height|width) must be positive"):
        decode_image("rgb8", height, width, 12, b"\x00" * 48)


def test_huge_header_fails_fast_on_max_pixels() -> None:
    with pytest.raises(ImageDecodeError, match=r"100000x100000 exceeds max_pixels="):
        decode_image("rgb8", 100_000, 100_000, 300_000, b"\x00" * 10)


def test_huge_header_with_raised_limit_fails_on_length_without_allocating() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match=r"data has 10 bytes"):
            decode_image("rgb8", 100_000, 100_000, 300_000, b"\x00" * 10, max_pixels=10**11)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_non_integer_header_field() -> None:
    with pytest.raises(ImageDecodeError, match="height must be an integer"):
        decode_image("rgb8", "abc", 2, 6, b"\x00" * 12)  # type: ignore[arg-type]


def test_error_is_a_value_error() -> None:
    assert issubclass(ImageDecodeError, ValueError)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_encode_roundtrip(rgb: np.ndarray, encoding: str) -> None:
    height, width, step, data = encode_image(rgb, encoding)
    channels = 1 if encoding == "mono8" else 3
    assert (height, width, step) == (H, W, W * channels)
    assert isinstance(data, bytes)
    assert len(data) == step * height
    out = decode_image(encoding, height, width, step, data)
    if encoding == "mono8":
        assert out.shape == (H, W, 3)
        assert (out[..., 0] == out[..., 1]).all()
    else:
        np.testing.assert_array_equal(out, rgb)


def test_encode_bgr8_byte_order(rgb: np.ndarray) -> None:
    _, _, _, data = encode_image(rgb, "bgr8")
    np.testing.assert_array_equal(np.frombuffer(data, np.uint8).reshape(H, W, 3), rgb[..., ::-1])


def test_encode_grey_input() -> None:
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    _, _, step, data = encode_image(grey, "mono8")
    assert step == W
    np.testing.assert_array_equal(np.frombuffer(data, np.uint8).reshape(H, W), grey)
    _, _, step, data = encode_image(grey, "rgb8")
    np.testing.assert_array_equal(
        np.frombuffer(data, np.uint8).reshape(H, W, 3), np.repeat(grey[..., None], 3, axis=2)
    )


def test_encode_rejects_bad_input(rgb: np.ndarray) -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_image(rgb, "yuv422")
    with pytest.raises(ValueError, match="uint8"):
        encode_image(rgb.astype(np.float32), "rgb8")


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_roundtrip(fmt: str) -> None:
    # Smooth gradient so JPEG error stays small.
    yy, xx = np.mgrid[0:32, 0:48]
    img = np.stack([xx * 5, yy * 7, (xx + yy) * 3], axis=2).astype(np.uint8)
    data = encode_compressed(img, fmt=fmt)
    out = decode_compressed(fmt, data)
    assert out.shape == img.shape and out.dtype == np.uint8
    if fmt == "png":
        np.testing.assert_array_equal(out, img)
    else:
        assert np.abs(out.astype(int) - img.astype(int)).mean() < 4
    # Channel order: the red ramp must stay in channel 0.
    assert out[0, -1, 0] > out[0, -1, 2]


def test_compressed_accepts_array_payload() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = 200
    out = decode_compressed(
        "rgb8; png compressed bgr8", array.array("B", encode_compressed(img, "png"))
    )
    np.testing.assert_array_equal(out, img)


def test_compressed_garbage() -> None:
    with pytest.raises(ImageDecodeError, match="could not decode"):
        decode_compressed("jpeg", b"this is not a jpeg at all" * 10)


def test_compressed_empty() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_compressed("jpeg", b"")


def test_compressed_depth_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="depth"):
        decode_compressed(
            "16UC1; compressedDepth png", encode_compressed(np.zeros((2, 2, 3), np.uint8), "png")
        )


class FakeImage:
    """Just the attributes of sensor_msgs/Image that the codec touches."""

    def __init__(self) -> None:
        self.height = 0
        self.width = 0
        self.encoding = ""
        self.is_bigendian = 0
        self.step = 0
        self.data: bytes | array.array = b""


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_fill_then_read_msg(rgb: np.ndarray, encoding: str) -> None:
    msg = fill_image_msg(FakeImage(), rgb, encoding)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (H, W, encoding, W * 3)
    assert msg.is_bigendian == 0
    np.testing.assert_array_equal(image_from_msg(msg), rgb)


def test_image_from_msg_with_array_data(rgb: np.ndarray) -> None:
    msg = FakeImage()
    msg.height, msg.width, msg.encoding, msg.is_bigendian = H, W, "bgr8", 1
    msg.step, raw = pack(raw_pixels(rgb, "bgr8"), padding=2)
    msg.data = array.array("B", raw)  # what rclpy hands out for uint8[]
    np.testing.assert_array_equal(image_from_msg(msg), rgb)


def test_image_from_msg_respects_max_pixels(rgb: np.ndarray) -> None:
    msg = fill_image_msg(FakeImage(), rgb, "rgb8")
    with pytest.raises(ImageDecodeError, match="exceeds max_pixels=10"):
        image_from_msg(msg, max_pixels=10)
