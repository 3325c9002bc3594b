"""Subprocess side of the state concurrency test: append updates once the parent says go."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "orchestration"))

from agent_team.state import TeamState  # noqa: E402


def main(argv: list[str]) -> int:
    """Usage: state_worker.py STATE_FILE WORKER_NAME COUNT."""
    path, worker, count = argv[1], argv[2], int(argv[3])
    state = TeamState(path)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "go":
        return 2
    for index in range(count):
        state.append_update(worker, None, "progress", f"{worker}-{index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
