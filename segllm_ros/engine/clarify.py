"""Placeholder until the iface branch lands (replaced there)."""

from __future__ import annotations


def clarifying_question(query: str, boxes: list[tuple[int, int, int, int]]) -> str:
    sides = ["on the left", "on the right"] if len(boxes) == 2 else []
    parts = ", ".join(f"{i} {sides[i - 1]}" if sides else str(i) for i in range(1, len(boxes) + 1))
    return f"{len(boxes)} objects match '{query}': {parts}. Which one?"


def resolve_clarification(reply: str, boxes: list[tuple[int, int, int, int]]) -> int | None:
    words = reply.lower().split()
    if "left" in words:
        return 0
    if "right" in words:
        return len(boxes) - 1
    for i, w in enumerate(("first", "second", "third", "fourth")):
        if w in words and i < len(boxes):
            return i
    return None
