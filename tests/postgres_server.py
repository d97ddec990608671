"""A real PostgreSQL server for the tests, started once per session.

initdb and postgres refuse to run as root (and CI runs as root), so as root the server
runs as the `postgres` user through `runuser`, in a temporary directory it owns, on a
free loopback port. Import `postgres` (the session fixture) and `pg_url` into a test module.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    return Path(dirs[-1]) if dirs and (Path(dirs[-1]) / "pg_ctl").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    bin_dir: Path
    data: Path
    port: int
    user: str

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", self.user, "--", *cmd] if os.geteuid() == 0 else cmd

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(self._cmd(tool, *args), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.data / "server.log"),
                  "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _start() -> tuple[PostgresServer, Path]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl, initdb): apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="gpu-gateway-pg-"))
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(bin_dir, root / "data", _free_port(), user)
    server._run("initdb", "--no-sync", "-A", "trust", "-U", user, "-D", str(server.data))
    server.start()
    return server, root


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server, root = _start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped by a test
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh database on the session's server."""
    return postgres.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def each_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh store on each backend: a SQLite file, then a new database on the session's
    PostgreSQL (import `pg_url` and `postgres` beside it). Closed after the test."""
    from gateway.store.postgres import PostgresStore
    from gateway.store.sqlite import SQLiteStore

    store: Any = (SQLiteStore(tmp_path / "state.db") if request.param == "sqlite"
                  else PostgresStore(request.getfixturevalue("pg_url")))
    try:
        yield store
    finally:
        store.close()
