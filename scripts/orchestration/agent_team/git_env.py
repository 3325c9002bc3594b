"""Git under the orchestrator's control: what every git process it starts may run.

Git runs code from its configuration: hooks, clean/smudge filters, merge and diff drivers, an
fsmonitor, credential helpers. An agent that could change that configuration (`git config
core.hooksPath evil`, a filter in `.git/config`, `git config --global`) would get its code run
by the orchestrator's own `git add` / `git commit`, with the orchestrator's rights. So, when a
`GitGuard` is taken (when the run's `GitWorkspace` opens the repository):

- the user's global configuration is copied, and every git process reads the copy
  (`GIT_CONFIG_GLOBAL`): a later `git config --global` changes nothing the run uses;
- the user's hooks are copied too; git runs the copies (`core.hooksPath`), each inside the
  sandbox, never a hook written later into `.git/hooks`; `core.fsmonitor` is off and no
  credential helper is consulted (the orchestrator never talks to a remote);
- the repository's own `.git/config` is compared with its start before every git process:
  a change (only possible with the sandbox off) is undone and the call fails loudly;
- the environment of every git process holds no secret (by name or by value).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GitConfigChanged
from .redaction import is_secret_env_name, redact
from .sandbox import SandboxPolicy, run_sandboxed_exec_argv

__all__ = ["GitConfigChanged", "GitGuard", "combine_config_env", "scrubbed_overrides"]

_POLICY_VARIABLE = "AGENT_TEAM_HOOK_SANDBOX"
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


def scrubbed_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Emptied values for every secret variable, by name or by value.

    GitPython starts git with this process's environment updated by the call's; it cannot
    delete a variable, so each secret is overwritten with an empty string instead.
    """
    if environ is None:  # the same answer for the same environment: asked on every git call
        return dict(_scrubbed_for(tuple(os.environ.items())))
    return {
        name: ""
        for name, value in environ.items()
        if is_secret_env_name(name) or name.startswith("GITHUB_") or redact(value) != value
    }


@functools.lru_cache(maxsize=4)
def _scrubbed_for(items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple(scrubbed_overrides(dict(items)).items())


def _config_pairs(env: Mapping[str, str], start: int) -> list[tuple[str, str]]:
    try:
        count = int(env.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        return []
    return [
        (env[f"GIT_CONFIG_KEY_{i}"], env.get(f"GIT_CONFIG_VALUE_{i}", ""))
        for i in range(start, count)
        if f"GIT_CONFIG_KEY_{i}" in env
    ]


def combine_config_env(
    call_env: Mapping[str, str] | None, enforced: Mapping[str, str]
) -> dict[str, str]:
    """The call's environment with `enforced` git settings appended last, so they win.

    Settings the user passed in GIT_CONFIG_* stay first; `extra_config` of one call numbers
    its settings after those, and is renumbered here before the enforced ones.
    """
    try:
        user_count = int(os.environ.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        user_count = 0
    env = {k: v for k, v in (call_env or {}).items() if not k.startswith("GIT_CONFIG_")}
    pairs = _config_pairs(call_env or {}, user_count) + list(enforced.items())
    for offset, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{user_count + offset}"] = key
        env[f"GIT_CONFIG_VALUE_{user_count + offset}"] = value
    env["GIT_CONFIG_COUNT"] = str(user_count + len(pairs))
    return env


def _git_output(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, **scrubbed_overrides()})
    return done.stdout.strip() if done.returncode == 0 else ""


def _global_config_files() -> list[Path]:
    if os.environ.get("GIT_CONFIG_GLOBAL"):
        return [Path(os.environ["GIT_CONFIG_GLOBAL"]).expanduser()]
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return [Path(xdg) / "git" / "config", Path(os.path.expanduser("~/.gitconfig"))]


@dataclass
class GitGuard:
    """The user's git configuration as it was when the run opened the repository."""

    root: Path
    common_dir: Path
    snapshot_dir: Path
    policy: SandboxPolicy
    local_config: bytes | None
    hooks: tuple[str, ...] = ()
    _cleanup: object = field(default=None, repr=False)

    @classmethod
    def take(cls, root: Path, common_dir: Path, policy: SandboxPolicy | None = None) -> GitGuard:
        """Copy the global config and the hooks aside, and remember `.git/config`."""
        snapshot = Path(tempfile.mkdtemp(prefix="agent-team-git-"))
        policy = policy or SandboxPolicy()
        config = common_dir / "config"
        try:
            local = config.read_bytes()
        except FileNotFoundError:
            local = None
        texts = []
        for path in _global_config_files():
            with contextlib.suppress(OSError):
                texts.append(path.read_text(encoding="utf-8", errors="surrogateescape"))
        (snapshot / "gitconfig").write_text("\n".join(texts), encoding="utf-8",
                                            errors="surrogateescape")
        hooks_path = _git_output("rev-parse", "--path-format=absolute", "--git-path", "hooks",
                                 cwd=root)
        guard = cls(root, common_dir, snapshot, policy, local)
        guard.hooks = guard._copy_hooks(Path(hooks_path) if hooks_path else common_dir / "hooks")
        guard._cleanup = weakref.finalize(guard, shutil.rmtree, str(snapshot), True)
        return guard

    def _copy_hooks(self, source: Path) -> tuple[str, ...]:
        """Copy the executable hooks; git runs wrappers that start each copy in the sandbox."""
        real = self.snapshot_dir / "real"
        wrappers = self.snapshot_dir / "hooks"
        real.mkdir()
        wrappers.mkdir()
        names = []
        if source.is_dir():
            for hook in sorted(source.iterdir()):
                if hook.name.endswith(".sample") or not hook.is_file():
                    continue
                if not os.access(hook, os.X_OK):
                    continue
                shutil.copy2(hook, real / hook.name)
                wrapper = wrappers / hook.name
                wrapper.write_text(
                    "#!/bin/sh\n"
                    f"PYTHONPATH={shlex.quote(_PACKAGE_PARENT)} exec {shlex.quote(sys.executable)}"
                    f" -m agent_team.git_env {shlex.quote(str(real / hook.name))} "
                    f"{shlex.quote(str(self.snapshot_dir))} \"$@\"\n",
                    encoding="utf-8",
                )
                wrapper.chmod(stat.S_IRWXU)
                names.append(hook.name)
        return tuple(names)

    @property
    def hooks_dir(self) -> Path:
        return self.snapshot_dir / "hooks"

    def enforced_config(self) -> dict[str, str]:
        """`-c` settings every orchestrator git process gets, after anything else."""
        return {
            "core.hooksPath": str(self.hooks_dir),
            "core.fsmonitor": "false",
            "credential.helper": "",
            "core.askPass": "",
            "protocol.ext.allow": "never",
        }

    def environment(self, call_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment overrides of one git process: no secrets, the snapshot config."""
        env = scrubbed_overrides()
        env.update(combine_config_env(call_env, self.enforced_config()))
        env["GIT_CONFIG_GLOBAL"] = str(self.snapshot_dir / "gitconfig")
        env["GIT_TERMINAL_PROMPT"] = "0"
        env[_POLICY_VARIABLE] = json.dumps({"enabled": self.policy.enabled,
                                            "network": self.policy.network,
                                            "env_allow": list(self.policy.env_allow),
                                            "hide_paths": list(self.policy.hide_paths)})
        return env

    def check_config(self) -> None:
        """Put `.git/config` back and fail when it is not what it was at the start.

        Raises:
            GitConfigChanged: it changed (an agent ran `git config` with the sandbox off).
        """
        config = self.common_dir / "config"
        try:
            now = config.read_bytes()
        except FileNotFoundError:
            now = None
        if now == self.local_config:
            return
        if self.local_config is None:
            config.unlink()
        else:
            tmp = config.with_name("config.agent-team-restore")
            tmp.write_bytes(self.local_config)
            os.replace(tmp, config)
        raise GitConfigChanged(
            f"{config} was changed during the run by something other than the orchestrator "
            "(an agent's command?); it was restored to its state at the start, and git was not "
            "run with the changed settings.",
            path=config,
        )


def _run_hook(argv: list[str]) -> int:
    """Entry point of the hook wrappers: run the user's hook copy inside the sandbox."""
    real, snapshot, *arguments = argv
    try:
        policy = SandboxPolicy.from_config(json.loads(os.environ.get(_POLICY_VARIABLE, "{}")))
    except ValueError:
        policy = SandboxPolicy()
    workdir = Path.cwd()
    command, env = run_sandboxed_exec_argv([real, *arguments], workdir=workdir, policy=policy,
                                           readonly=[Path(snapshot)])
    os.execvpe(command[0], command, env)
    return 127  # not reached


if __name__ == "__main__":  # pragma: no cover - started by git, tested through real commits
    sys.exit(_run_hook(sys.argv[1:]))
