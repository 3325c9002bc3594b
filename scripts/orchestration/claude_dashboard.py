#!/usr/bin/env python3
"""Live view of the job store: `python claude_dashboard.py [--db URL] [--once]`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_team.jobs.dashboard import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
