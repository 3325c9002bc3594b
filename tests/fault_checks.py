"""What every fault test checks at its end: the state file is valid and no work was lost.

"Nothing lost" is checked with git itself: every commit that existed before the run still
exists, every ref that existed still points where it pointed, and the user's checkout (HEAD,
index, working tree) is as it was, apart from the team state file the run exists to write. A
run may add refs (its feature and task branches); it may never move or delete one it did not
create.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent_team.state import STATE_RELATIVE_PATH, TeamState, validate_state

from tests.fault_helpers import Preserved, preserve
from tests.fault_helpers import assert_nothing_lost as assert_nothing_lost_or_moved_forward
from tests.orchestration_helpers import file_at, git, tasks_by_id

__all__ = ["assert_nothing_lost", "contains_any", "file_at", "git", "git_snapshot",
           "new_branches", "read_valid_state", "tasks_by_id", "write_config"]

git_snapshot = preserve


def assert_nothing_lost(repo: Path, before: Preserved) -> Preserved:
    """`fault_helpers.assert_nothing_lost`, and stricter: no existing ref moves at all.

    These runs never auto-merge, so even a fast-forward of a user's branch would be a bug.
    """
    after = assert_nothing_lost_or_moved_forward(repo, before)
    moved = {ref: (sha, after.refs.get(ref)) for ref, sha in before.refs.items()
             if after.refs.get(ref) != sha}
    assert not moved, f"refs moved by the run: {moved}"
    return after


def new_branches(before: Preserved, after: Preserved) -> list[str]:
    return sorted(ref.removeprefix("refs/heads/") for ref in after.refs
                  if ref.startswith("refs/heads/") and ref not in before.refs)


def read_valid_state(repo: Path) -> dict[str, Any]:
    """The state file, read by TeamState and validated against the schema once more."""
    path = repo / STATE_RELATIVE_PATH
    state = TeamState(path).read()
    validate_state(json.loads(path.read_text(encoding="utf-8")), path)
    return state


def write_config(path: Path, **sections: Any) -> Path:
    """An orchestrator-config.json with tiny retry delays, plus the given sections."""
    data: dict[str, Any] = {"retry": {"base_delay_seconds": 0.001, "max_delay_seconds": 0.01,
                                      "retry_after_ceiling_seconds": 0.05}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def contains_any(text: str, needles: Iterable[str]) -> list[str]:
    return [needle for needle in needles if needle in text]
