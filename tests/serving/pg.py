"""A private, throw-away PostgreSQL server for the store tests (Debian's `postgresql` package).

`PrivateCluster.start()` runs initdb and pg_ctl in a fresh temporary directory on a free loopback
port, as the current user, or as `postgres` through runuser when the tests run as root (the server
refuses to run as root). `why_unavailable()` says why it cannot run here, for a printed skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.serving.helpers import free_port


def pg_bindir() -> Path | None:
    """Directory holding initdb and pg_ctl: PATH, else the newest /usr/lib/postgresql/N/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)  # /usr/lib/postgresql/<N>/bin
    return found[-1] if found else None


def _runuser() -> str | None:
    found = shutil.which("runuser")
    return found or next((p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), None)


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    return [_runuser(), "-u", "postgres", "--"]


def why_unavailable() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'palrm[postgres]')"
    if pg_bindir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl); install them with: apt-get install -y postgresql"
    if os.geteuid() == 0:
        if _runuser() is None:
            return "running as root without runuser: cannot start PostgreSQL as another user"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


class PrivateCluster:
    def __init__(self) -> None:
        self.bindir = pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="palrm-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://palrm@127.0.0.1:{self.port}/postgres"
        self.prefix = _run_as()

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.prefix, *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> PrivateCluster:
        if self.prefix:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "palrm", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=50"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "server.log"), "-w", "start")
        return self

    def new_database(self, name: str) -> str:
        """Create database `name`; returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://palrm@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
