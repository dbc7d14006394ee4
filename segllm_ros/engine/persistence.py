"""Conversations on disk, so a restarted node continues them with the same history.

One folder per conversation: ``<safe id>/conversation.json`` (the single commit point) and
``frames/*.png``. Every write is atomic (temp name + rename), so a crash leaves the old or the
new state, never a mix; ``ConversationArchive`` is the one owner of the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segllm_ros.engine.history import Conversation, Frame, Round, image_digest

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ConversationArchive",
    "CorruptConversationError",
    "load_conversation",
    "safe_name",
    "save_conversation",
]

_LOG = logging.getLogger(__name__)

FORMAT_NAME = "segllm_ros.conversation"
FORMAT_VERSION = 1
_JSON_NAME = "conversation.json"
_FRAMES_DIR = "frames"
# Everything this module writes before committing starts with this; conversation folders and
# frame files never do (``safe_name`` escapes "."), so leftovers of a crash are recognisable.
_TMP_PREFIX = ".tmp-"
_TMP_NAME = re.compile(r"\.tmp-[0-9a-f]{32}")
_MAX_NAME = 200


class CorruptConversationError(ValueError):
    """A saved conversation cannot be read back (bad JSON, missing or altered frame)."""


def safe_name(text: str) -> str:
    """A file name for any string: injective, ASCII, and safe on case-insensitive systems.

    ``[a-z0-9_-]`` stay, every other UTF-8 byte becomes ``%XX`` (upper-case hex), so "."
    and ".." cannot appear and no name starts with "." (reserved for temp files). Very
    long names are truncated and made unique with a hash; the real id is stored inside.
    """
    if not text:
        return "%"
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char.isascii() and (char.islower() or char.isdigit() or char in "_-"):
            out.append(char)
        else:
            out.append(f"%{byte:02X}")
    name = "".join(out)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        name = f"{name[: _MAX_NAME - 18]}~{digest}"
    return name


def _tmp_path(directory: Path) -> Path:
    return directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` so readers see the old content or the new one, never a mix."""
    tmp = _tmp_path(path.parent)
    try:
        with open(tmp, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _encode_png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("PNG encoding failed")
    return buffer.tobytes()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _conversation_json(conv: Conversation, frames: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "id": conv.id,
        "pinned_frame_key": conv.pinned_frame_key,
        "saved_at_unix": time.time(),
        "frames": frames,
        "rounds": [r.to_json() for r in conv.rounds],
    }


def _write_frames(conv: Conversation, folder: Path, known: dict[str, Any]) -> dict[str, Any]:
    """Write the frames a previous save did not already hold; return their JSON entries."""
    frames_dir = folder / _FRAMES_DIR
    frames_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    for key, frame in conv.frames.items():
        file_name = f"{safe_name(key)}.png"
        digest = image_digest(frame.image)
        entry = {
            "file": f"{_FRAMES_DIR}/{file_name}",
            "stamp_ns": frame.stamp_ns,
            "frame_id": frame.frame_id,
            "height": frame.height,
            "width": frame.width,
            "digest": digest,
        }
        old = known.get(key)
        already = isinstance(old, dict) and old.get("digest") == digest
        if not (already and (frames_dir / file_name).is_file()):
            _write_atomic(frames_dir / file_name, _encode_png(frame.image))
        entries[key] = entry
    return entries


def save_conversation(conv: Conversation, directory: Path | str) -> Path:
    """Persist ``conv`` as ``directory/<safe id>/conversation.json`` plus ``frames/*.png``.

    Crash-safe: a first save builds the folder under a temp name and renames it into place;
    later saves write new frames (temp file + ``os.replace``) before replacing the JSON, which
    is the single commit point, and delete frames no longer referenced only afterwards. A
    reader therefore always sees a complete old or complete new state. Frames already saved
    with the same content are not rewritten, so saving after every round stays cheap.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    folder = directory / safe_name(conv.id)

    if not folder.exists():
        staging = _tmp_path(directory)
        try:
            staging.mkdir()
            frames = _write_frames(conv, staging, {})
            data = json.dumps(_conversation_json(conv, frames), ensure_ascii=False, indent=1)
            _write_atomic(staging / _JSON_NAME, data.encode("utf-8"))
            _fsync_dir(staging)
            os.rename(staging, folder)
            _fsync_dir(directory)
            return folder
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not folder.exists():
                raise
            # Another writer created it meanwhile: fall through to the in-place update.
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    previous = _read_json(folder / _JSON_NAME) or {}
    known = previous.get("frames") if isinstance(previous.get("frames"), dict) else {}
    frames = _write_frames(conv, folder, known)
    data = json.dumps(_conversation_json(conv, frames), ensure_ascii=False, indent=1)
    _write_atomic(folder / _JSON_NAME, data.encode("utf-8"))
    _fsync_dir(folder)
    wanted = {Path(e["file"]).name for e in frames.values()}
    for path in (folder / _FRAMES_DIR).iterdir():
        if path.name not in wanted:
            with contextlib.suppress(OSError):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    return folder


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise CorruptConversationError(message)


def load_conversation(path: Path | str) -> Conversation:
    """Read a conversation saved by ``save_conversation`` (its folder or its JSON file).

    Frames are checked against their recorded content hash, so a damaged PNG is reported
    instead of silently giving the model a different image. Raises
    ``CorruptConversationError`` for any inconsistency.
    """
    path = Path(path)
    folder = path.parent if path.name == _JSON_NAME else path
    json_path = folder / _JSON_NAME
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptConversationError(f"{folder}: no {_JSON_NAME}") from None
    except (OSError, ValueError) as err:
        raise CorruptConversationError(f"{json_path}: unreadable ({err})") from None
    _require(isinstance(data, dict), f"{json_path}: not a JSON object")
    _require(data.get("format") == FORMAT_NAME, f"{json_path}: not a saved conversation")
    version = data.get("version")
    _require(
        version == FORMAT_VERSION,
        f"{json_path}: format version {version!r} is not supported (expected {FORMAT_VERSION})",
    )
    try:
        frames: dict[str, Frame] = {}
        for key, entry in data["frames"].items():
            file = folder / entry["file"]
            _require(file.resolve().is_relative_to(folder.resolve()), f"{file}: outside folder")
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            _require(bgr is not None, f"{file}: missing or unreadable frame")
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            _require(image_digest(image) == entry["digest"], f"{file}: content does not match")
            frames[str(key)] = Frame(
                image=image,
                stamp_ns=int(entry["stamp_ns"]),
                frame_id=str(entry["frame_id"]),
                key=str(key),
            )
        conv = Conversation(id=str(data["id"]))
        for item in data["rounds"]:
            round_ = Round.from_json(item)
            _require(round_.frame_key in frames, f"{json_path}: round {round_.index} lacks frame")
            conv.add_round(round_, frames[round_.frame_key])
        pinned = data["pinned_frame_key"]
        _require(pinned is None or pinned in frames, f"{json_path}: pinned frame missing")
        conv.frames = frames
        conv.pinned_frame_key = pinned
    except CorruptConversationError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CorruptConversationError(f"{json_path}: invalid content ({err!r})") from None
    return conv


def _remove_leftovers(directory: Path) -> None:
    """Delete temp files/folders an interrupted save or delete left behind (ours only)."""
    candidates = list(directory.glob(f"{_TMP_PREFIX}*"))
    candidates += directory.glob(f"*/{_TMP_PREFIX}*")
    candidates += directory.glob(f"*/{_FRAMES_DIR}/{_TMP_PREFIX}*")
    for path in candidates:
        if not _TMP_NAME.fullmatch(path.name):
            continue
        with contextlib.suppress(OSError):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


class ConversationArchive:
    """The folder of saved conversations, and its only writer.

    Thread-safe: writes are serialised so an older snapshot never overwrites a newer one.
    The store calls ``save`` after every round and ``delete`` whenever it drops a
    conversation (reset, eviction, TTL), so the folder holds exactly what the store keeps.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def save(self, conv: Conversation) -> Path:
        """Persist ``conv`` (pass a snapshot when the original may grow meanwhile)."""
        with self._lock:
            return save_conversation(conv, self.directory)

    def delete(self, conv_id: str) -> bool:
        """Remove ``conv_id``'s saved state. False when none was saved.

        Renamed away first, so an interrupted delete never leaves a half-deleted conversation
        that would load as corrupt.
        """
        with self._lock:
            folder = self.directory / safe_name(conv_id)
            if not folder.exists():
                return False
            trash = _tmp_path(self.directory)
            os.rename(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
            return True

    def load_recent(self, limit: int) -> list[Conversation]:
        """The ``limit`` most recently saved conversations, oldest first.

        Only their JSON is read to rank them; frames are decoded only for the kept ones, and
        the older ones are deleted (a store of ``limit`` conversations would evict them at
        once). A folder that cannot be read is logged and skipped: one damaged conversation
        must not stop the node from starting.
        """
        if not self.directory.is_dir():
            return []
        with self._lock:
            _remove_leftovers(self.directory)
            ranked: list[tuple[float, Path]] = []
            for folder in sorted(self.directory.iterdir()):
                if not folder.is_dir() or folder.name.startswith("."):
                    continue
                data = _read_json(folder / _JSON_NAME) or {}
                saved_at = data.get("saved_at_unix", 0.0)
                ranked.append((saved_at if isinstance(saved_at, int | float) else 0.0, folder))
            ranked.sort(key=lambda item: item[0])
            cut = max(0, len(ranked) - limit)
            drop, keep = ranked[:cut], ranked[cut:]
            for _, folder in drop:
                _LOG.info("dropping saved conversation %s (over max_conversations)", folder.name)
                shutil.rmtree(folder, ignore_errors=True)
            loaded = []
            for _, folder in keep:
                try:
                    loaded.append(load_conversation(folder))
                except CorruptConversationError as err:
                    _LOG.warning("skipping saved conversation folder %s: %s", folder, err)
            return loaded
