"""A private PostgreSQL server for the tests: Debian's postgresql, initdb in a temp dir, its
own port on 127.0.0.1 and its own socket directory, stopped and removed afterwards.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
(made by the Debian package) and every server command runs through `runuser`; as another
user it runs as that user. Passwords are required (scram-sha-256) on TCP, as in a cluster.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

SUPERUSER = "enforcer_admin"


def bin_dir() -> Path | None:
    """The newest Debian PostgreSQL server's bin directory, or None when not installed."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin/postgres")), key=lambda p: int(
        p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One initdb'd cluster; `start`/`stop` may be called repeatedly (a database outage)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.password = uuid.uuid4().hex
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="enforcer-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.dir.chmod(0o700)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._user:
            os.chown(pwfile, pwd.getpwnam(self._user).pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(pwfile),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.dir}'\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "shared_buffers = 64MB\nmax_connections = 50\n")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = [str(self.bindir / tool), *args]
        if self._user:
            argv = ["runuser", "-u", self._user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120,
                              cwd=self.dir)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                      "start")
        except subprocess.CalledProcessError as exc:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"postgres did not start: {exc.stderr}\n{tail}") from None

    def stop(self) -> None:
        """Stop the server now (fast shutdown: clients are disconnected)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop",
                  check=False)

    def destroy(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop",
                  check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER,
            password: str | None = None) -> str:
        """A TCP DSN, the way an agent reaches a real server."""
        pw = self.password if password is None else password
        return f"postgresql://{user}:{pw}@127.0.0.1:{self.port}/{dbname}"

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        """Run SQL as the superuser (autocommit: CREATE DATABASE may not run in a block)."""
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(statement)

    def new_database(self) -> str:
        """A fresh database; returns its name."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.sql(f"CREATE DATABASE {name}")
        return name


@contextlib.contextmanager
def running_server(bindir: Path) -> Iterator[PgServer]:
    """A started server, destroyed (data dir and all) on exit."""
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
