"""The history data model: frames, rounds, conversations."""

from __future__ import annotations

import numpy as np
import pytest
from history_helpers import add_rounds, make_frame, make_mask

from segllm_ros.engine.history import Conversation, Frame, Round
from segllm_ros.engine.references import BadReferenceError


def test_frame_key_and_read_only_image() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    frame = Frame.create(image, 123, "camera_link")
    assert frame.key == "camera_link@123"
    assert (frame.height, frame.width) == (4, 5)
    with pytest.raises(ValueError):
        frame.image[0, 0, 0] = 1
    image[0, 0, 0] = 7  # the caller's array stays writable
    unstamped_a = Frame.create(np.zeros((4, 5, 3), np.uint8), 0, "cam")
    unstamped_b = Frame.create(np.ones((4, 5, 3), np.uint8), 0, "cam")
    assert unstamped_a.key.startswith("cam#") and unstamped_a.key != unstamped_b.key
    assert Frame(image=image, stamp_ns=1, frame_id="f", key="mine").key == "mine"
    with pytest.raises(ValueError, match="HxWx3"):
        Frame.create(np.zeros((4, 5), np.uint8), 1, "cam")
    with pytest.raises(ValueError, match="uint8"):
        Frame.create(np.zeros((4, 5, 3), np.float32), 1, "cam")


def test_round_mask_and_empty_mask() -> None:
    frame = make_frame(1)
    mask = make_mask(frame, 1)
    rnd = Round.from_mask(1, "q", "a", [], mask, 0.9, frame)
    assert np.array_equal(rnd.mask(), mask)
    assert rnd.box is not None and isinstance(rnd.mask_rle["counts"], str)
    empty = Round.from_mask(1, "q", "a", [], None, 0.0, frame)
    assert empty.mask().shape == (frame.height, frame.width) and not empty.mask().any()
    with pytest.raises(BadReferenceError):
        Round.from_mask(2, "q", "a", [2], None, 0.0, frame)


def test_conversation_add_round_and_round_lookup() -> None:
    conv = Conversation(id="c")
    frame = make_frame(0)
    add_rounds(conv, 2, frame)
    assert conv.num_rounds == 2 and conv.round(2).index == 2
    assert conv.pinned_frame_key == frame.key and conv.pinned_frame is frame
    assert list(conv.frames) == [frame.key]  # shared frame stored once
    with pytest.raises(BadReferenceError, match=r"round 3 does not exist: .* has 2 earlier rounds"):
        conv.round(3)
    with pytest.raises(BadReferenceError, match="numbered from 1"):
        conv.round(0)
    with pytest.raises(ValueError, match="next round of 'c' is 3"):
        conv.add_round(Round.from_mask(5, "q", "a", [], None, 0.0, frame), frame)
    other = make_frame(9)
    with pytest.raises(ValueError, match="is not frame"):
        conv.add_round(Round.from_mask(3, "q", "a", [], None, 0.0, frame), other)
    add_rounds(conv, 1, other)
    assert set(conv.frames) == {frame.key, other.key}
    assert conv.pinned_frame_key == frame.key
    assert conv.history_bytes() >= 2 * frame.nbytes
