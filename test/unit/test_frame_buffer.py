"""The frame buffer: newest-last ring bounded by count and bytes, decode on demand, frames
over ``max_pixels`` refused on arrival."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from segllm_ros.interface.frame_buffer import FrameBuffer
from segllm_ros.interface.image_codec import ImageDecodeError, encode_compressed, fill_image_msg


def image_msg(stamp_ns: int, h: int = 6, w: int = 8, value: int = 0) -> Image:
    msg = fill_image_msg(Image(), np.full((h, w, 3), value, np.uint8), "rgb8")
    msg.header.stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    msg.header.frame_id = "cam"
    return msg


def test_latest_and_closest_within_tolerance() -> None:
    buffer = FrameBuffer(capacity=4)
    assert buffer.latest() is None and buffer.closest(0, 10**9) is None
    for i in range(1, 4):
        buffer.push(image_msg(i * 10**9, value=i))
    assert buffer.latest().stamp_ns == 3 * 10**9
    assert buffer.closest(int(2.04e9), int(0.05e9)).stamp_ns == 2 * 10**9
    assert buffer.closest(int(2.5e9), int(0.05e9)) is None
    assert buffer.latest().decode(10**6)[0, 0, 0] == 3


def test_capacity_keeps_the_newest() -> None:
    buffer = FrameBuffer(capacity=3)
    for i in range(10):
        buffer.push(image_msg(i + 1))
    assert len(buffer) == 3 and buffer.closest(1, 0) is None
    assert buffer.nbytes == 3 * 6 * 8 * 3


def test_byte_budget_drops_the_oldest_but_keeps_the_newest() -> None:
    one = 6 * 8 * 3
    buffer = FrameBuffer(capacity=30, max_bytes=int(2.5 * one))
    for i in range(5):
        buffer.push(image_msg(i + 1))
    assert len(buffer) == 2 and buffer.nbytes == 2 * one
    huge = FrameBuffer(capacity=30, max_bytes=10)
    huge.push(image_msg(1))
    assert len(huge) == 1  # the newest frame always stays


def test_oversized_frame_is_refused_on_arrival_without_keeping_its_pixels() -> None:
    buffer = FrameBuffer(capacity=4, max_pixels=6 * 8 - 1)
    buffer.push(image_msg(1))
    frame = buffer.latest()
    assert frame.msg is None and buffer.nbytes == 0
    with pytest.raises(ImageDecodeError, match="8x6 exceeds max_pixels=47"):
        frame.decode(10**6)


def test_compressed_frame_is_decoded_once() -> None:
    msg = CompressedImage(
        format="png", data=encode_compressed(np.full((5, 7, 3), 9, np.uint8), "png")
    )
    msg.header.stamp = Time(sec=1)
    buffer = FrameBuffer()
    buffer.push(msg, compressed=True)
    frame = buffer.latest()
    first = frame.decode(10**6)
    assert first.shape == (5, 7, 3) and frame.msg is None
    assert frame.decode(10**6) is first
