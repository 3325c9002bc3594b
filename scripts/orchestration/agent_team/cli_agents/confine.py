"""A coding-agent CLI inside the sandbox: the worktree writable, the network on (it must reach
its API), its own login and session files under the private HOME, nothing else of the user's.

`confined(policy, scratch)` is the `wrap` hook of `runner.run_invocation`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from ..sandbox import SANDBOX_HOME, SandboxPolicy, require_sandbox, sandboxed_argv
from .runner import Invocation, Wrapper

#: What the CLIs keep in the user's home: logins (a subscription), settings, sessions.
CLI_HOME_ENTRIES = (".claude", ".claude.json", ".codex", ".aider", ".config/claude")


def cli_home_mounts(home: Path | None = None) -> list[tuple[Path, str]]:
    """(the user's file, where the CLI finds it in the sandbox) for each that exists."""
    home = Path.home() if home is None else home
    return [(home / name, f"{SANDBOX_HOME}/{name}") for name in CLI_HOME_ENTRIES
            if (home / name).exists()]


def confined(policy: SandboxPolicy, scratch: Path, *, home: Path | None = None,
             writable: Sequence[Path] = ()) -> Wrapper:
    """The CLI's invocation, run in the sandbox; unchanged when the user opted out.

    `writable` adds directories the CLI may write besides the worktree and its scratch.
    """
    if not policy.enabled:
        return lambda invocation: invocation
    require_sandbox(policy)
    online = dataclasses.replace(policy, network=True)
    mounts = cli_home_mounts(home)

    def wrap(invocation: Invocation) -> Invocation:
        program = invocation.argv[0]
        # A CLI given by path (claude_cli.command) stays visible wherever it is installed.
        readonly = [Path(os.path.realpath(program)).parent] if os.path.isabs(program) else []
        argv = sandboxed_argv(list(invocation.argv), workdir=invocation.cwd, policy=online,
                              readonly=readonly, writable=[scratch, *writable],
                              mounts=mounts, environ=invocation.env)
        env = {**invocation.env, "HOME": SANDBOX_HOME, "TMPDIR": "/tmp"}
        env.setdefault("PATH", os.defpath)
        return Invocation(argv=tuple(argv), env=env, cwd=invocation.cwd)

    return wrap
