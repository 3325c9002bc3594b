"""The default tools of role agents: files confined to one directory, commands, team updates.

The file tools are confined to the workspace (paths resolved without following links, see
`fsutil.open_beneath`); `run_command` runs what the agent asks inside the OS sandbox of
`sandbox.py` (the workspace writable, git read-only, no keys, no network by default). What a tool is
and how calls are dispatched lives in `toolbox.py`, running a process in `process.py`, and
the secret rule in `redaction.py`.
"""

from __future__ import annotations

import copy
import fnmatch
import io
import json
import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache, partial
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from jsonschema import Draft202012Validator

from .errors import SandboxUnavailable, ToolError, UnsafePath, UserError
from .fsutil import open_beneath, read_beneath, write_beneath
from .models import ToolSpec
from .process import interpreter_argv
from .sandbox import SandboxPolicy, run_sandboxed, sandbox_environment
from .toolbox import (
    DEFAULT_MAX_OUTPUT_CHARS,
    Tool,
    Toolbox,
    ToolResult,
    define_tool,
    schema_errors,
)

DEFAULT_COMMAND_TIMEOUT = 120.0
DEFAULT_MAX_COMMAND_TIMEOUT = 600.0
MAX_LIST_ENTRIES = 400
MAX_SEARCH_MATCHES = 200
MAX_SEARCH_FILE_BYTES = 2_000_000
MAX_LINE_CHARS = 2_000
MAX_MATCH_LINE_CHARS = 240
REPORT_SCHEMA_PATH = Path(__file__).parent / "schemas" / "agent-report.schema.json"

#: Directories list_files and search_files do not descend into (a named path still works).
SKIPPED_DIRS = frozenset(
    {".git", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache",
     ".ruff_cache", ".tox"}
)

UpdateCallback = Callable[[str, str, "dict[str, Any] | None"], None]

__all__ = [
    "UpdateCallback",
    "Workspace",
    "build_toolbox",
    "edit_file",
    "finish_task",
    "list_files",
    "load_report_schema",
    "post_update",
    "read_file",
    "report_errors",
    "run_command",
    "search_files",
    "write_file",
]


# -- Workspace -------------------------------------------------------------------------------


def _parts_fold(path: PurePosixPath | Path) -> tuple[str, ...]:
    return tuple(part.casefold() for part in path.parts)


class Workspace:
    """One directory an agent may work in; every file path goes through `resolve`."""

    def __init__(self, root: Path, *, protected: Sequence[str] = (".git", ".ai-agents")) -> None:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"Workspace root {root} is not a directory.")
        self.root = Path(os.path.realpath(root))
        self.protected = tuple(_parts_fold(PurePosixPath(p)) for p in protected)

    def resolve(self, path: str, *, write: bool = False) -> Path:
        """Return the real path inside the workspace for `path`, or raise ToolError.

        Symlinks are resolved before the confinement check, so a link planted in the
        workspace (or a linked parent directory) cannot lead outside it.
        """
        self.check_present()
        if not isinstance(path, str) or not path.strip():
            raise ToolError("The path is empty. Use a path relative to the workspace root.")
        if "\0" in path:
            raise ToolError(f"The path {path!r} contains a NUL byte.")
        if os.path.isabs(path) or PureWindowsPath(path).is_absolute() or path.startswith("~"):
            raise ToolError(
                f"The path {path!r} is absolute. Use a path relative to the workspace root, "
                "e.g. 'src/app.py'."
            )
        lexical = PurePosixPath(os.path.normpath(path))
        if lexical.parts and lexical.parts[0] == "..":
            raise ToolError(
                f"The path {path!r} leads outside the workspace. Every path must stay inside "
                "the workspace root."
            )
        try:
            real = Path(os.path.realpath(self.root / path))
        except OSError as exc:  # a link changed while it was being read
            raise ToolError(f"The path {path!r} changed while it was being resolved "
                            f"({exc.strerror}); try again.") from None
        if real != self.root and self.root not in real.parents:
            raise ToolError(
                f"The path {path!r} resolves outside the workspace (through a symbolic link). "
                "Only files inside the workspace can be used."
            )
        for parts in (_parts_fold(PurePosixPath(path)), _parts_fold(real.relative_to(self.root))):
            if ".git" in parts:
                raise ToolError(
                    f"The path {path!r} is inside git internals (.git), which agents may not "
                    "use. The orchestrator handles git."
                )
            if write and any(parts[: len(p)] == p for p in self.protected):
                raise ToolError(
                    f"The path {path!r} is under a protected directory "
                    f"({', '.join('/'.join(p) for p in self.protected)}) that only the "
                    "orchestrator writes. Write somewhere else."
                )
        return real

    def check_present(self) -> None:
        """Refuse to work once the root is gone, rather than quietly re-creating it.

        A deleted worktree re-created by write_file would be a plain directory inside the
        user's repository, where git would then act on the user's checkout.
        """
        if not self.root.is_dir():
            raise ToolError(
                f"The workspace {self.root} no longer exists (it was deleted, perhaps by a "
                "command you ran). Nothing more can be done in it: call finish_task with status "
                "failed and say what happened."
            )

    def relative(self, path: Path) -> str:
        """The workspace-relative POSIX form of a path under the root, as tools print it."""
        rel = path.relative_to(self.root).as_posix()
        return rel if rel != "." else "."


# -- File tools ------------------------------------------------------------------------------


def _open_text(workspace: Workspace, real: Path, path: str) -> io.TextIOWrapper:
    """Open a workspace file for reading through `open_beneath` (no link, one hard link)."""
    try:
        fd = open_beneath(workspace.root, workspace.relative(real), os.O_RDONLY)
    except UnsafePath as exc:
        raise ToolError(f"{path} cannot be read: {exc}.") from None
    handle = os.fdopen(fd, "rb")
    if b"\0" in handle.peek(8192)[:8192]:
        size = os.fstat(fd).st_size
        handle.close()
        raise ToolError(f"{path} is a binary file ({size:,} bytes).")
    return io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="")


def _regular_file(workspace: Workspace, path: str) -> Path:
    real = workspace.resolve(path)
    if real.is_dir():
        raise ToolError(f"{path} is a directory. Use list_files to see what it holds.")
    if not real.exists():
        raise ToolError(f"{path} does not exist. Use list_files to find the right path.")
    if not real.is_file():
        raise ToolError(f"{path} is not a regular file.")
    return real


def read_file(
    workspace: Workspace, max_chars: int, path: str, offset: int = 1, limit: int = 2000
) -> str:
    """Return lines from `offset`, stopping early to fit the output budget and saying so."""
    real = _regular_file(workspace, path)
    budget = max(max_chars - 200, 1000)
    lines: list[str] = []
    used = 0
    more = False
    try:
        with _open_text(workspace, real, path) as handle:
            for number, line in enumerate(handle, start=1):
                if number < offset:
                    continue
                if len(lines) >= limit or (lines and used + len(line) > budget):
                    more = True
                    break
                if len(line) > MAX_LINE_CHARS:
                    line = f"{line[:MAX_LINE_CHARS]} [... line cut at {MAX_LINE_CHARS} chars]\n"
                lines.append(line)
                used += len(line)
    except OSError as exc:
        raise ToolError(f"Could not read {path}: {exc.strerror or exc}.") from None
    if not lines:
        return f"[{path} is empty]" if offset <= 1 else f"[{path} has fewer than {offset} lines]"
    text = "".join(lines)
    if more or offset > 1:
        last = offset + len(lines) - 1
        text += f"\n[showing lines {offset}-{last} of {path}"
        text += f"; call read_file with offset={last + 1} to continue]" if more else "; end]"
    return text


def write_file(workspace: Workspace, path: str, content: str) -> str:
    """Create or replace a whole file, creating parent directories."""
    real = workspace.resolve(path, write=True)
    if real.is_dir():
        raise ToolError(f"{path} is a directory; give a file path.")
    existed = real.exists()
    try:
        write_beneath(workspace.root, workspace.relative(real), content.encode("utf-8"))
    except UnsafePath as exc:
        raise ToolError(f"{path} cannot be written: {exc}.") from None
    except OSError as exc:
        raise ToolError(f"Could not write {path}: {exc.strerror or exc}.") from None
    lines = len(content.splitlines())
    return f"{'Replaced' if existed else 'Created'} {path} ({lines} lines, {len(content)} chars)."


def edit_file(workspace: Workspace, path: str, old: str, new: str) -> str:
    """Replace one exact, unique occurrence, so an edit never lands in the wrong place."""
    real = _regular_file(workspace, path)
    workspace.resolve(path, write=True)
    if not old:
        raise ToolError("old is empty. Give the exact text to replace, or use write_file.")
    relative = workspace.relative(real)
    try:
        text = read_beneath(workspace.root, relative).decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{path} is not UTF-8 text; edit_file cannot change it.") from None
    except UnsafePath as exc:
        raise ToolError(f"{path} cannot be edited: {exc}.") from None
    count = text.count(old)
    if count == 0:
        raise ToolError(
            f"old was not found in {path}. Read the file and copy the exact text, including "
            "whitespace and indentation."
        )
    if count > 1:
        raise ToolError(
            f"old occurs {count} times in {path}; it must be unique. Include more surrounding "
            "lines in old (and new) so it matches exactly once."
        )
    try:
        write_beneath(workspace.root, relative, text.replace(old, new, 1).encode("utf-8"))
    except UnsafePath as exc:
        raise ToolError(f"{path} cannot be edited: {exc}.") from None
    return f"Edited {path}: replaced 1 occurrence ({len(old)} chars -> {len(new)} chars)."


def _walk_files(start: Path) -> Iterator[Path]:
    """Files under `start`, not descending into SKIPPED_DIRS or linked directories."""
    if start.is_file():
        yield start
        return
    for directory, dirnames, filenames in os.walk(start):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            if name != ".git":
                yield Path(directory) / name


def list_files(workspace: Workspace, path: str = ".", pattern: str | None = None) -> str:
    """List files recursively; `pattern` is a glob on the name or the relative path."""
    start = workspace.resolve(path)
    if not start.exists():
        raise ToolError(f"{path} does not exist. Try list_files with path '.'.")
    found = sorted(
        rel
        for rel in map(workspace.relative, _walk_files(start))
        if not pattern
        or fnmatch.fnmatch(PurePosixPath(rel).name, pattern)
        or fnmatch.fnmatch(rel, pattern)
    )
    if not found:
        return f"No files under {path}" + (f" match {pattern!r}." if pattern else ".")
    shown = found[:MAX_LIST_ENTRIES]
    if len(found) > len(shown):
        hidden = len(found) - len(shown)
        shown.append(f"[... {hidden} more files not shown; narrow path or pattern]")
    return "\n".join(shown)


def search_files(workspace: Workspace, pattern: str, path: str = ".") -> str:
    """Find a regular expression in text files, as `file:line: text`."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ToolError(f"pattern is not a valid Python regular expression: {exc}.") from None
    start = workspace.resolve(path)
    if not start.exists():
        raise ToolError(f"{path} does not exist. Try search_files with path '.'.")
    matches: list[str] = []
    for file in _walk_files(start):
        rel = workspace.relative(file)
        try:
            real = workspace.resolve(rel)
            if not real.is_file() or real.stat().st_size > MAX_SEARCH_FILE_BYTES:
                continue
            with _open_text(workspace, real, rel) as handle:
                for number, line in enumerate(handle, start=1):
                    if regex.search(line):
                        matches.append(f"{rel}:{number}: {line.rstrip()[:MAX_MATCH_LINE_CHARS]}")
                        if len(matches) >= MAX_SEARCH_MATCHES:
                            matches.append(
                                f"[stopped after {MAX_SEARCH_MATCHES} matches; narrow the "
                                "pattern or path]"
                            )
                            return "\n".join(matches)
        except (ToolError, OSError):
            continue
    return "\n".join(matches) if matches else f"No matches for {pattern!r} under {path}."


# -- Commands --------------------------------------------------------------------------------


def _check_program(argv: Sequence[str], workspace: Workspace, policy: SandboxPolicy) -> None:
    """Say "not found" clearly, rather than as the sandbox's own execvp error line."""
    program = argv[0] if argv else ""
    if not program:
        raise ToolError("argv[0] is empty. Give the program to run, e.g. [\"ls\", \"-la\"].")
    if "/" in program:
        target = workspace.root / program
        if not target.exists():
            raise ToolError(f"Command not found: {program!r} does not exist.")
        if not target.is_file() or not os.access(target, os.X_OK):
            raise ToolError(
                f"Could not start {program!r}: it is not an executable file. Run it through "
                "its interpreter, e.g. [\"sh\", \"script.sh\"], or make it executable."
            )
        return
    path = sandbox_environment(policy).get("PATH") if policy.enabled else None
    if shutil.which(program, path=path) is None:
        raise ToolError(
            f"Command not found: {program!r}. Check the name, or run it through an installed "
            "interpreter, e.g. [\"python\", \"-m\", \"pytest\"]."
        )


def run_command(
    workspace: Workspace,
    default_timeout: float,
    keep_bytes: int,
    policy: SandboxPolicy,
    argv: list[str],
    timeout_seconds: float | None = None,
) -> ToolResult:
    """The run_command tool: a non-zero exit is a normal result, a timeout is an error."""
    timeout = default_timeout if timeout_seconds is None else float(timeout_seconds)
    workspace.check_present()
    command = interpreter_argv(argv)
    _check_program(command, workspace, policy)
    try:
        outcome = run_sandboxed(
            command, workdir=workspace.root, policy=policy, timeout=timeout,
            keep_bytes=keep_bytes,
        )
    except SandboxUnavailable as exc:
        raise ToolError(f"{exc} Tell the user; do not retry.") from None
    except FileNotFoundError:
        raise ToolError(
            f"Command not found: {argv[0]!r}. Check the name, or run it through an installed "
            "interpreter, e.g. [\"python\", \"-m\", \"pytest\"]."
        ) from None
    except OSError as exc:
        raise ToolError(f"Could not start {argv[0]!r}: {exc.strerror or exc}.") from None
    if outcome.timed_out:
        status = (
            f"[timed out after {timeout:g} s; the command and its child processes were killed. "
            "Pass a larger timeout_seconds or run something smaller.]"
        )
    else:
        status = f"[exit code {outcome.exit_code}, {outcome.duration:.1f} s]"
    body = outcome.output if outcome.output else "(no output)"
    return ToolResult(f"$ {shlex.join(argv)}\n{status}\n{body}", is_error=outcome.timed_out)


# -- Team tools ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_report_schema() -> dict[str, Any]:
    """The agent report schema, from schemas/agent-report.schema.json."""
    return json.loads(REPORT_SCHEMA_PATH.read_text(encoding="utf-8"))


def report_errors(report: Any) -> list[str]:
    """Schema errors of an agent report, empty when it is valid."""
    return schema_errors(Draft202012Validator(load_report_schema()), report)


def finish_task(**arguments: Any) -> ToolResult:
    """Accept the final report (flat, or wrapped as {"report": {...}}) when it is valid."""
    if set(arguments) == {"report"} and isinstance(arguments["report"], dict):
        arguments = arguments["report"]
    problems = report_errors(arguments)
    if problems:
        return ToolResult(
            "The report is invalid; fix it and call finish_task again:\n- "
            + "\n- ".join(problems),
            is_error=True,
        )
    report = {"completed_items": [], "blockers": [], "notes": "", **arguments}
    report["summary"] = report["summary"].strip()
    return ToolResult(
        f"Task finished with status {report['status']}.", is_error=False, finished=True,
        report=report,
    )


def post_update(
    on_update: UpdateCallback | None,
    status: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> str:
    """Hand a progress note to the orchestrator, which records it in the team state."""
    if on_update is not None:
        on_update(status, message, details)
    return "Update posted."


def _report_parameters() -> dict[str, Any]:
    schema = copy.deepcopy(load_report_schema())
    return {k: v for k, v in schema.items() if k not in ("$schema", "$id", "title")}


def build_toolbox(
    workspace: Workspace,
    *,
    on_update: UpdateCallback | None = None,
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    max_command_timeout: float = DEFAULT_MAX_COMMAND_TIMEOUT,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    extra_tools: Iterable[Tool] = (),
    sandbox: SandboxPolicy | None = None,
) -> Toolbox:
    """The default tools of a role agent working in `workspace`.

    `sandbox` is the config's policy for `run_command`; None means the safe default (sandbox
    on, network off).
    """
    policy = sandbox if sandbox is not None else SandboxPolicy()
    max_command_timeout = max(max_command_timeout, command_timeout)
    keep_bytes = max((max_output_chars - 400) // 2, 1024)
    path = {"type": "string", "description": "Relative to the workspace root."}
    tools = [
        define_tool(
            "read_file",
            "Read a UTF-8 text file. Long files come in pieces: the result ends with the "
            "offset to pass next.",
            {
                "path": path,
                "offset": {"type": "integer", "minimum": 1, "description": "First line (1)."},
                "limit": {"type": "integer", "minimum": 1, "description": "Maximum lines."},
            },
            partial(read_file, workspace, max_output_chars),
            required=["path"],
        ),
        define_tool(
            "write_file",
            "Create a file or replace its whole content; parent directories are created.",
            {"path": path, "content": {"type": "string"}},
            partial(write_file, workspace),
            required=["path", "content"],
        ),
        define_tool(
            "edit_file",
            "Replace one exact occurrence of old with new in a file. old must match exactly "
            "once, including whitespace; add surrounding lines to make it unique.",
            {"path": path, "old": {"type": "string"}, "new": {"type": "string"}},
            partial(edit_file, workspace),
            required=["path", "old", "new"],
        ),
        define_tool(
            "list_files",
            "List files under a directory recursively (skips .git, node_modules, caches). "
            "pattern is a glob matched against the file name or relative path, e.g. '*.py'.",
            {"path": path, "pattern": {"type": "string"}},
            partial(list_files, workspace),
        ),
        define_tool(
            "search_files",
            "Search text files for a Python regular expression; prints file:line: text.",
            {"pattern": {"type": "string", "minLength": 1}, "path": path},
            partial(search_files, workspace),
            required=["pattern"],
        ),
        define_tool(
            "run_command",
            "Run a program in the workspace root, e.g. argv [\"python\", \"-m\", \"pytest\", "
            "\"-q\"]. argv is a list of arguments, not a shell line: no pipes, globs or &&. "
            f"Default timeout {command_timeout:g} s. Returns the exit code and output.",
            {
                "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "timeout_seconds": {
                    "type": "number", "exclusiveMinimum": 0, "maximum": max_command_timeout,
                },
            },
            partial(run_command, workspace, command_timeout, keep_bytes, policy),
            required=["argv"],
        ),
        define_tool(
            "post_update",
            "Post a short progress note to the team, e.g. when you reach a milestone.",
            {
                "status": {
                    "type": "string", "minLength": 1,
                    "description": "One word, e.g. in_progress, testing, blocked.",
                },
                "message": {"type": "string", "minLength": 1},
                "details": {"type": "object"},
            },
            partial(post_update, on_update),
            required=["status", "message"],
        ),
        Tool(
            ToolSpec(
                "finish_task",
                "End your task with an honest report. status completed only when every "
                "deliverable exists in the workspace. Nothing runs after this call.",
                _report_parameters(),
            ),
            finish_task,
            validate=False,
        ),
    ]
    return Toolbox([*tools, *extra_tools], max_output_chars=max_output_chars)
