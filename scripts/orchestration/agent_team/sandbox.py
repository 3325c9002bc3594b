"""The OS sandbox (bubblewrap) for everything agent-written that runs.

Agents' `run_command` calls, the user's git hooks on agents' commits, and the test commands
the orchestrator runs on agents' code all go through `run_sandboxed`. Inside, the command sees:

- its working directory read-write, and nothing else writable; the repository's `.git` and the
  worktree's `.git` file read-only (history can be read, only the orchestrator writes it);
- a private, empty `/tmp` and `HOME` (`/tmp/home`), and no `/run` sockets;
- its own PID namespace and `/proc`: no other process is visible (no `/proc/<pid>/environ` of
  the orchestrator or its parent shell), and every process it started dies with it;
- no network unless the config allows it; all capabilities dropped (as root too, so a
  read-only mount cannot be remounted);
- an environment built from an allow-list, minus anything secret by name or by value.

Where bubblewrap is missing or cannot start, `run_sandboxed` refuses with `SandboxUnavailable`
(how to install it) unless the config opts out with `sandbox.enabled: false`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import SandboxUnavailable
from .process import DEFAULT_KEEP_BYTES, CommandOutcome, command_environment, run_process
from .redaction import is_secret_env_name, redact

__all__ = [
    "ALLOWED_ENV",
    "INSTALL_HINT",
    "SandboxPolicy",
    "SandboxStatus",
    "SandboxUnavailable",
    "git_dirs_of",
    "require_sandbox",
    "run_sandboxed",
    "run_sandboxed_exec_argv",
    "sandbox_environment",
    "sandbox_status",
    "sandbox_warning",
    "sandboxed_argv",
]

#: Variables a sandboxed command may inherit (when neither name nor value looks secret).
ALLOWED_ENV: tuple[str, ...] = (
    "PATH", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "COLUMNS", "LINES",
    "NO_COLOR", "FORCE_COLOR", "CI", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH",
    "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONHASHSEED", "PYENV_VERSION", "PYENV_ROOT",
    "NODE_PATH", "GOPATH", "GOROOT", "CARGO_HOME", "RUSTUP_HOME", "JAVA_HOME",
)
_ALLOWED_PREFIXES = ("LC_",)
#: git passes these to hooks; the hook needs them to find its index and identity.
_HOOK_ENV = (
    "GIT_INDEX_FILE", "GIT_DIR", "GIT_PREFIX", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE",
    "GIT_EDITOR", "GIT_REFLOG_ACTION", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM",
    "GIT_CONFIG_COUNT", "GIT_WORK_TREE",
)
_HOOK_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")

#: Credential files and directories under the user's home that sandboxed commands never see.
HIDDEN_HOME_PATHS: tuple[str, ...] = (
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".config/gh", ".docker", ".kube",
    ".netrc", ".git-credentials", ".pypirc", ".npmrc", ".config/hub", ".cargo/credentials",
    ".cargo/credentials.toml", ".anthropic", ".config/openai",
)

SANDBOX_HOME = "/tmp/home"
#: Extra paths to hide, separated by os.pathsep; the GitHub workflow's launcher sets it.
HIDE_ENV = "AGENT_TEAM_SANDBOX_HIDE"
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf "
    "install bubblewrap`; Arch: `sudo pacman -S bubblewrap`), or, at your own risk, set "
    '"sandbox": {"enabled": false} in orchestrator-config.json to run agents\' commands '
    "unconfined"
)


@dataclass(frozen=True)
class SandboxPolicy:
    """What the config says about the sandbox; the defaults are the safe ones."""

    enabled: bool = True
    network: bool = False
    env_allow: tuple[str, ...] = ()
    hide_paths: tuple[str, ...] = ()
    bwrap: str | None = None  # a path to bwrap; None looks it up on PATH

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> SandboxPolicy:
        """Build from the (already schema-validated) `sandbox` section of the config."""
        section = section or {}
        return cls(
            enabled=bool(section.get("enabled", True)),
            network=bool(section.get("network", False)),
            env_allow=tuple(section.get("env_allow", ())),
            hide_paths=tuple(section.get("hide_paths", ())),
            bwrap=section.get("bwrap"),
        )


@dataclass(frozen=True)
class SandboxStatus:
    """Whether the sandbox works on this machine, for `check` and for refusing commands."""

    available: bool
    detail: str
    fix: str = ""
    bwrap: str | None = None


def _bwrap_path(policy: SandboxPolicy) -> str | None:
    return policy.bwrap or shutil.which("bwrap")


def sandbox_status(policy: SandboxPolicy | None = None) -> SandboxStatus:
    """Probe bubblewrap once per path: it must start a full sandbox and run `true` in it."""
    policy = policy or SandboxPolicy()
    path = _bwrap_path(policy)
    if path is None:
        return SandboxStatus(False, "bubblewrap (bwrap) is not installed", INSTALL_HINT)
    return _probe(path, policy.network)


@lru_cache(maxsize=8)
def _probe(path: str, network: bool) -> SandboxStatus:
    with tempfile.TemporaryDirectory(prefix="agent-team-probe-") as workdir:
        argv = sandboxed_argv(["true"], workdir=Path(workdir),
                              policy=SandboxPolicy(network=network, bwrap=path))
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL, env=command_environment())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return SandboxStatus(False, f"{path} could not start: {exc}", INSTALL_HINT, path)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        why = reason[-1] if reason else f"exit code {done.returncode}"
        return SandboxStatus(
            False, f"{path} cannot create a sandbox here: {why}",
            "allow unprivileged user namespaces (Ubuntu 24.04: `sudo sysctl -w "
            "kernel.apparmor_restrict_unprivileged_userns=0`), run in a container started "
            "with --privileged or a seccomp profile that allows unshare, or " + INSTALL_HINT,
            path,
        )
    version = ""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
    return SandboxStatus(True, f"{version or 'bubblewrap'} works ({path})", "", path)


def require_sandbox(policy: SandboxPolicy) -> str | None:
    """Check before a run starts: refuse when the sandbox is needed and broken.

    Returns the warning to log and record when the user opted out, None otherwise.

    Raises:
        SandboxUnavailable: (exit code 2) bubblewrap is missing or cannot start.
    """
    if not policy.enabled:
        return sandbox_warning(policy)
    status = sandbox_status(policy)
    if not status.available:
        raise SandboxUnavailable(
            f"Agents' commands and tests run only inside the sandbox, and it does not work "
            f"here: {status.detail}. Fix: {status.fix}.",
            detail=status.detail,
        )
    return None


def sandbox_warning(policy: SandboxPolicy) -> str | None:
    """The loud line to log and record when the user turned the sandbox off."""
    if policy.enabled:
        return None
    return (
        "WARNING: the sandbox is turned off (sandbox.enabled: false). Agents' commands and "
        "the tests run unconfined, as you: they can read your files and keys on disk, write "
        "anywhere you can, reach the network and leave processes running."
    )


def _secret_value(value: str) -> bool:
    """Key-shaped text, or the value of any credential variable of this process."""
    return redact(value) != value


def sandbox_environment(
    policy: SandboxPolicy,
    environ: Mapping[str, str] | None = None,
    *,
    for_hook: bool = False,
) -> dict[str, str]:
    """The allow-listed environment: never a key, by name or by value, nor GITHUB_* files."""
    environ = os.environ if environ is None else environ
    allowed = set(ALLOWED_ENV) | set(policy.env_allow)
    prefixes: tuple[str, ...] = _ALLOWED_PREFIXES
    if for_hook:
        allowed |= set(_HOOK_ENV)
        prefixes = prefixes + _HOOK_PREFIXES
    result: dict[str, str] = {}
    for name, value in environ.items():
        if name not in allowed and not name.startswith(prefixes):
            continue
        if is_secret_env_name(name) or name.startswith("GITHUB_") or _secret_value(value):
            continue
        result[name] = value
    result.update(HOME=SANDBOX_HOME, TMPDIR="/tmp", PYTHONDONTWRITEBYTECODE="1")
    result.setdefault("PATH", os.defpath)
    return result


def git_dirs_of(workdir: Path) -> list[Path]:
    """The git directories a working tree uses: its own gitdir and the common one.

    Read from the `.git` file (a linked worktree) or directory (a main checkout); both are
    mounted read-only, so a command cannot rewrite them to point elsewhere.
    """
    marker = workdir / ".git"
    if marker.is_dir():
        return [marker.resolve()]
    try:
        text = marker.read_text(encoding="utf-8").strip() if marker.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return []
    if not text.startswith("gitdir:"):
        return []
    admin = Path(text.removeprefix("gitdir:").strip())
    admin = (admin if admin.is_absolute() else workdir / admin).resolve()
    found = [admin]
    try:
        common = (admin / "commondir").read_text(encoding="utf-8").strip()
        common_path = Path(common)
        found.append((common_path if common_path.is_absolute() else admin / common).resolve())
    except OSError:
        pass
    return found


def _hidden_paths(policy: SandboxPolicy, environ: Mapping[str, str]) -> list[Path]:
    home = environ.get("HOME") or os.path.expanduser("~")
    paths = [Path(home) / rel for rel in HIDDEN_HOME_PATHS] if home else []
    paths += [Path(p).expanduser() for p in policy.hide_paths]
    # Set by the CI launcher: the runner's command files (GITHUB_ENV, ...) and RUNNER_TEMP.
    paths += [Path(p) for p in os.environ.get(HIDE_ENV, "").split(os.pathsep) if p]
    socket = environ.get("SSH_AUTH_SOCK")
    if socket:
        paths.append(Path(socket))
    return [p for p in paths if os.path.lexists(p)]


#: Places the sandbox replaces with empty file systems.
_MASKED = ("/tmp", "/run")


def _runtime_paths(environ: Mapping[str, str]) -> list[str]:
    """This Python's installation and the PATH directories, where they lie in a masked place.

    A virtual environment under /tmp (or a tool installed there) would vanish behind the
    sandbox's private /tmp, and `python` would resolve to nothing; they are mounted back
    read-only, never writable.
    """
    candidates = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    candidates |= {p for p in environ.get("PATH", "").split(os.pathsep) if p}
    found = []
    for path in sorted(candidates):
        real = os.path.realpath(path)
        if os.path.isdir(real) and any(real == m or real.startswith(m + "/") for m in _MASKED):
            found.append(real)
    return found


def sandboxed_argv(
    argv: Sequence[str],
    *,
    workdir: Path,
    policy: SandboxPolicy,
    cwd: Path | None = None,
    readonly: Sequence[Path] = (),
    writable: Sequence[Path] = (),
    mounts: Sequence[tuple[Path, str]] = (),
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """The bwrap command line that runs `argv` confined to `workdir` (read-write).

    `readonly` adds paths the command may read although they lie under a masked place (the
    hook snapshot under /tmp). The order of the mounts matters: later ones cover earlier ones.
    """
    bwrap = _bwrap_path(policy)
    if bwrap is None:
        raise SandboxUnavailable(
            f"Agents' commands need the sandbox, and bubblewrap is not installed: {INSTALL_HINT}.",
            detail="bwrap not found on PATH",
        )
    environ = os.environ if environ is None else environ
    workdir = Path(os.path.realpath(workdir))
    args = [
        bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
        "--unshare-uts", "--unshare-cgroup-try", "--cap-drop", "ALL",
    ]
    if not policy.network:
        args.append("--unshare-net")
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
             "--tmpfs", "/tmp", "--dir", SANDBOX_HOME]
    if not policy.network and os.path.isdir("/run"):
        args += ["--tmpfs", "/run"]
    for hidden in _hidden_paths(policy, environ):
        if hidden.is_dir() and not hidden.is_symlink():
            args += ["--tmpfs", str(hidden)]
        else:
            args += ["--ro-bind", "/dev/null", str(hidden)]
    args += ["--bind", str(workdir), str(workdir)]
    for directory in git_dirs_of(workdir):
        args += ["--ro-bind", str(directory), str(directory)]
    marker = workdir / ".git"
    if marker.exists() and not marker.is_symlink():
        args += ["--ro-bind", str(marker), str(marker)]
    mounted: list[str | Path] = [*_runtime_paths(environ), *readonly]
    for path in mounted:
        real = os.path.realpath(path)
        args += ["--ro-bind", real, real]
    for path in writable:  # e.g. the directory a test runner writes its report to
        real = os.path.realpath(path)
        args += ["--bind", real, real]
    for source, target in mounts:  # e.g. a coding-agent CLI's login, under the private HOME
        args += ["--bind", os.path.realpath(source), target]
    args += ["--chdir", str(Path(os.path.realpath(cwd)) if cwd else workdir), "--", *argv]
    return args


def run_sandboxed_exec_argv(
    argv: Sequence[str],
    *,
    workdir: Path,
    policy: SandboxPolicy,
    readonly: Sequence[Path] = (),
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment to `exec` a git hook with, inside the sandbox.

    A broken sandbox makes the hook fail (so git refuses the commit) rather than run it bare.
    """
    if not policy.enabled:
        return list(argv), {**command_environment(), **_git_hook_env()}
    status = sandbox_status(policy)
    if not status.available:
        message = f"agent-team: hook refused, the sandbox does not work: {status.detail}"
        return ["sh", "-c", f"echo {shlex.quote(message)} >&2; exit 126"], command_environment()
    command = sandboxed_argv(argv, workdir=workdir, policy=policy, readonly=readonly)
    return command, sandbox_environment(policy, for_hook=True)


def _git_hook_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k in _HOOK_ENV or k.startswith(_HOOK_PREFIXES)}


def run_sandboxed(
    argv: Sequence[str],
    *,
    workdir: Path,
    policy: SandboxPolicy,
    timeout: float,
    cwd: Path | None = None,
    keep_bytes: int = DEFAULT_KEEP_BYTES,
    readonly: Sequence[Path] = (),
    writable: Sequence[Path] = (),
    extra_env: Mapping[str, str] | None = None,
) -> CommandOutcome:
    """Run `argv` in the sandbox (or unconfined, only when the policy opts out).

    `extra_env` adds variables the caller chose (a test runner's report options); like the
    rest of the environment, nothing secret by name or by value gets in.

    Raises:
        SandboxUnavailable: the sandbox is required and bubblewrap is missing or broken.
        OSError: the command could not be started.
    """
    added = {name: value for name, value in (extra_env or {}).items()
             if not is_secret_env_name(name) and not _secret_value(value)}
    if not policy.enabled:
        return run_process(argv, cwd=cwd or workdir, timeout=timeout,
                           env={**command_environment(), **added} if added else None,
                           keep_bytes=keep_bytes)
    status = sandbox_status(policy)
    if not status.available:
        raise SandboxUnavailable(
            f"The command was refused: {status.detail}. Agents' commands and tests only run "
            f"inside the sandbox. Fix: {status.fix}.",
            detail=status.detail,
        )
    wrapped = sandboxed_argv(argv, workdir=workdir, policy=policy, cwd=cwd, readonly=readonly,
                             writable=writable)
    outcome = run_process(wrapped, cwd=workdir, timeout=timeout,
                          env={**sandbox_environment(policy), **added}, keep_bytes=keep_bytes)
    # Report the command as the caller wrote it, not the bwrap line around it.
    return CommandOutcome(tuple(argv), outcome.exit_code, outcome.output, outcome.dropped_bytes,
                          outcome.timed_out, outcome.duration)
