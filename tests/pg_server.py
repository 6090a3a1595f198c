"""A real, throwaway PostgreSQL server for the store's contract tests.

``PostgresServer.start()`` runs Debian's own binaries (``make system-deps`` installs the
``postgresql`` package): initdb into a fresh temp dir, a server on a free loopback port with
its unix socket in that dir, password auth over TCP. PostgreSQL refuses to run as root, so
as root the server runs as the ``postgres`` system user the package creates (via
``runuser``) and the temp dir belongs to it. ``stop()`` shuts it down and deletes the dir.
Durability is switched off (fsync etc.): the data lives only as long as the test session.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "roilab", "roilab-test-pw"
INSTALL_HINT = ("PostgreSQL server binaries (initdb, pg_ctl) not found in "
                "/usr/lib/postgresql/*/bin or on PATH: run `make system-deps` (installs "
                "Debian's `postgresql` package); the store's contract tests need them.")


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin dir (Debian keeps it off PATH)."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0)
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    root: Path  # temp dir: data/, the socket, the log
    port: int
    run_as: str | None  # OS user the server runs as; None: this process's user

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(INSTALL_HINT)
        run_as = None
        root = Path(tempfile.mkdtemp(prefix="roilab-pg-", dir="/tmp"))
        if os.geteuid() == 0:
            run_as = "postgres"
            try:
                pw = pwd.getpwnam(run_as)
            except KeyError as exc:
                raise RuntimeError("Running as root and there is no `postgres` OS user to run "
                                   "PostgreSQL as: run `make system-deps`.") from exc
            os.chown(root, pw.pw_uid, pw.pw_gid)
        server = cls(bindir, root, 0, run_as)
        try:
            server._initdb()
            server._start_on_free_port()
        except BaseException:
            server.stop()
            raise
        return server

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.run_as, "--"] if self.run_as else []) + list(args)

    def _run(self, *args: str) -> None:
        proc = subprocess.run(self._cmd(*args), cwd=self.root, capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}):\n"
                               f"{proc.stdout}\n{proc.stderr}\n{self._log_tail()}")

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run(str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U", USER,
                  f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                  "--encoding=UTF8", "--locale=C", "--no-sync")

    def _start_on_free_port(self, tries: int = 3) -> None:
        for attempt in range(tries):  # another process may take the port between probe and bind
            self.port = _free_port()
            opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            try:
                self._run(str(self.bindir / "pg_ctl"), "start", "-D", str(self.root / "data"),
                          "-o", opts, "-l", str(self.root / "server.log"), "-w", "-t", "60")
                return
            except RuntimeError:
                if attempt == tries - 1:
                    raise

    def _log_tail(self) -> str:
        log = self.root / "server.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "stop", "-D",
                                     str(self.root / "data"), "-m", "immediate", "-w"),
                           cwd=self.root, capture_output=True, timeout=60)
            for _ in range(50):  # -w waits, but be sure before deleting its files
                if not (self.root / "data" / "postmaster.pid").exists():
                    break
                time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
