"""The delegation API: `from orchestrator import ClaudeOrchestrator, quick_delegate`.

See README.md ("Delegating jobs to a worker pool") and `agent_team/jobs/`.
"""

from __future__ import annotations

from agent_team.jobs.delegation import ClaudeOrchestrator, quick_delegate
from agent_team.jobs.errors import WaitTimeout

__all__ = ["ClaudeOrchestrator", "WaitTimeout", "quick_delegate"]
