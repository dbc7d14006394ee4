"""Frames, masks and conversations made from seeds, for the history/store/persistence tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segllm_ros.engine.history import Conversation, Frame, Round


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_frame(
    seed: int = 0, h: int = 24, w: int = 32, stamp_ns: int = 0, fid: str = "cam"
) -> Frame:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Frame.create(image, stamp_ns or 1_700_000_000_000_000_000 + seed, fid)


def make_mask(frame: Frame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    return rng.random((frame.height, frame.width)) > 0.6


def add_rounds(conv: Conversation, n: int, frame: Frame | None = None) -> list[np.ndarray]:
    masks = []
    for _ in range(n):
        index = conv.num_rounds + 1
        f = frame if frame is not None else make_frame(index)
        mask = make_mask(f, index)
        refs = [index - 1] if index > 1 else []
        conv.add_round(
            Round.from_mask(index, f"query {index}", f"answer {index}", refs, mask, 0.5, f), f
        )
        masks.append(mask)
    return masks


def conv_with_frame(conv_id: str) -> Conversation:
    conv = Conversation(id=conv_id)
    add_rounds(conv, 1)
    return conv


def assert_same_conversation(a: Conversation, b: Conversation) -> None:
    assert a.id == b.id
    assert a.pinned_frame_key == b.pinned_frame_key
    assert a.num_rounds == b.num_rounds
    for ra, rb in zip(a.rounds, b.rounds, strict=True):
        assert ra.to_json() == rb.to_json()
        assert np.array_equal(ra.mask(), rb.mask())
    assert set(a.frames) == set(b.frames)
    for key, fa in a.frames.items():
        fb = b.frames[key]
        assert (fa.stamp_ns, fa.frame_id, fa.key) == (fb.stamp_ns, fb.frame_id, fb.key)
        assert fa.image.dtype == fb.image.dtype
        assert np.array_equal(fa.image, fb.image)


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.rglob("*") if p.name.startswith(".tmp-")]
