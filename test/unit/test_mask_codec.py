"""Tests for mask transport (RLE), boxes, IoU and the overlay renderer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segllm_ros.interface.mask_codec import (
    answer_overlay,
    box_to_roi,
    fill_mask_msg,
    mask_iou,
    mask_to_box,
    mask_to_mono8,
    mask_to_rle,
    overlay,
    resize_mask,
    rle_to_mask,
)


@pytest.mark.parametrize("seed", range(5))
def test_rle_roundtrip_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    mask = rng.random(shape) < rng.random()
    rle = mask_to_rle(mask)
    assert rle["size"] == list(shape)
    out = rle_to_mask(rle)
    assert out.dtype == np.bool_ and out.shape == shape
    np.testing.assert_array_equal(out, mask)


@pytest.mark.parametrize("fill", [False, True])
def test_rle_roundtrip_empty_and_full(fill: bool) -> None:
    mask = np.full((6, 9), fill, dtype=bool)
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask)), mask)


def test_rle_is_json_serialisable_and_counts_bytes_accepted() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str)
    restored = json.loads(json.dumps(rle))
    np.testing.assert_array_equal(rle_to_mask(restored), mask)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    np.testing.assert_array_equal(rle_to_mask(as_bytes), mask)


def test_rle_accepts_non_bool_and_uncompressed_counts() -> None:
    mask = np.array([[0, 2], [0, 0], [7, 0]], dtype=np.uint8)
    expected = mask != 0
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask)), expected)
    # Uncompressed COCO RLE: column-major run lengths starting with zeros: 2 off, 2 on, 2 off.
    uncompressed = {"size": [3, 2], "counts": [2, 2, 2]}
    np.testing.assert_array_equal(
        rle_to_mask(uncompressed), np.array([[0, 1], [0, 0], [1, 0]], dtype=bool)
    )


def test_rle_c_and_fortran_inputs_agree() -> None:
    mask = np.random.default_rng(3).random((7, 5)) < 0.5
    assert mask_to_rle(mask) == mask_to_rle(np.asfortranarray(mask))
    wide = np.zeros((7, 10), dtype=bool)
    wide[:, ::2] = mask
    assert mask_to_rle(mask) == mask_to_rle(wide[:, ::2])  # non-contiguous view


def test_box_rectangle() -> None:
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:5, 3:9] = True
    assert mask_to_box(mask) == (3, 2, 9, 5)
    assert box_to_roi((3, 2, 9, 5)) == (3, 2, 6, 3)


def test_box_single_pixel_and_corners() -> None:
    mask = np.zeros((4, 6), dtype=bool)
    mask[3, 5] = True
    assert mask_to_box(mask) == (5, 3, 6, 4)
    assert box_to_roi(mask_to_box(mask)) == (5, 3, 1, 1)
    mask[0, 0] = True
    assert mask_to_box(mask) == (0, 0, 6, 4)


def test_box_irregular_shape() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[1, 4] = True
    mask[6, 2] = True
    mask[3, 7] = True
    assert mask_to_box(mask) == (2, 1, 8, 7)


def test_box_empty_is_none() -> None:
    assert mask_to_box(np.zeros((5, 5), dtype=bool)) is None


def test_box_to_roi_rejects_inverted() -> None:
    with pytest.raises(ValueError, match="invalid box"):
        box_to_roi((5, 0, 2, 3))


def test_iou_by_hand() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    a[0:2, 0:2] = True  # 4 px
    b[1:3, 1:3] = True  # 4 px, overlap 1 px
    assert mask_iou(a, b) == pytest.approx(1 / 7)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, np.zeros_like(a)) == 0.0
    assert mask_iou(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_iou_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


def test_mono8_values() -> None:
    mask = np.random.default_rng(1).random((9, 11)) < 0.4
    mono = mask_to_mono8(mask)
    assert mono.dtype == np.uint8 and mono.shape == mask.shape
    assert set(np.unique(mono).tolist()) == {0, 255}
    np.testing.assert_array_equal(mono == 255, mask)


def test_fill_mask_msg_equals_mono8_in_a_ros_message() -> None:
    from sensor_msgs.msg import Image

    mask = np.random.default_rng(2).random((9, 11)) < 0.4
    msg = fill_mask_msg(Image(), mask[:, ::-1])  # a strided view is accepted too
    assert (msg.height, msg.width, msg.step, msg.encoding) == (9, 11, 11, "mono8")
    assert bytes(msg.data) == mask_to_mono8(mask[:, ::-1]).tobytes()


def test_resize_mask_nearest() -> None:
    mask = np.array([[1, 0], [0, 1]], dtype=bool)
    big = resize_mask(mask, 4, 6)
    assert big.dtype == np.bool_ and big.shape == (4, 6)
    expected = np.kron(mask, np.ones((2, 3), dtype=bool))
    np.testing.assert_array_equal(big, expected)
    np.testing.assert_array_equal(resize_mask(big, 2, 2), mask)


def test_overlay_changes_masked_pixels_only() -> None:
    rgb = np.full((40, 60, 3), 100, dtype=np.uint8)
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 20:50] = True
    out = overlay(rgb, [mask], colors=[(255, 0, 0)], alpha=0.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (rgb == 100).all()  # input untouched
    inner = out[15:25, 25:45]
    assert (inner[..., 0] > 150).all() and (inner[..., 1] < 60).all()
    # Far from the mask (beyond contour thickness) nothing changes.
    np.testing.assert_array_equal(out[0:5], rgb[0:5])
    np.testing.assert_array_equal(out[:, 0:10], rgb[:, 0:10])


def test_overlay_multiple_masks_labels_and_empty() -> None:
    rgb = np.zeros((64, 96, 3), dtype=np.uint8)
    a = np.zeros((64, 96), dtype=bool)
    b = np.zeros((64, 96), dtype=bool)
    a[20:40, 5:30] = True
    b[30:60, 50:90] = True
    empty = np.zeros((64, 96), dtype=bool)
    out = overlay(rgb, [a, b, empty], labels=["cup", "table", "ghost"])
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert out[35, 15].any() and out[50, 70].any()
    assert not np.array_equal(out[35, 15], out[50, 70])  # distinct default colours


def test_overlay_rejects_mismatched_mask() -> None:
    with pytest.raises(ValueError, match="resize"):
        overlay(np.zeros((4, 4, 3), np.uint8), [np.zeros((5, 5), bool)])


def _two_objects() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = np.full((120, 160, 3), 40, dtype=np.uint8)
    left = np.zeros((120, 160), dtype=bool)
    right = np.zeros((120, 160), dtype=bool)
    left[60:100, 10:50] = True
    right[30:70, 100:150] = True
    return rgb, left, right


def test_answer_overlay_numbers_every_segment_at_its_box() -> None:
    rgb, left, right = _two_objects()
    out = answer_overlay(rgb, [left, right], "the red circles")
    np.testing.assert_array_equal(out, overlay(rgb, [left, right], labels=["1", "2"]))
    # The labels are what differs from the unlabelled overlay: one patch at each box's
    # top-left corner, nothing elsewhere.
    label_pixels = (out != overlay(rgb, [left, right])).any(axis=2)
    ys, xs = np.nonzero(label_pixels)
    near_left = (abs(xs - 10) < 20) & (abs(ys - 60) < 20)
    near_right = (abs(xs - 100) < 20) & (abs(ys - 30) < 20)
    assert near_left.any() and near_right.any()
    assert (near_left | near_right).all()


def test_answer_overlay_labels_a_single_object_with_the_query() -> None:
    rgb, left, _ = _two_objects()
    out = answer_overlay(rgb, [left], "the red circle")
    np.testing.assert_array_equal(out, overlay(rgb, [left], labels=["the red circle"]))
    assert not np.array_equal(out, overlay(rgb, [left], labels=["1"]))
    np.testing.assert_array_equal(answer_overlay(rgb, [], "the mug"), rgb)  # nothing found
