"""Multi-round conversation state: rounds, their masks and the frames they were made on.

SegLLM answers round N conditioned on the outputs of earlier rounds, so the node must keep
each conversation's history (masks as COCO RLE, boxes, answers) and the frames the masks
belong to. The store bounds that memory (LRU, TTL, rounds per conversation), is safe to use
from several executor threads, and can persist conversations to disk so a restarted node
continues them with the same history.
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
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segllm_ros.engine.references import BadReferenceError, describe_rounds
from segllm_ros.interface.mask_codec import mask_to_box, mask_to_rle, rle_to_mask

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Conversation",
    "ConversationFullError",
    "ConversationStore",
    "CorruptConversationError",
    "Frame",
    "Round",
    "delete_saved_conversation",
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


class ConversationFullError(ValueError):
    """A conversation reached the round limit; the operator must reset it.

    History is never dropped silently: a later round may refer to any earlier one.
    """


class CorruptConversationError(ValueError):
    """A saved conversation cannot be read back (bad JSON, missing or altered frame)."""


def _digest(image: np.ndarray) -> str:
    """Content hash of an image, shape included (same bytes, other shape = other image)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((image.shape, image.dtype.str)).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Frame:
    """A camera image a round was answered on.

    ``key`` identifies the frame within a conversation; rounds refer to frames by key so one
    image shared by many rounds is stored once. The image is exposed read-only so a cached
    frame cannot be altered behind the history's back.
    """

    image: np.ndarray
    stamp_ns: int
    frame_id: str
    key: str = ""

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            raise ValueError(f"frame image must be an HxWx3 array, got shape {shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"frame image must be uint8 RGB, got {image.dtype}")
        view = image.view()
        view.flags.writeable = False
        object.__setattr__(self, "image", view)
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        if not self.key:
            object.__setattr__(self, "key", self.make_key(view, self.stamp_ns, self.frame_id))

    @staticmethod
    def make_key(image: np.ndarray, stamp_ns: int, frame_id: str) -> str:
        """``frame_id@stamp_ns``; a content hash when unstamped (stamp 0 is not unique)."""
        if stamp_ns:
            return f"{frame_id}@{int(stamp_ns)}"
        return f"{frame_id}#{_digest(image)[:16]}"

    @classmethod
    def create(cls, image: np.ndarray, stamp_ns: int, frame_id: str) -> Frame:
        """A frame keyed by ``make_key``."""
        return cls(image=image, stamp_ns=stamp_ns, frame_id=frame_id)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.image.nbytes)


@dataclass
class Round:
    """One question/answer of a conversation and the mask it produced.

    The mask is kept as COCO RLE (compact, JSON-friendly); ``height``/``width`` let an
    empty result still produce a mask of the right size.
    """

    index: int
    query: str
    answer: str
    ref_rounds: list[int]
    mask_rle: dict | None
    box: tuple[int, int, int, int] | None
    score: float
    frame_key: str
    height: int = 0
    width: int = 0

    def __post_init__(self) -> None:
        if int(self.index) < 1:
            raise ValueError(f"round index is 1-based, got {self.index}")
        self.index = int(self.index)
        self.ref_rounds = [int(r) for r in self.ref_rounds]
        bad = [r for r in self.ref_rounds if not 1 <= r < self.index]
        if bad:
            raise BadReferenceError(
                f"round {self.index} cannot refer to round {bad[0]}: "
                f"only rounds 1..{self.index - 1} come before it"
            )
        self.score = float(self.score)
        if self.box is not None:
            if len(self.box) != 4:
                raise ValueError(f"box must be (x0, y0, x1, y1), got {self.box!r}")
            self.box = tuple(int(v) for v in self.box)  # type: ignore[assignment]
        if self.mask_rle is not None:
            rle = dict(self.mask_rle)
            if isinstance(rle.get("counts"), bytes):
                rle["counts"] = rle["counts"].decode("ascii")
            height, width = (int(v) for v in rle["size"])
            rle["size"] = [height, width]
            self.mask_rle = rle
            if (self.height or self.width) and (self.height, self.width) != (height, width):
                raise ValueError(
                    f"mask size {height}x{width} differs from round size {self.height}x{self.width}"
                )
            self.height, self.width = height, width
        self.height, self.width = int(self.height), int(self.width)

    @classmethod
    def from_mask(
        cls,
        index: int,
        query: str,
        answer: str,
        ref_rounds: list[int],
        mask: np.ndarray | None,
        score: float,
        frame: Frame,
    ) -> Round:
        """Encode a dense mask (RLE + box) for a round answered on ``frame``."""
        if mask is None:
            rle, box = None, None
        else:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (frame.height, frame.width):
                raise ValueError(
                    f"mask shape {mask.shape} differs from frame {frame.height}x{frame.width}"
                )
            rle, box = mask_to_rle(mask), mask_to_box(mask)
        return cls(
            index=index,
            query=query,
            answer=answer,
            ref_rounds=list(ref_rounds),
            mask_rle=rle,
            box=box,
            score=score,
            frame_key=frame.key,
            height=frame.height,
            width=frame.width,
        )

    def mask(self) -> np.ndarray:
        """The round's mask as HxW bool (all False when the round found nothing)."""
        if self.mask_rle is None:
            return np.zeros((self.height, self.width), dtype=bool)
        return np.asarray(rle_to_mask(self.mask_rle), dtype=bool)

    def history_bytes(self) -> int:
        """Approximate bytes this round keeps (strings and RLE counts)."""
        size = len(self.query.encode()) + len(self.answer.encode())
        if self.mask_rle is not None:
            size += len(self.mask_rle.get("counts", ""))
        return size

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "query": self.query,
            "answer": self.answer,
            "ref_rounds": list(self.ref_rounds),
            "mask_rle": self.mask_rle,
            "box": list(self.box) if self.box is not None else None,
            "score": self.score,
            "frame_key": self.frame_key,
            "height": self.height,
            "width": self.width,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Round:
        return cls(
            index=data["index"],
            query=str(data["query"]),
            answer=str(data["answer"]),
            ref_rounds=list(data["ref_rounds"]),
            mask_rle=data["mask_rle"],
            box=tuple(data["box"]) if data["box"] is not None else None,
            score=data["score"],
            frame_key=str(data["frame_key"]),
            height=data["height"],
            width=data["width"],
        )


@dataclass(eq=False)
class Conversation:
    """The history of one conversation.

    Not locked itself: the node serialises rounds of one conversation, and the store's
    methods take its lock around mutations it performs. ``runtime`` is an opaque slot for
    the inference engine's caches (KV cache, image features); it is never saved and is
    dropped by ``invalidate_runtime`` (reset, eviction, model reload).
    """

    id: str
    rounds: list[Round] = field(default_factory=list)
    frames: dict[str, Frame] = field(default_factory=dict)
    pinned_frame_key: str | None = None
    last_used: float = 0.0
    max_rounds: int = 0
    runtime: Any = field(default=None, repr=False)

    @property
    def num_rounds(self) -> int:
        return len(self.rounds)

    @property
    def pinned_frame(self) -> Frame | None:
        """The frame of round 1: the image the LLM saw (once, in round 1)."""
        if self.pinned_frame_key is None:
            return None
        return self.frames.get(self.pinned_frame_key)

    def round(self, i: int) -> Round:
        """Round ``i`` (1-based)."""
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise BadReferenceError(f"round number must be an integer, got {i!r}")
        i = int(i)
        if i < 1:
            raise BadReferenceError(f"round {i} does not exist: rounds are numbered from 1")
        if i > len(self.rounds):
            raise BadReferenceError(
                f"round {i} does not exist: "
                f"this conversation has {describe_rounds(len(self.rounds))}"
            )
        return self.rounds[i - 1]

    def frame_of(self, i: int) -> Frame:
        """The frame round ``i`` was answered on."""
        return self.frames[self.round(i).frame_key]

    def ensure_room(self) -> None:
        """Raise ``ConversationFullError`` when no further round may be added."""
        if self.max_rounds and len(self.rounds) >= self.max_rounds:
            raise ConversationFullError(
                f"conversation {self.id!r} already has {len(self.rounds)} rounds, the limit; "
                "reset it to start a new conversation"
            )

    def add_round(self, round: Round, frame: Frame) -> None:
        """Append the next round, answered on ``frame``.

        Raises ``ConversationFullError`` at the round limit rather than forgetting old
        rounds, since a later query may refer to any of them.
        """
        self.ensure_room()
        expected = len(self.rounds) + 1
        if round.index != expected:
            raise ValueError(f"next round of {self.id!r} is {expected}, got index {round.index}")
        if not round.frame_key:
            round.frame_key = frame.key
        if round.frame_key != frame.key:
            raise ValueError(f"round frame_key {round.frame_key!r} is not frame {frame.key!r}")
        if not round.height and not round.width:
            round.height, round.width = frame.height, frame.width
        if (round.height, round.width) != (frame.height, frame.width):
            raise ValueError(
                f"round size {round.height}x{round.width} differs from frame "
                f"{frame.height}x{frame.width}"
            )
        known = self.frames.get(frame.key)
        if known is not None and known.image.shape != frame.image.shape:
            raise ValueError(f"frame key {frame.key!r} already names an image of another size")
        if known is None:
            self.frames[frame.key] = frame
        if self.pinned_frame_key is None:
            self.pinned_frame_key = frame.key
        self.rounds.append(round)

    def invalidate_runtime(self) -> None:
        """Drop the engine's caches (they are rebuilt from the history on next use)."""
        self.runtime = None

    def history_bytes(self) -> int:
        """Approximate bytes of stored history: RLE strings, texts and frame pixels."""
        return sum(r.history_bytes() for r in self.rounds) + sum(
            f.nbytes for f in self.frames.values()
        )

    def snapshot(self) -> Conversation:
        """A copy sharing the (immutable) frames, safe to save while the original grows."""
        return Conversation(
            id=self.id,
            rounds=[Round.from_json(r.to_json()) for r in self.rounds],
            frames=dict(self.frames),
            pinned_frame_key=self.pinned_frame_key,
            last_used=self.last_used,
            max_rounds=self.max_rounds,
        )


# --------------------------------------------------------------------------- persistence


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
        digest = _digest(frame.image)
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
    return _load(Path(path))[0]


def _load(path: Path) -> tuple[Conversation, float]:
    """``load_conversation`` plus the wall time it was saved at (0 when unknown)."""
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
            _require(_digest(image) == entry["digest"], f"{file}: frame content does not match")
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
        saved_at = data.get("saved_at_unix", 0.0)
    except CorruptConversationError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CorruptConversationError(f"{json_path}: invalid content ({err!r})") from None
    return conv, float(saved_at) if isinstance(saved_at, int | float) else 0.0


def delete_saved_conversation(conv_id: str, directory: Path | str) -> bool:
    """Remove a saved conversation (on reset). False when none was saved.

    Renamed away first, so an interrupted delete never leaves a half-deleted conversation
    that would load as corrupt.
    """
    folder = Path(directory) / safe_name(conv_id)
    if not folder.exists():
        return False
    trash = _tmp_path(Path(directory))
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return True


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


# --------------------------------------------------------------------------- store


class ConversationStore:
    """Bounded, thread-safe map from conversation id to ``Conversation``.

    Bounds keep a long-running node's memory flat: ``max_conversations`` evicts the least
    recently used, ``ttl_s`` evicts idle ones (0 = never), ``max_rounds`` refuses further
    rounds (``ConversationFullError``). Evicted or reset conversations lose their runtime
    caches at once. ``on_evict`` is called (outside the lock) with each evicted conversation.
    """

    def __init__(
        self,
        max_conversations: int = 16,
        max_rounds: int = 32,
        ttl_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[Conversation], None] | None = None,
    ) -> None:
        if max_conversations < 1:
            raise ValueError(f"max_conversations must be >= 1, got {max_conversations}")
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s}")
        self.max_conversations = int(max_conversations)
        self.max_rounds = int(max_rounds)
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._on_evict = on_evict
        self._lock = threading.RLock()
        # Serialises disk writes so an older snapshot never overwrites a newer one.
        self._io_lock = threading.Lock()
        self._items: OrderedDict[str, Conversation] = OrderedDict()

    # -- internals (call with self._lock held) --------------------------------------------

    def _expired(self, conv: Conversation, now: float) -> bool:
        return self.ttl_s > 0 and now - conv.last_used > self.ttl_s

    def _prune_locked(self, now: float) -> list[Conversation]:
        evicted = [c for c in self._items.values() if self._expired(c, now)]
        for conv in evicted:
            del self._items[conv.id]
        while len(self._items) > self.max_conversations:
            evicted.append(self._items.popitem(last=False)[1])
        for conv in evicted:
            conv.invalidate_runtime()
        return evicted

    def _touch_locked(self, conv: Conversation, now: float) -> None:
        conv.last_used = now
        self._items.move_to_end(conv.id)

    def _get_or_create_locked(
        self, conv_id: str, now: float, evicted: list[Conversation]
    ) -> Conversation:
        if not isinstance(conv_id, str):
            raise TypeError(f"conversation id must be a str, got {type(conv_id).__name__}")
        conv = self._items.get(conv_id)
        if conv is None:
            conv = Conversation(id=conv_id, last_used=now, max_rounds=self.max_rounds)
            self._items[conv_id] = conv
            evicted += self._prune_locked(now)
        self._touch_locked(conv, now)
        return conv

    def _notify(self, evicted: list[Conversation]) -> None:
        for conv in evicted:
            _LOG.info("conversation %r evicted (%d rounds)", conv.id, conv.num_rounds)
            if self._on_evict is not None:
                try:
                    self._on_evict(conv)
                except Exception:
                    _LOG.exception("on_evict failed for conversation %r", conv.id)

    # -- public API -----------------------------------------------------------------------

    def get_or_create(self, conv_id: str) -> Conversation:
        """The conversation ``conv_id``, created empty if unknown; marks it used."""
        with self._lock:
            now = self._clock()
            evicted = self._prune_locked(now)
            conv = self._get_or_create_locked(conv_id, now, evicted)
        self._notify(evicted)
        return conv

    def get(self, conv_id: str) -> Conversation | None:
        """The conversation ``conv_id`` (marked used), or None if unknown or expired."""
        with self._lock:
            now = self._clock()
            evicted = self._prune_locked(now)
            conv = self._items.get(conv_id)
            if conv is not None:
                self._touch_locked(conv, now)
        self._notify(evicted)
        return conv

    def __contains__(self, conv_id: object) -> bool:
        with self._lock:
            return conv_id in self._items

    def add_round(self, conv_id: str, round: Round, frame: Frame) -> Conversation:
        """Append a round to ``conv_id`` (created if needed) under the store's lock."""
        with self._lock:
            now = self._clock()
            evicted = self._prune_locked(now)
            conv = self._get_or_create_locked(conv_id, now, evicted)
            conv.add_round(round, frame)
        self._notify(evicted)
        return conv

    def reset(self, conv_id: str) -> bool:
        """Forget ``conv_id``. False when it was unknown."""
        with self._lock:
            conv = self._items.pop(conv_id, None)
        if conv is None:
            return False
        conv.invalidate_runtime()
        return True

    def reset_all(self) -> int:
        """Forget every conversation; returns how many there were."""
        with self._lock:
            convs = list(self._items.values())
            self._items.clear()
        for conv in convs:
            conv.invalidate_runtime()
        return len(convs)

    def prune(self) -> int:
        """Evict idle (TTL) conversations now; returns how many."""
        with self._lock:
            evicted = self._prune_locked(self._clock())
        self._notify(evicted)
        return len(evicted)

    def ids(self) -> list[str]:
        """Conversation ids, least recently used first."""
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[Conversation]:
        with self._lock:
            return iter(list(self._items.values()))

    def total_history_bytes(self) -> int:
        """Approximate bytes of all stored history (for memory benchmarks)."""
        with self._lock:
            return sum(c.history_bytes() for c in self._items.values())

    def invalidate_runtimes(self) -> None:
        """Drop every conversation's engine caches (e.g. after the model was reloaded)."""
        with self._lock:
            for conv in self._items.values():
                conv.invalidate_runtime()

    # -- persistence ----------------------------------------------------------------------

    def save(self, conv_id: str, directory: Path | str) -> bool:
        """Persist one conversation. False when it is unknown (nothing written)."""
        with self._io_lock:
            with self._lock:
                conv = self._items.get(conv_id)
                snapshot = conv.snapshot() if conv is not None else None
            if snapshot is None:
                return False
            save_conversation(snapshot, directory)
            return True

    def save_all(self, directory: Path | str) -> int:
        """Persist every conversation; returns how many were saved."""
        with self._io_lock:
            with self._lock:
                snapshots = [c.snapshot() for c in self._items.values()]
            for snapshot in snapshots:
                save_conversation(snapshot, directory)
            return len(snapshots)

    def delete_saved(self, conv_id: str, directory: Path | str) -> bool:
        """Remove ``conv_id``'s saved state (on reset). False when none was saved."""
        with self._io_lock:
            return delete_saved_conversation(conv_id, directory)

    def load_all(self, directory: Path | str) -> int:
        """Load saved conversations (most recently saved win the LRU); returns how many.

        A folder that cannot be read is logged as a warning and skipped: one damaged
        conversation must not stop the node from starting. Conversations already in memory
        are newer than their saved copy and are kept.
        """
        directory = Path(directory)
        if not directory.is_dir():
            return 0
        with self._io_lock:
            _remove_leftovers(directory)
            loaded: list[tuple[float, Conversation]] = []
            for folder in sorted(directory.iterdir()):
                if not folder.is_dir() or folder.name.startswith("."):
                    continue
                try:
                    conv, saved_at = _load(folder)
                except Exception as err:
                    _LOG.warning("skipping saved conversation folder %s: %s", folder, err)
                    continue
                loaded.append((saved_at, conv))
        loaded.sort(key=lambda item: item[0])
        if len(loaded) > self.max_conversations:
            _LOG.info(
                "loading the %d most recently saved of %d conversations (max_conversations)",
                self.max_conversations,
                len(loaded),
            )
            loaded = loaded[-self.max_conversations :]
        count = 0
        with self._lock:
            now = self._clock()
            for _, conv in loaded:
                if conv.id in self._items:
                    continue
                conv.max_rounds = self.max_rounds
                conv.last_used = now
                self._items[conv.id] = conv
                count += 1
            evicted = self._prune_locked(now)
        self._notify(evicted)
        return count
