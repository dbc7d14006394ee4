"""Conversations on disk: format, atomic writes, the archive's load/delete."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from history_helpers import (
    add_rounds,
    assert_same_conversation,
    conv_with_frame,
    make_frame,
    no_temp_files,
)

from segllm_ros.engine import persistence
from segllm_ros.engine.history import Conversation, Round
from segllm_ros.engine.persistence import (
    ConversationArchive,
    CorruptConversationError,
    load_conversation,
    safe_name,
    save_conversation,
)


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
    folder = save_conversation(conv, tmp_path)
    assert folder.parent == tmp_path and (folder / "conversation.json").is_file()
    assert len(list((folder / "frames").glob("*.png"))) == 4
    loaded = load_conversation(folder)
    assert_same_conversation(conv, loaded)
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

    monkeypatch.setattr(persistence, "_encode_png", boom)
    with pytest.raises(OSError, match="disk full"):
        save_conversation(conv, tmp_path)
    with pytest.raises(OSError, match="disk full"):
        save_conversation(new, tmp_path)
    assert (folder / "conversation.json").read_bytes() == before
    assert load_conversation(folder).num_rounds == 1
    assert not (tmp_path / safe_name("new")).exists()
    assert no_temp_files(tmp_path)


def test_archive_load_recent_reads_only_what_it_keeps_and_deletes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        save_conversation(conv_with_frame(f"c{i}"), tmp_path)
        data_path = tmp_path / safe_name(f"c{i}") / "conversation.json"
        data = json.loads(data_path.read_text())
        data["saved_at_unix"] = 100.0 + i
        data_path.write_text(json.dumps(data))
    decoded: list[str] = []
    original = persistence.load_conversation
    monkeypatch.setattr(
        persistence,
        "load_conversation",
        lambda path: decoded.append(Path(path).name) or original(path),
    )
    kept = ConversationArchive(tmp_path).load_recent(2)
    assert [c.id for c in kept] == ["c2", "c3"]  # oldest first
    assert sorted(decoded) == ["c2", "c3"]  # frames of the others never decoded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c2", "c3"]


def test_archive_delete(tmp_path: Path) -> None:
    archive = ConversationArchive(tmp_path)
    archive.save(conv_with_frame("x"))
    assert (tmp_path / safe_name("x") / "conversation.json").is_file()
    assert archive.delete("x") is True
    assert archive.delete("x") is False
    assert list(tmp_path.iterdir()) == []
    assert ConversationArchive(tmp_path / "nothing-here").load_recent(4) == []


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

    archive = ConversationArchive(tmp_path)
    with caplog.at_level(logging.WARNING, logger="segllm_ros.engine.persistence"):
        assert [c.id for c in archive.load_recent(16)] == ["good"]
    text = caplog.text
    for folder in ("bad-json", "bad-frame", "altered", "no-json"):
        assert str(tmp_path / folder) in text
    assert "content does not match" in text
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
    assert len(ConversationArchive(tmp_path).load_recent(16)) == 1
    assert not leftover_dir.exists()
    assert foreign.exists()
    assert [p.name for p in tmp_path.rglob(".tmp-*")] == [".tmp-not-ours"]
