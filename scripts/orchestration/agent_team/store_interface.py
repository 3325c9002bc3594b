"""The one store interface of a run: the state file (`TeamState`) and the job store's view of
one task (`jobs.run_store.JobRunStore`) both implement it, so the steps write through either.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class RunStore(Protocol):
    """What the steps need of a store: a validated copy, one transaction, sole ownership."""

    def read(self) -> dict[str, Any]:
        """A private copy of the team-communication document as it is now."""
        ...

    def update(self, fn: Callable[[dict[str, Any]], T]) -> T:
        """Run `fn(state)` in one transaction (validated, then saved) and return its result."""
        ...

    def exclusive(self) -> AbstractContextManager[None]:
        """Be the only writer while a run holds it."""
        ...

    def view(self, pick: Callable[[dict[str, Any]], T]) -> T:
        """A copy of one part of the document (`read` copies all of it)."""
        ...

    def record(self, *ops: dict[str, Any],
               pick: Callable[[dict[str, Any]], Any] | None = None) -> Any:
        """Apply small changes (`TeamState.apply_op` kinds: task, agent, turn, update, usage,
        merge, decisions) as one write; returns a copy of `pick(document)`."""
        ...
