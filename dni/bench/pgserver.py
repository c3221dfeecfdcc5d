"""One private PostgreSQL server (Debian's `postgresql` package) in a folder, on a Unix socket,
with durability off: created once, then stopped and started again at will, so tests and the
fault benchmarks can take the database away from a running dni and give it back.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None when none is installed."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A server with one database, `dni`, in `folder` (which must be empty or absent)."""

    def __init__(self, folder: Path) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        self._binaries = found
        self.folder = folder
        self._data = folder / "data"
        # PostgreSQL refuses to run as root: then it runs as the package's "postgres" user.
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = str(probe.getsockname()[1])
        self.url = f"postgresql+psycopg://postgres@/dni?host={folder}&port={self.port}"
        self.running = False

    def _run(self, program: str, *args: str) -> None:
        command = [*self._as_owner, str(self._binaries / program), *args]
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)

    def create(self) -> None:
        """Initialise the cluster, start it and create the `dni` database."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._as_owner:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust")
        self.start()
        self._run("createdb", "-h", str(self.folder), "-p", self.port, "-U", "postgres", "dni")

    def start(self) -> None:
        options = f"-k {self.folder} -p {self.port} -c listen_addresses='' -c fsync=off"
        log = str(self.folder / "log")
        self._run("pg_ctl", "-D", str(self._data), "-l", log, "-w", "-o", options, "start")
        self.running = True

    def stop(self) -> None:
        """Stop at once, as a crash would: open connections are cut."""
        if self.running:
            self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")
            self.running = False

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
