"""agent_team: the engine behind the simple and file-based orchestrators."""

from __future__ import annotations

__version__ = "0.1.0"
