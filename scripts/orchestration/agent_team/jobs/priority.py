"""Priorities of the job store: the engine's one reading (`agent_team.priority`)."""

from __future__ import annotations

from ..priority import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    PRIORITY_WORDS,
    BadPriority,
    parse_priority,
    priority_word,
)

__all__ = ["DEFAULT_PRIORITY", "MAX_PRIORITY", "MIN_PRIORITY", "PRIORITY_WORDS", "BadPriority",
           "parse_priority", "priority_word"]
