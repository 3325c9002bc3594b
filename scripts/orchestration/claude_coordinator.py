#!/usr/bin/env python3
"""Run N job workers: `python claude_coordinator.py 4 [--project-dir DIR] [--db URL]`.

Workers claim tasks from the job store (SQLite in the project by default, PostgreSQL for
several machines), run each in a worktree of the job's repository, merge it into the job's
branch and record the result. SIGTERM or Ctrl-C: running tasks finish; a second one stops
them and puts them back in the queue.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_team.jobs.cli import coordinator_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(coordinator_main())
