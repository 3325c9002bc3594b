"""Shared fixtures: a network kill switch and real git repositories in tmp_path."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import git
import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(real):
    def connect(self: socket.socket, address: object):  # type: ignore[no-untyped-def]
        if not _is_loopback(address):
            pytest.fail(f"test tried to reach the network: {address!r}", pytrace=True)
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that opens a connection to a non-loopback address."""
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


@pytest.fixture(autouse=True)
def no_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's real keys; tests that need a key set a fake one."""
    for name in list(os.environ):
        if name.endswith("_API_KEY") or name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
            monkeypatch.delenv(name, raising=False)


def make_repo(path: Path, files: dict[str, str] | None = None, *, branch: str = "main") -> git.Repo:
    """Create a real repository with a configured user and one commit holding `files`."""
    path.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(path, initial_branch=branch)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test User")
        cw.set_value("user", "email", "test@example.com")
        cw.set_value("commit", "gpgsign", "false")
    for name, content in (files or {"README.md": "# test project\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    repo.git.add("--all")
    repo.git.commit("-m", "initial commit")
    return repo


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return True


@pytest.fixture
def git_repo(tmp_path: Path) -> git.Repo:
    """A real repository with one commit on `main`."""
    return make_repo(tmp_path / "project")


def processes_with(marker: str) -> list[int]:
    """Live host processes whose command line contains `marker`.

    Commands run in the sandbox's own PID namespace, so a pid they print means nothing out
    here; a unique argument (e.g. `sleep 300.4711`) finds them from the host side.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and "pytest" not in cmdline and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_until_gone(marker: str, seconds: float = 5.0) -> list[int]:
    """Wait for every process with `marker` to end; returns those still alive."""
    import time

    deadline = time.monotonic() + seconds
    while (alive := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


# The job store's database fixtures (SQLite, and a real PostgreSQL server started on demand).
from tests.jobs_fixtures import db_url, pg_server, pg_url, store  # noqa: E402, F401
