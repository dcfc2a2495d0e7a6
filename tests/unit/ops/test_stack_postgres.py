"""The local PostgreSQL's permission helpers (ops.stack.postgres), without starting a server: who may pass
through a folder, which folders the stack creates and with what mode whatever the umask, which folders it
may give their mode back, and where a root-run server keeps its files."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.errors import StackError
from ops.stack import postgres
from ops.stack.postgres import (
    OWNER_MARK,
    SERVER_HOME_FILE,
    PostgresNode,
    ServerUser,
    blocking_directory,
    make_folders,
    may_pass,
    open_for,
    traversable_by,
)

OWNER, GROUP, STRANGER = 1000, 2000, 3000
# A user who is neither this process's user nor in its group: what the root-run server user is to our files.
OTHER = ServerUser(os.getuid() + 40_000, os.getgid() + 40_000)


def _info(mode: int, uid: int = OWNER, gid: int = GROUP) -> os.stat_result:
    return os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, uid, gid, 4096, 0, 0, 0))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mode", "uid", "gid", "expected"), [
    (0o700, OWNER, STRANGER, True),    # the owner, by the owner's bits
    (0o077, OWNER, GROUP, False),      # the owner's bits alone decide for the owner
    (0o710, STRANGER, GROUP, True),    # a group member, by the group's bits
    (0o701, STRANGER, GROUP, False),   # ... and only by them
    (0o701, STRANGER, STRANGER, True),  # anyone else, by the others' bits
    (0o754, STRANGER, STRANGER, False),  # read without search is not enough to pass through
])
def test_may_pass_reads_the_owner_group_or_other_bits_as_the_kernel_does(
        mode: int, uid: int, gid: int, expected: bool) -> None:
    assert may_pass(_info(mode), uid, gid) is expected


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every user may pass through, on a way every user may pass through (unlike tmp_path's)."""
    folder = Path(tempfile.mkdtemp(prefix="payments-unit-perm-"))
    folder.chmod(0o755)  # our own mktemp -d folder: opened so that only the modes set below matter
    if not traversable_by(folder, OTHER.uid, OTHER.gid):
        shutil.rmtree(folder)
        pytest.skip(f"the temporary directory {folder.parent} is closed to other users")
    yield folder
    for inner, _subfolders, _files in os.walk(folder):
        os.chmod(inner, 0o700)  # so that a non-root run may delete what a test closed
    shutil.rmtree(folder)


def test_blocking_directory_names_the_outermost_closed_folder_and_skips_missing_ones(shared: Path) -> None:
    outer, inner = shared / "outer", shared / "outer" / "inner"
    inner.mkdir(parents=True)
    inner.chmod(0o700)
    assert blocking_directory(inner / "not" / "yet", OTHER.uid, OTHER.gid) == inner
    outer.chmod(0o700)
    assert blocking_directory(inner / "not" / "yet", OTHER.uid, OTHER.gid) == outer
    assert blocking_directory(inner, os.getuid(), os.getgid()) is None  # the owner passes
    outer.chmod(0o711)
    inner.chmod(0o711)
    assert traversable_by(inner / "not" / "yet", OTHER.uid, OTHER.gid)


@pytest.fixture
def umask_077() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("umask_077")
def test_make_folders_sets_the_mode_whatever_the_umask_and_only_on_folders_it_creates(shared: Path) -> None:
    existing = shared / "existing"
    existing.mkdir()
    existing.chmod(0o750)
    created = make_folders(existing / "a" / "b", 0o755, mark=True)
    assert created == [existing / "a", existing / "a" / "b"]
    assert [_mode(folder) for folder in created] == [0o755, 0o755]  # not 0o700, as mkdir under umask 077 gives
    assert all((folder / OWNER_MARK).is_file() for folder in created)
    assert _mode(existing) == 0o750 and not (existing / OWNER_MARK).exists()
    assert _mode(shared) == 0o755
    assert make_folders(existing / "a" / "b", 0o700) == []  # nothing new: nothing chmod-ed
    assert _mode(existing / "a") == 0o755
    unmarked = make_folders(shared / "c", 0o711)
    assert unmarked == [shared / "c"] and _mode(shared / "c") == 0o711 and not (shared / "c" / OWNER_MARK).exists()


def test_open_for_gives_a_folder_the_stack_made_its_mode_back(shared: Path) -> None:
    (root,) = make_folders(shared / "root", 0o755, mark=True)
    root.chmod(0o700)  # as a first run under an older version, with umask 077, left it
    open_for(root / "postgres-x", OTHER.uid, OTHER.gid)
    assert _mode(root) == 0o755
    assert _mode(shared) == 0o755


def test_open_for_leaves_any_other_folder_alone_and_says_what_to_do(shared: Path) -> None:
    foreign = shared / "foreign"
    foreign.mkdir()
    foreign.chmod(0o700)
    (foreign / OWNER_MARK).mkdir()  # a folder of that name is no marker file
    with pytest.raises(StackError, match=re.escape(f"cannot pass through {foreign} (mode 0700")) as failure:
        open_for(foreign / "postgres-x", OTHER.uid, OTHER.gid)
    assert f"chmod o+x {foreign}" in str(failure.value) and "run the stack as a normal user" in str(failure.value)
    assert _mode(foreign) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder to another owner")
def test_open_for_leaves_a_marked_folder_alone_once_someone_else_owns_it(shared: Path) -> None:
    (given,) = make_folders(shared / "given", 0o700, mark=True)
    os.chown(given, 65534, 65534)
    with pytest.raises(StackError, match="did not create that folder"):
        open_for(given / "x", OTHER.uid, OTHER.gid)
    assert _mode(given) == 0o700


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> ServerUser:
    """The node believes it runs as root, with OTHER as its server user: no useradd, no chown reached."""
    monkeypatch.setattr(postgres, "running_as_root", lambda: True)
    monkeypatch.setattr(postgres, "server_user", lambda: OTHER)
    return OTHER


def test_as_a_normal_user_the_server_home_is_the_stack_folder(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "running_as_root", lambda: False)
    private = shared / "private"
    private.mkdir(mode=0o700)
    home = private / "stack" / "postgres"
    assert PostgresNode(home, fallback_root=shared / "fallback").server_home == home


@pytest.mark.usefixtures("as_root")
def test_as_root_the_server_home_is_the_stack_folder_when_the_server_user_can_reach_it(shared: Path) -> None:
    home = shared / "stack" / "postgres"
    assert PostgresNode(home, fallback_root=shared / "fallback").server_home == home


@pytest.mark.usefixtures("as_root")
def test_as_root_a_closed_way_moves_the_server_home_to_one_named_by_a_hash_of_the_postgres_folder(
        shared: Path) -> None:
    private = shared / "private"
    private.mkdir()
    private.chmod(0o700)
    stack_dir = private / "stack"
    home = stack_dir / "postgres"
    node = PostgresNode(home, fallback_root=shared / "fallback")
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]  # docs/operations.md says how
    assert node.server_home == shared / "fallback" / f"postgres-{digest}"
    assert digest != hashlib.sha256(str(stack_dir.resolve()).encode()).hexdigest()[:16]
    other = PostgresNode(private / "other" / "postgres", fallback_root=shared / "fallback")
    assert other.server_home != node.server_home


@pytest.mark.usefixtures("as_root")
def test_as_root_a_recorded_server_home_wins(shared: Path) -> None:
    home = shared / "stack" / "postgres"
    home.mkdir(parents=True)
    (home / SERVER_HOME_FILE).write_text(f"{shared / 'elsewhere'}\n")
    assert PostgresNode(home, fallback_root=shared / "fallback").server_home == shared / "elsewhere"


@pytest.mark.usefixtures("as_root")
def test_as_root_a_start_behind_a_foreign_closed_folder_fails_before_creating_anything_there(shared: Path) -> None:
    private = shared / "private"
    private.mkdir()
    private.chmod(0o700)
    fallback = shared / "fallback"
    fallback.mkdir()
    fallback.chmod(0o700)  # as an older version, or someone else, left it: no marker
    node = PostgresNode(private / "stack" / "postgres", fallback_root=fallback)
    with pytest.raises(StackError, match=re.escape(f"cannot pass through {fallback} (mode 0700")):
        node.start()
    assert list(fallback.iterdir()) == [] and _mode(fallback) == 0o700 and _mode(private) == 0o700
    assert not (node.home / SERVER_HOME_FILE).exists()
