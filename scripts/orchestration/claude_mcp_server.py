#!/usr/bin/env python3
"""MCP server (stdio) for delegating jobs: `python claude_mcp_server.py [--project-dir DIR]`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_team.jobs.mcp_server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
