"""One reading of task priorities everywhere (plans, the job store, the delegation API):
integers 1-10 or the words high, medium, low.

The delegation guide uses 1-10 (10 most urgent); plans and people often say high/medium/low.
Both are accepted at every edge and stored as integers, so ordering is a plain SQL ORDER BY.
"""

from __future__ import annotations

from .errors import BadPriority
from .task_record import Priority

MIN_PRIORITY = 1
MAX_PRIORITY = 10
DEFAULT_PRIORITY = 5

#: Words people and plans use, mapped onto the 1-10 scale.
PRIORITY_WORDS = {
    "critical": 10,
    "urgent": 10,
    "high": 8,
    "medium": 5,
    "normal": 5,
    "low": 2,
}


def parse_priority(value: object) -> int:
    """The 1-10 priority `value` stands for; BadTaskInput saying what is accepted otherwise."""
    if value is None:
        return DEFAULT_PRIORITY
    if isinstance(value, bool):
        raise BadPriority(f"priority {value!r} is not valid: {_ACCEPTED}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in PRIORITY_WORDS:
            return PRIORITY_WORDS[word]
        if word.isdigit():
            value = int(word)
    if isinstance(value, int) and MIN_PRIORITY <= value <= MAX_PRIORITY:
        return value
    raise BadPriority(f"priority {value!r} is not valid: {_ACCEPTED}")


def priority_word(priority: int) -> Priority:
    """high / medium / low for an integer priority, for plans and short displays."""
    if priority >= 7:
        return "high"
    if priority >= 4:
        return "medium"
    return "low"


_ACCEPTED = (
    f"use an integer from {MIN_PRIORITY} to {MAX_PRIORITY} (10 most urgent) or one of "
    + ", ".join(sorted(PRIORITY_WORDS))
)
