"""The conversation store: LRU/TTL bounds, round limit, and the one owner of memory + disk."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
from history_helpers import FakeClock, assert_same_conversation, make_frame, make_mask

from segllm_ros.engine.history import Conversation, ConversationFullError, Frame, Round
from segllm_ros.engine.persistence import ConversationArchive, safe_name
from segllm_ros.engine.store import ConversationGoneError, ConversationStore


def record(
    store: ConversationStore, cid: str, frame: Frame | None = None, n: int = 1
) -> Conversation:
    """Add ``n`` rounds to ``cid`` the way the engine does (first round creates it)."""
    for _ in range(n):
        conv = store.get(cid) or store.new_conversation(cid)
        index = conv.num_rounds + 1
        f = frame if frame is not None else make_frame(index)
        store.add_round(
            conv, Round.from_mask(index, f"q{index}", "a", [], make_mask(f, index), 0.5, f), f
        )
    return conv


def saved(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_store_lru_eviction_order_and_drop_listener() -> None:
    clock = FakeClock()
    dropped: list[str] = []
    store = ConversationStore(max_conversations=3, clock=clock)
    store.on_drop(dropped.append)
    for name in "abc":
        clock.now += 1
        record(store, name)
    clock.now += 1
    store.get("a")  # a becomes most recent: b is now the least recently used
    record(store, "d")
    assert dropped == ["b"]
    assert store.ids() == ["c", "a", "d"]
    record(store, "e")
    assert dropped == ["b", "c"]
    assert store.get("b") is None and len(store) == 3
    assert store.why_gone("b").startswith("evicted (max_conversations=3")


def test_store_ttl_with_fake_clock() -> None:
    clock = FakeClock()
    dropped: list[str] = []
    store = ConversationStore(ttl_s=10.0, clock=clock)
    store.on_drop(dropped.append)
    record(store, "old")
    clock.now += 6
    record(store, "new")
    clock.now += 5  # old idle 11 s, new idle 5 s
    assert store.get("new") is not None
    assert store.ids() == ["new"] and dropped == ["old"]
    assert store.why_gone("old") == "expired (idle longer than conversation_ttl=10 s)"
    clock.now += 11
    assert store.get("new") is None  # expired on access
    assert len(store) == 0


def test_store_ttl_zero_never_expires() -> None:
    clock = FakeClock()
    store = ConversationStore(ttl_s=0, clock=clock)
    record(store, "a")
    clock.now += 1e9
    assert store.get("a") is not None


def test_store_max_rounds_raises_and_keeps_history() -> None:
    store = ConversationStore(max_rounds=2)
    frame = make_frame(0)
    conv = record(store, "c", frame, n=2)
    with pytest.raises(ConversationFullError, match="reset it"):
        record(store, "c", frame)
    assert conv.num_rounds == 2
    assert store.reset("c") == 1
    assert record(store, "c", frame).num_rounds == 1


def test_store_reset_one_and_all() -> None:
    store = ConversationStore()
    dropped: list[str] = []
    store.on_drop(dropped.append)
    assert store.reset("unknown") == 0
    record(store, "a")
    record(store, "b")
    assert store.reset("a") == 1 and dropped == ["a"]
    assert store.reset("a") == 0
    record(store, "c")
    assert store.reset() == 2
    assert store.reset() == 0 and len(store) == 0
    assert store.why_gone("c") == "reset"
    record(store, "c")
    assert store.why_gone("c") is None  # live again


def test_a_round_that_ends_after_a_reset_is_not_recorded() -> None:
    store = ConversationStore()
    frame = make_frame(0)
    conv = record(store, "c", frame)
    store.reset("c")
    with pytest.raises(ConversationGoneError, match="was reset while this round ran"):
        store.add_round(conv, Round.from_mask(2, "q", "a", [], None, 0.0, frame), frame)
    assert "c" not in store


def test_every_ending_deletes_the_saved_state(tmp_path: Path) -> None:
    clock = FakeClock()
    store = ConversationStore(
        max_conversations=2, ttl_s=100.0, clock=clock, archive=ConversationArchive(tmp_path)
    )
    record(store, "a", n=2)
    record(store, "b")
    assert saved(tmp_path) == ["a", "b"]  # saved after every round
    record(store, "c")  # evicts a (LRU)
    assert saved(tmp_path) == ["b", "c"]
    store.reset("b")
    assert saved(tmp_path) == ["c"]
    clock.now += 101
    assert store.get("c") is None  # expired
    assert saved(tmp_path) == []


def test_restore_keeps_the_newest_and_the_limits_of_the_new_store(tmp_path: Path) -> None:
    clock = FakeClock()
    first = ConversationStore(max_rounds=5, clock=clock, archive=ConversationArchive(tmp_path))
    for name in ("a", "b/c", "ünï"):
        clock.now += 1
        record(first, name, n=2)
    fresh = ConversationStore(
        max_conversations=2, max_rounds=2, archive=ConversationArchive(tmp_path)
    )
    assert fresh.restore() == 2
    assert sorted(fresh.ids()) == sorted(["b/c", "ünï"])
    assert saved(tmp_path) == sorted([safe_name("b/c"), safe_name("ünï")])
    for conv_id in fresh.ids():
        assert_same_conversation(first.get(conv_id), fresh.get(conv_id))
    with pytest.raises(ConversationFullError):  # the new store's round limit applies
        record(fresh, "ünï")
    assert fresh.restore() == 0  # already live: kept
    assert ConversationStore().restore() == 0  # no archive


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
                    store.reset()
                else:
                    # Another thread may have added that round, or reset the conversation.
                    with contextlib.suppress(ValueError, ConversationGoneError):
                        record(store, cid, frame)
                assert len(store) <= 5
                store.ids()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store) <= 5
