"""Reference resolution, the bounded conversation store and its persistence."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from segllm_ros.engine import conversation as conversation_module
from segllm_ros.engine.conversation import (
    Conversation,
    ConversationFullError,
    ConversationStore,
    CorruptConversationError,
    Frame,
    Round,
    load_conversation,
    safe_name,
    save_conversation,
)
from segllm_ros.engine.references import (
    REFERENCE_FORMS,
    BadReferenceError,
    format_reference,
    parse_references,
    pronoun_reference,
    resolve_references,
    uses_pronoun_reference,
)

# --------------------------------------------------------------------------- helpers


class FakeClock:
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


# --------------------------------------------------------------------------- parsing


def test_parse_all_token_forms_in_order() -> None:
    text = "the mug left of <the output of round 3> and the lid of <instance 1>"
    assert parse_references(text) == [3, 1]


def test_parse_case_spaces_and_dedupe() -> None:
    text = "< The  Output of   ROUND 2 >, <INSTANCE   2>, <instance 4 >, <the output of round 2>"
    assert parse_references(text) == [2, 4]
    assert parse_references("<the output\tof\nround 12>") == [12]


def test_parse_ignores_plain_text_and_keeps_zero() -> None:
    assert parse_references("round 2 and instance 3 without brackets") == []
    assert parse_references("") == []
    # Zero is parsed so that resolution can explain it.
    assert parse_references("<instance 0>") == [0]


def test_negative_round_is_a_bad_reference_not_text() -> None:
    assert parse_references("the cup left of <the output of round -1>") == [-1]
    with pytest.raises(BadReferenceError, match="round -1 does not exist"):
        resolve_references("the cup left of <the output of round -1>", [], 2)


def test_reference_forms_round_trip_through_the_parser() -> None:
    for form in REFERENCE_FORMS:
        assert parse_references(f"the lid of {format_reference(7, form)}") == [7]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the cup next to it", True),
        ("segment it", True),
        ("It again please", True),
        ("the handle of that", True),
        ("that one", True),
        ("the other chair", True),
        ("The  Other chair", True),
        ("the handle of its lid", True),
        ("segment the mug again", True),
        ("the mug that is on the table", False),
        ("the chairs that are red", False),
        ("the robot that has wheels", False),
        ("the box that was opened", False),
        ("the mug that's blue", False),
        ("a red chair", False),
        ("the item on the table", False),  # "it" inside a word
        ("another chair", False),
        ("<the output of round 2> again", False),  # explicit, not a pronoun
        ("the cup next to <instance 1>, and it", False),
        ("", False),
    ],
)
def test_uses_pronoun_reference(text: str, expected: bool) -> None:
    assert uses_pronoun_reference(text) is expected


def test_pronoun_inside_a_token_does_not_count() -> None:
    assert not uses_pronoun_reference("find <it> on the table")
    assert not uses_pronoun_reference("<that is it>")
    assert pronoun_reference("the cup next to IT") == "it"
    assert pronoun_reference("the  other chair") == "the other"


# --------------------------------------------------------------------------- resolution


def test_resolve_union_explicit_first_then_text() -> None:
    text = "the mug between <instance 3> and <the output of round 1>"
    assert resolve_references(text, [2, 3], 4) == [2, 3, 1]
    assert resolve_references("a chair", [], 3) == []
    assert resolve_references("a chair", (np.int64(2),), 3) == [2]


def test_resolve_pronoun_means_previous_round() -> None:
    assert resolve_references("the cup next to it", [], 3) == [3]
    assert resolve_references("the other chair", [], 1) == [1]
    # Explicit references win: the pronoun adds nothing.
    assert resolve_references("the cup next to it", [1], 3) == [1]
    assert resolve_references("<the output of round 2> again", [], 3) == [2]


def test_resolve_round_that_does_not_exist() -> None:
    with pytest.raises(BadReferenceError) as err:
        resolve_references("the mug left of <the output of round 5>", [], 2)
    assert str(err.value) == "round 5 does not exist: this conversation has 2 earlier rounds"
    with pytest.raises(BadReferenceError, match=r"has 1 earlier round$"):
        resolve_references("", [2], 1)
    with pytest.raises(BadReferenceError, match="round 1 does not exist: this is the first round"):
        resolve_references("<instance 1>", [], 0)


def test_resolve_pronoun_in_first_round() -> None:
    with pytest.raises(BadReferenceError) as err:
        resolve_references("the cup next to it", [], 0)
    assert str(err.value) == (
        "'it' refers to the previous round, but this is the first round of the conversation"
    )
    with pytest.raises(BadReferenceError, match=r"^'the other' refers to the previous round"):
        resolve_references("the other chair", [], 0)


@pytest.mark.parametrize("bad", [0, -1, -7])
def test_resolve_round_zero_or_negative(bad: int) -> None:
    with pytest.raises(BadReferenceError, match=f"round {bad} does not exist: rounds are numbered"):
        resolve_references("x", [bad], 3)
    with pytest.raises(BadReferenceError, match="round 0 does not exist"):
        resolve_references("<instance 0>", [], 3)


def test_resolve_rejects_non_integers() -> None:
    with pytest.raises(BadReferenceError, match="must be an integer"):
        resolve_references("x", [1.5], 3)  # type: ignore[list-item]
    with pytest.raises(BadReferenceError, match="must be an integer"):
        resolve_references("x", [True], 3)  # type: ignore[list-item]


def test_resolve_too_many_references() -> None:
    text = "".join(f"<instance {i}>" for i in range(1, 6))
    with pytest.raises(BadReferenceError, match=r"too many referenced rounds \(5\).*at most 4"):
        resolve_references(text, [], 6)
    assert resolve_references(text, [], 6, max_refs=5) == [1, 2, 3, 4, 5]
    # Duplicates do not count twice.
    assert resolve_references("<instance 1><instance 1>", [1, 2, 2, 3, 4], 6) == [1, 2, 3, 4]


def test_bad_reference_is_a_value_error() -> None:
    assert issubclass(BadReferenceError, ValueError)
    assert issubclass(ConversationFullError, ValueError)


# --------------------------------------------------------------------------- frames/rounds


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


def test_invalidate_runtime() -> None:
    conv = Conversation(id="c", runtime={"kv": 1})
    conv.invalidate_runtime()
    assert conv.runtime is None


# --------------------------------------------------------------------------- store


def test_store_lru_eviction_order() -> None:
    clock = FakeClock()
    evicted: list[str] = []
    store = ConversationStore(
        max_conversations=3, clock=clock, on_evict=lambda c: evicted.append(c.id)
    )
    for name in "abc":
        clock.now += 1
        store.get_or_create(name)
    clock.now += 1
    store.get("a")  # a becomes most recent: b is now the least recently used
    a = store.get_or_create("a")
    a.runtime = "cache"
    store.get_or_create("d")
    assert evicted == ["b"]
    assert store.ids() == ["c", "a", "d"]
    store.get_or_create("e")
    assert evicted == ["b", "c"]
    assert store.get("b") is None and len(store) == 3
    assert a.runtime == "cache"  # survivors keep their caches


def test_store_evicted_conversation_loses_runtime() -> None:
    store = ConversationStore(max_conversations=1)
    conv = store.get_or_create("a")
    conv.runtime = object()
    store.get_or_create("b")
    assert conv.runtime is None


def test_store_ttl_with_fake_clock() -> None:
    clock = FakeClock()
    store = ConversationStore(ttl_s=10.0, clock=clock)
    store.get_or_create("old")
    clock.now += 6
    store.get_or_create("new")
    clock.now += 5  # old idle 11 s, new idle 5 s
    assert store.prune() == 1
    assert store.ids() == ["new"]
    clock.now += 11
    assert store.get("new") is None  # expired on access
    assert len(store) == 0


def test_store_ttl_zero_never_expires() -> None:
    clock = FakeClock()
    store = ConversationStore(ttl_s=0, clock=clock)
    store.get_or_create("a")
    clock.now += 1e9
    assert store.prune() == 0 and store.get("a") is not None


def test_store_max_rounds_raises_and_keeps_history() -> None:
    store = ConversationStore(max_rounds=2)
    frame = make_frame(0)
    conv = store.get_or_create("c")
    add_rounds(conv, 2, frame)
    with pytest.raises(ConversationFullError, match="reset it"):
        add_rounds(conv, 1, frame)
    with pytest.raises(ConversationFullError):
        store.add_round("c", Round.from_mask(3, "q", "a", [], None, 0.0, frame), frame)
    assert conv.num_rounds == 2
    assert store.reset("c")
    conv = store.add_round("c", Round.from_mask(1, "q", "a", [], None, 0.0, frame), frame)
    assert conv.num_rounds == 1


def test_store_reset_and_reset_all() -> None:
    store = ConversationStore()
    assert store.reset("unknown") is False
    conv = store.get_or_create("a")
    conv.runtime = "kv"
    store.get_or_create("b")
    assert store.reset("a") is True and conv.runtime is None
    assert store.reset("a") is False
    store.get_or_create("c")
    assert store.reset_all() == 2
    assert store.reset_all() == 0 and len(store) == 0


def test_store_total_history_bytes() -> None:
    store = ConversationStore()
    frame = make_frame(0)
    add_rounds(store.get_or_create("a"), 2, frame)
    add_rounds(store.get_or_create("b"), 1, frame)
    total = store.total_history_bytes()
    assert total == sum(store.get(i).history_bytes() for i in ("a", "b"))
    assert total >= 2 * frame.nbytes


def test_store_thread_safety_smoke() -> None:
    store = ConversationStore(max_conversations=5, ttl_s=0.5)
    frame = make_frame(0, h=8, w=8)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for i in range(300):
                cid = f"c{(seed * 7 + i) % 11}"
                if i % 5 == 0:
                    store.reset(cid)
                elif i % 17 == 0:
                    store.reset_all()
                else:
                    conv = store.get_or_create(cid)
                    assert conv.id == cid
                    # Another thread may have added that round number first.
                    with contextlib.suppress(ValueError):
                        store.add_round(
                            cid,
                            Round.from_mask(conv.num_rounds + 1, "q", "a", [], None, 0.0, frame),
                            frame,
                        )
                store.prune()
                assert len(store) <= 5
                store.ids()
                store.total_history_bytes()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store) <= 5


# --------------------------------------------------------------------------- persistence


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


@pytest.mark.parametrize(
    "conv_id", ["simple", "robot/arm/../1", "日本語 ☕", "UPPER.lower", "", "x" * 300]
)
def test_save_load_round_trip(tmp_path: Path, conv_id: str) -> None:
    conv = Conversation(id=conv_id)
    masks = add_rounds(conv, 3)
    empty_frame = make_frame(7, fid="cam/rgb ✓")
    conv.add_round(
        Round.from_mask(4, "nothing", "none", [1, 3], None, 0.0, empty_frame), empty_frame
    )
    conv.runtime = "never persisted"
    folder = save_conversation(conv, tmp_path)
    assert folder.parent == tmp_path and (folder / "conversation.json").is_file()
    assert len(list((folder / "frames").glob("*.png"))) == 4
    loaded = load_conversation(folder)
    assert_same_conversation(conv, loaded)
    assert loaded.runtime is None
    for i, mask in enumerate(masks, start=1):
        assert np.array_equal(loaded.round(i).mask(), mask)
    assert not loaded.round(4).mask().any()
    assert no_temp_files(tmp_path)
    # The JSON file path is accepted too.
    assert_same_conversation(conv, load_conversation(folder / "conversation.json"))


def test_safe_names_are_distinct_and_safe() -> None:
    ids = ["a", "A", "a/b", "a%2Fb", "a.b", ".", "..", "", "日本", "a b", "x" * 300, "x" * 301]
    names = [safe_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert len({n.lower() for n in names}) == len(ids)  # case-insensitive filesystems
    for name in names:
        assert name.isascii() and "/" not in name and not name.startswith(".")
        assert 0 < len(name) <= 200


def test_resave_updates_in_place_and_drops_unused_frames(tmp_path: Path) -> None:
    conv = Conversation(id="c")
    add_rounds(conv, 2)
    folder = save_conversation(conv, tmp_path)
    first_png = sorted((folder / "frames").iterdir())[0]
    mtime = first_png.stat().st_mtime_ns
    add_rounds(conv, 1)
    save_conversation(conv, tmp_path)
    assert first_png.stat().st_mtime_ns == mtime  # unchanged frames are not rewritten
    assert_same_conversation(conv, load_conversation(folder))
    # A smaller conversation with the same id replaces it, and its unused frames go.
    small = Conversation(id="c")
    add_rounds(small, 1, make_frame(42))
    save_conversation(small, tmp_path)
    assert len(list((folder / "frames").iterdir())) == 1
    assert_same_conversation(small, load_conversation(folder))
    assert no_temp_files(tmp_path)


def test_failed_save_keeps_previous_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conv = Conversation(id="c")
    add_rounds(conv, 1)
    folder = save_conversation(conv, tmp_path)
    before = (folder / "conversation.json").read_bytes()
    add_rounds(conv, 1)

    new = conv_with_frame("new")

    def boom(image: np.ndarray) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(conversation_module, "_encode_png", boom)
    with pytest.raises(OSError, match="disk full"):
        save_conversation(conv, tmp_path)
    with pytest.raises(OSError, match="disk full"):
        save_conversation(new, tmp_path)
    assert (folder / "conversation.json").read_bytes() == before
    assert load_conversation(folder).num_rounds == 1
    assert not (tmp_path / safe_name("new")).exists()
    assert no_temp_files(tmp_path)


def conv_with_frame(conv_id: str) -> Conversation:
    conv = Conversation(id=conv_id)
    add_rounds(conv, 1)
    return conv


def test_store_save_load_all(tmp_path: Path) -> None:
    clock = FakeClock()
    store = ConversationStore(max_rounds=5, clock=clock)
    for name in ("a", "b/c", "ünï"):
        add_rounds(store.get_or_create(name), 2)
        clock.now += 1
    store.get_or_create("empty")
    assert store.save_all(tmp_path) == 4
    assert store.save("missing", tmp_path) is False

    fresh = ConversationStore(max_rounds=2, clock=clock)
    assert fresh.load_all(tmp_path) == 4
    assert sorted(fresh.ids()) == sorted(store.ids())
    for conv_id in store.ids():
        assert_same_conversation(store.get(conv_id), fresh.get(conv_id))
    with pytest.raises(ConversationFullError):  # the new store's limit applies
        add_rounds(fresh.get("a"), 1)
    assert fresh.load_all(tmp_path) == 0  # already in memory: kept
    assert ConversationStore().load_all(tmp_path / "nothing-here") == 0


def test_store_save_and_delete_saved(tmp_path: Path) -> None:
    store = ConversationStore()
    add_rounds(store.get_or_create("x"), 1)
    assert store.save("x", tmp_path) is True
    assert (tmp_path / safe_name("x") / "conversation.json").is_file()
    assert store.delete_saved("x", tmp_path) is True
    assert store.delete_saved("x", tmp_path) is False
    assert list(tmp_path.iterdir()) == []


def test_load_all_loads_most_recent_when_over_capacity(tmp_path: Path) -> None:
    for i in range(4):
        save_conversation(conv_with_frame(f"c{i}"), tmp_path)
        data_path = tmp_path / safe_name(f"c{i}") / "conversation.json"
        data = json.loads(data_path.read_text())
        data["saved_at_unix"] = 100.0 + i
        data_path.write_text(json.dumps(data))
    store = ConversationStore(max_conversations=2)
    assert store.load_all(tmp_path) == 2
    assert sorted(store.ids()) == ["c2", "c3"]


def test_corrupt_folder_is_skipped_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_conversation(conv_with_frame("good"), tmp_path)
    bad_json = save_conversation(conv_with_frame("bad-json"), tmp_path)
    (bad_json / "conversation.json").write_text("{not json")
    bad_frame = save_conversation(conv_with_frame("bad-frame"), tmp_path)
    png = next((bad_frame / "frames").iterdir())
    png.write_bytes(png.read_bytes()[:40])
    altered = save_conversation(conv_with_frame("altered"), tmp_path)
    png = next((altered / "frames").iterdir())
    img = cv2.imread(str(png))
    img[0, 0, 0] ^= 1
    cv2.imwrite(str(png), img)
    (tmp_path / "no-json").mkdir()
    (tmp_path / "stray.txt").write_text("not a folder")

    store = ConversationStore()
    with caplog.at_level(logging.WARNING, logger="segllm_ros.engine.conversation"):
        assert store.load_all(tmp_path) == 1
    assert store.ids() == ["good"]
    text = caplog.text
    for folder in ("bad-json", "bad-frame", "altered", "no-json"):
        assert str(tmp_path / folder) in text
    assert "frame content does not match" in text
    with pytest.raises(CorruptConversationError):
        load_conversation(bad_json)


def test_load_rejects_other_versions(tmp_path: Path) -> None:
    folder = save_conversation(conv_with_frame("v"), tmp_path)
    data = json.loads((folder / "conversation.json").read_text())
    data["version"] = 99
    (folder / "conversation.json").write_text(json.dumps(data))
    with pytest.raises(CorruptConversationError, match="version 99 is not supported"):
        load_conversation(folder)


def test_load_all_removes_crash_leftovers(tmp_path: Path) -> None:
    folder = save_conversation(conv_with_frame("c"), tmp_path)
    leftover_dir = tmp_path / (".tmp-" + "a" * 32)
    leftover_dir.mkdir()
    (leftover_dir / "conversation.json").write_text("{}")
    (folder / (".tmp-" + "b" * 32)).write_text("half")
    (folder / "frames" / (".tmp-" + "c" * 32)).write_bytes(b"half")
    foreign = tmp_path / ".tmp-not-ours"
    foreign.write_text("keep")
    assert ConversationStore().load_all(tmp_path) == 1
    assert not leftover_dir.exists()
    assert foreign.exists()
    assert [p.name for p in tmp_path.rglob(".tmp-*")] == [".tmp-not-ours"]
