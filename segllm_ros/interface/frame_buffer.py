"""Recent camera frames, stored as received and decoded only when a query uses one.

The image callback must stay cheap (it runs at camera rate on the executor), so it only
appends the message here; decoding errors surface as a BAD_IMAGE result of the query that
needed the frame.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segllm_ros.interface.image_codec import decode_compressed, image_from_msg


@dataclass
class BufferedFrame:
    msg: Any                       # sensor_msgs/Image or CompressedImage (duck-typed)
    compressed: bool
    stamp_ns: int
    frame_id: str
    _decoded: np.ndarray | None = field(default=None, repr=False)

    def decode(self, max_pixels: int) -> np.ndarray:
        """HxWx3 RGB; raises ``ImageDecodeError`` with a plain message. Decoded once."""
        if self._decoded is None:
            if self.compressed:
                self._decoded = decode_compressed(self.msg.format, bytes(self.msg.data),
                                                  max_pixels=max_pixels)
            else:
                self._decoded = image_from_msg(self.msg, max_pixels=max_pixels)
            self.msg = None        # the pixels now live in _decoded only
        return self._decoded


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class FrameBuffer:
    """The last ``capacity`` frames, newest last; thread-safe."""

    def __init__(self, capacity: int = 30) -> None:
        self._frames: deque[BufferedFrame] = deque(maxlen=max(1, capacity))
        self._lock = threading.Lock()

    def push(self, msg: Any, compressed: bool = False) -> None:
        frame = BufferedFrame(msg, compressed, stamp_to_ns(msg.header.stamp),
                              msg.header.frame_id)
        with self._lock:
            self._frames.append(frame)

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
