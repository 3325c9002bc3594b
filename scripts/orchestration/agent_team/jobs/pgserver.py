"""A throwaway PostgreSQL server on 127.0.0.1, for tests, benchmarks and trying things out.

Uses the machine's own binaries (Debian's `postgresql` package puts them in
`/usr/lib/postgresql/<version>/bin`). PostgreSQL refuses to run as root, so when this process is
root the server runs as `nobody` through `setpriv`, in a data directory that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

NOBODY_UID = 65534


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name)
                        if Path(p).parent.parent.name.isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server; `url(dbname)` gives a SQLAlchemy URL, `stop()` removes everything."""

    bin_dir: Path
    root: Path
    port: int
    as_nobody: bool

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        prefix = (["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}",
                   "--clear-groups"] if self.as_nobody else [])
        return subprocess.run([*prefix, *argv], cwd=self.root, capture_output=True, text=True,
                              timeout=120, check=False)

    def start(self) -> None:
        initdb = self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U",
                           "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr or initdb.stdout}")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        started = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o",
                            options, "-l", str(self.root / "server.log"), "-w", "-t", "60",
                            "start")
        if started.returncode != 0:
            log = (self.root / "server.log")
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}{detail}")

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database and return its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.data_dir.exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m",
                      "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """Start a server in a new temporary directory; RuntimeError when it cannot be done."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    as_nobody = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="agent-team-pg-"))
    if as_nobody:
        os.chown(root, NOBODY_UID, NOBODY_UID)
    server = PostgresServer(bin_dir, root, _free_port(), as_nobody)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
