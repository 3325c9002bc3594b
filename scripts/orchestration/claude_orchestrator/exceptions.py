"""The document's exceptions: the engine's own hierarchy under the document's names."""

from __future__ import annotations

from agent_team.co.run_engine import WorkerError
from agent_team.errors import AgentTeamError as OrchestrationError
from agent_team.errors import ConfigError as ConfigurationError

__all__ = ["ConfigurationError", "OrchestrationError", "WorkerError"]
