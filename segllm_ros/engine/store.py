"""The bounded set of live conversations, and the one owner of their memory and disk.

A long-running node must keep memory flat under any load: ``max_conversations`` evicts the
least recently used, ``ttl_s`` evicts idle ones, ``max_rounds`` refuses further rounds. Every
way a conversation ends (reset, eviction, expiry) goes through ``_drop``, which deletes its
saved state (when an archive is attached) and tells the listeners (the engine drops its caches
there), so memory, disk and caches never disagree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from segllm_ros.engine.history import Conversation, Frame, Round
from segllm_ros.engine.persistence import ConversationArchive

__all__ = ["ConversationGoneError", "ConversationStore"]

_LOG = logging.getLogger(__name__)

# How many ended conversations are remembered to explain a later reference to them.
_REMEMBERED_ENDINGS = 256


class ConversationGoneError(RuntimeError):
    """The conversation ended (reset, evicted, expired) while one of its rounds was running;
    that round is not recorded."""


class ConversationStore:
    """Thread-safe map from conversation id to ``Conversation``, bounded in count and time."""

    def __init__(
        self,
        max_conversations: int = 16,
        max_rounds: int = 32,
        ttl_s: float = 0.0,
        archive: ConversationArchive | None = None,
        clock: Callable[[], float] = time.monotonic,
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
        self.archive = archive
        self._clock = clock
        self._lock = threading.RLock()
        # Orders disk writes against deletes: a round saved while its conversation is reset
        # must not bring it back on disk.
        self._io_lock = threading.Lock()
        self._items: OrderedDict[str, Conversation] = OrderedDict()
        self._endings: OrderedDict[str, str] = OrderedDict()
        self._listeners: list[Callable[[str], None]] = []

    def on_drop(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(conversation_id)`` whenever a conversation ends, for any reason."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ lookup
    def get(self, conv_id: str) -> Conversation | None:
        """The live conversation ``conv_id`` (marked used), or None."""
        with self._lock:
            ended = self._expire_locked()
            conv = self._items.get(conv_id)
            if conv is not None:
                self._touch_locked(conv)
        self._finish_drops(ended)
        return conv

    def new_conversation(self, conv_id: str) -> Conversation:
        """An empty conversation for ``conv_id``, not yet in the store: it enters with its
        first recorded round, so a refused first query leaves nothing behind."""
        if not isinstance(conv_id, str):
            raise TypeError(f"conversation id must be a str, got {type(conv_id).__name__}")
        return Conversation(id=conv_id, max_rounds=self.max_rounds)

    def why_gone(self, conv_id: str) -> str | None:
        """How ``conv_id`` ended, when it is not live but was recently ("reset", "evicted
        ...", "expired ..."); None when it never existed or is live."""
        with self._lock:
            return None if conv_id in self._items else self._endings.get(conv_id)

    def __contains__(self, conv_id: object) -> bool:
        with self._lock:
            return conv_id in self._items

    def ids(self) -> list[str]:
        """Conversation ids, least recently used first."""
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # ---------------------------------------------------------------- mutation
    def add_round(self, conv: Conversation, round: Round, frame: Frame) -> None:
        """Record ``round`` in ``conv`` and persist it.

        ``conv`` is the live conversation or, for a first round, one from
        ``new_conversation``. Raises ``ConversationGoneError`` when the conversation ended
        while the round ran: recording it would resurrect a reset conversation.
        """
        with self._lock:
            ended = self._expire_locked()
            live = self._items.get(conv.id)
            if live is not conv and (live is not None or conv.num_rounds > 0):
                how = self._endings.get(conv.id, "replaced")
                raise ConversationGoneError(
                    f"conversation {conv.id!r} was {how} while this round ran; "
                    "the round was not recorded"
                )
            conv.add_round(round, frame)
            if live is None:
                self._items[conv.id] = conv
                self._endings.pop(conv.id, None)
            self._touch_locked(conv)
            while len(self._items) > self.max_conversations:
                oldest = next(iter(self._items.values()))
                ended.append(
                    self._remove_locked(
                        oldest.id, f"evicted (max_conversations={self.max_conversations} reached)"
                    )
                )
            snapshot = conv.snapshot() if self.archive is not None else None
        self._finish_drops(ended)
        if snapshot is not None:
            self._save(conv, snapshot)

    def replace_last_round(self, conv_id: str, round: Round) -> None:
        """Overwrite the last recorded round of ``conv_id`` (same index and frame), e.g.
        with a corrected mask, and persist it."""
        with self._lock:
            conv = self._items[conv_id]
            last = conv.rounds[-1]
            if (round.index, round.frame_key) != (last.index, last.frame_key):
                raise ValueError(
                    f"round {round.index} on {round.frame_key!r} cannot replace "
                    f"round {last.index} on {last.frame_key!r}"
                )
            conv.rounds[-1] = round
            snapshot = conv.snapshot() if self.archive is not None else None
        if snapshot is not None:
            self._save(conv, snapshot)

    def reset(self, conv_id: str = "") -> int:
        """End one conversation (all when ``conv_id`` is empty) and delete its saved state;
        returns how many ended."""
        with self._lock:
            ids = [conv_id] if conv_id else list(self._items)
            ended = [self._remove_locked(i, "reset") for i in ids if i in self._items]
        self._finish_drops(ended)
        return len(ended)

    def restore(self) -> int:
        """Load the saved conversations this store can hold (the most recently saved);
        returns how many. Conversations already live are newer and kept."""
        if self.archive is None:
            return 0
        count = 0
        with self._lock:
            for conv in self.archive.load_recent(self.max_conversations):
                if conv.id in self._items:
                    continue
                conv.max_rounds = self.max_rounds
                self._items[conv.id] = conv
                self._touch_locked(conv)
                count += 1
        return count

    # --------------------------------------------------------------- internals
    def _touch_locked(self, conv: Conversation) -> None:
        conv.last_used = self._clock()
        self._items.move_to_end(conv.id)

    def _expire_locked(self) -> list[str]:
        if self.ttl_s <= 0:
            return []
        now = self._clock()
        idle = [c.id for c in self._items.values() if now - c.last_used > self.ttl_s]
        return [
            self._remove_locked(i, f"expired (idle longer than conversation_ttl={self.ttl_s:g} s)")
            for i in idle
        ]

    def _remove_locked(self, conv_id: str, how: str) -> str:
        conv = self._items.pop(conv_id)
        self._endings[conv_id] = how
        while len(self._endings) > _REMEMBERED_ENDINGS:
            self._endings.popitem(last=False)
        if how != "reset":
            _LOG.info("conversation %r %s after %d round(s)", conv_id, how, conv.num_rounds)
        return conv_id

    def _save(self, conv: Conversation, snapshot: Conversation) -> None:
        """Write ``snapshot`` unless ``conv`` ended meanwhile (its folder is deleted then)."""
        with self._io_lock:
            with self._lock:
                live = self._items.get(conv.id) is conv
            if not live:
                return
            try:
                self.archive.save(snapshot)
            except OSError:
                _LOG.exception("could not save conversation %r", conv.id)

    def _finish_drops(self, ended: list[str]) -> None:
        """Outside the lock: delete saved state and notify listeners of ended conversations."""
        for conv_id in ended:
            if self.archive is not None:
                with self._io_lock:
                    try:
                        self.archive.delete(conv_id)
                    except OSError:
                        _LOG.exception("could not delete the saved state of %r", conv_id)
            for listener in self._listeners:
                listener(conv_id)
