"""One exception hierarchy for the whole engine.

Every error a person can act on says what was wrong, where, and what to do. Constructors never
log; the command-line entry points turn these into messages and exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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


class StuckEscalation(AgentStuck):
    """A nudged agent got stuck again; carries what the manager needs to give guidance.

    A subclass rather than attributes set on `AgentStuck`, so the fields are declared and
    typed, while `except AgentStuck` still catches it.
    """

    def __init__(self, reason: str, transcript_tail: Sequence[str] = ()) -> None:
        super().__init__(f"The agent got stuck even after a nudge: {reason}.")
        self.reason = reason
        self.transcript_tail = tuple(transcript_tail)


class UnknownTaskError(StateError, KeyError):
    """A helper was asked to change a task the state does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SandboxUnavailable(ConfigError):
    """Agents' commands cannot run: the sandbox is required and does not work here."""

    def __init__(self, message: str, *, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class GitConfigChanged(GitError):
    """The repository's git configuration changed during the run; it was put back."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


class IntegrityError(GitError):
    """Git is not where the orchestrator left it; nothing was committed or moved."""

    def __init__(self, message: str, *, worktree: Path | None, reason: str) -> None:
        super().__init__(message)
        self.worktree = worktree
        self.reason = reason


class CliAgentError(AgentTeamError):
    """A CLI worker failed its task: it exited non-zero, reported an error or timed out."""

    def __init__(self, message: str, *, backend: str, cli_exit_code: int | None = None,
                 timed_out: bool = False) -> None:
        super().__init__(message)
        self.backend = backend
        self.cli_exit_code = cli_exit_code
        self.timed_out = timed_out


class BadPriority(UserError):
    """A priority that is neither 1-10 nor one of the accepted words."""


class UnsafePath(OSError):
    """A path that leads through a link, out of its root, or to a file with other names."""
