#!/usr/bin/env python3
"""`co`, the agent team's command line: backlog, runs, checkpoints, quality, set-up.

    python scripts/orchestration/co.py --help
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_team.co.cli import main  # noqa: E402

if __name__ == "__main__":
    main(prog_name="co")
