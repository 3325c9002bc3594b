"""One exception hierarchy for the whole engine.

Every error a person can act on says what was wrong, where, and what to do. Constructors never
log; the command-line entry points turn these into messages and exit codes.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BUDGET = 3
EXIT_INTERRUPTED = 130


class AgentTeamError(Exception):
    """Base class of every error raised on purpose by the engine."""

    exit_code = EXIT_FAILED


class UserError(AgentTeamError):
    """The person running the tool gave something wrong: flags, config, project, state file."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(UserError):
    """A config file or flag combination is invalid."""


class StateError(UserError):
    """The team state file cannot be read, parsed, validated or migrated."""


class StateLockedError(UserError):
    """Another orchestrator holds the run lock of this project."""


class GitError(AgentTeamError):
    """A git operation failed in a way the orchestrator cannot recover from."""


class CommitRefused(GitError):
    """A hook refused an agent's commit; the work was saved on `branch` at `sha` instead."""

    def __init__(self, message: str, *, branch: str, sha: str) -> None:
        super().__init__(message)
        self.branch = branch
        self.sha = sha


class NotAGitRepository(UserError):
    """The project directory is not a usable git repository."""


class PlanError(UserError):
    """The manager's plan stayed invalid after every allowed correction round."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors or [])


class ModelError(AgentTeamError):
    """Base class for problems talking to a model."""


class ModelAPIError(ModelError):
    """The provider answered with an error that retrying will not fix (or retries ran out)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, attempts: int = 1,
                 exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = attempts
        self.exit_code = exit_code


class ModelBehaviorError(ModelError):
    """The model replied with something the engine cannot use."""


class ScriptExhausted(ModelBehaviorError):
    """A scripted model was asked for more turns than its session file holds."""


class MissingDependency(UserError):
    """An optional SDK is not installed."""


class ToolError(AgentTeamError):
    """A tool call failed; the message goes back to the model as an error result."""


class MaxTurnsExceeded(AgentTeamError):
    """An agent used every turn it was allowed without finishing its task."""

    def __init__(self, message: str, *, turns: int) -> None:
        super().__init__(message)
        self.turns = turns


class AgentStuck(AgentTeamError):
    """An agent kept repeating itself and guidance did not help."""


class RunStopped(AgentTeamError):
    """The run was asked to stop: agents end at their next turn and their work is kept."""


class UsageLimitExceeded(RunStopped):
    """A token, cost or API-call budget would be exceeded (or a custom guard refused a call)."""

    exit_code = EXIT_BUDGET

    def __init__(self, message: str, *, limit: str = "", value: float = 0, maximum: float = 0):
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.maximum = maximum


class RunInterrupted(RunStopped):
    """The user pressed Ctrl-C: running agents stop at their next turn, work is committed."""

    exit_code = EXIT_INTERRUPTED
