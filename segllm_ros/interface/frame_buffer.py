"""Recent camera frames, stored as received and decoded only when a query uses one.

The image callback must stay cheap (it runs at camera rate on the executor), so it only
appends the message here; decoding errors surface as a BAD_IMAGE result of the query that
needed the frame. Memory is bounded by count and by bytes, and a raw frame larger than
``max_pixels`` is refused on arrival (its pixels are never kept; the query that would use it
is told why).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segllm_ros.interface.image_codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_compressed,
    image_from_msg,
)

#: Default bound on the bytes of buffered messages (30 full-HD rgb8 frames fit).
DEFAULT_MAX_BYTES = 256 * 2**20


@dataclass
class BufferedFrame:
    msg: Any  # sensor_msgs/Image or CompressedImage (duck-typed)
    compressed: bool
    stamp_ns: int
    frame_id: str
    nbytes: int = 0  # size of the message's data as received
    refused: str = ""  # why the frame was not kept (its pixels are dropped)
    _decoded: np.ndarray | None = field(default=None, repr=False)

    def decode(self, max_pixels: int) -> np.ndarray:
        """HxWx3 RGB; raises ``ImageDecodeError`` with a plain message. Decoded once."""
        if self.refused:
            raise ImageDecodeError(self.refused)
        if self._decoded is None:
            if self.compressed:
                self._decoded = decode_compressed(
                    self.msg.format, bytes(self.msg.data), max_pixels=max_pixels
                )
            else:
                self._decoded = image_from_msg(self.msg, max_pixels=max_pixels)
            self.msg = None  # the pixels now live in _decoded only
        return self._decoded


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class FrameBuffer:
    """The last ``capacity`` frames (at most ``max_bytes`` of messages), newest last;
    thread-safe. The newest frame is always kept, whatever its size."""

    def __init__(
        self,
        capacity: int = 30,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self._frames: deque[BufferedFrame] = deque(maxlen=max(1, capacity))
        self._bytes = 0
        self._lock = threading.Lock()

    def push(self, msg: Any, compressed: bool = False) -> None:
        frame = BufferedFrame(
            msg,
            compressed,
            stamp_to_ns(msg.header.stamp),
            msg.header.frame_id,
            nbytes=len(msg.data),
        )
        if not compressed and int(msg.height) * int(msg.width) > self.max_pixels:
            frame.refused = (
                f"image size {msg.width}x{msg.height} exceeds "
                f"max_pixels={self.max_pixels} (max_image_pixels)"
            )
            frame.msg, frame.nbytes = None, 0
        with self._lock:
            if len(self._frames) == self._frames.maxlen:
                self._bytes -= self._frames[0].nbytes
            self._frames.append(frame)
            self._bytes += frame.nbytes
            while self._bytes > self.max_bytes and len(self._frames) > 1:
                self._bytes -= self._frames.popleft().nbytes

    @property
    def nbytes(self) -> int:
        """Bytes of the buffered messages as received."""
        with self._lock:
            return self._bytes

    def latest(self) -> BufferedFrame | None:
        with self._lock:
            return self._frames[-1] if self._frames else None

    def closest(self, stamp_ns: int, tolerance_ns: int) -> BufferedFrame | None:
        with self._lock:
            best = min(self._frames, key=lambda f: abs(f.stamp_ns - stamp_ns), default=None)
        if best is None or abs(best.stamp_ns - stamp_ns) > tolerance_ns:
            return None
        return best

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)
