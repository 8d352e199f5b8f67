from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.cleanup import cleanup, stray_processes, sweep
from harness.ipcnames import SHM_DIR, pid_alive, runner_pid
from harness.names import PREFIX, NameSource, new_run_prefix, read_journal
from servers.transports import sysv


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After the last test: no process the tests started, no worker or server of a run
    that is gone, no IPC object of ours. Whatever is found is removed, then the session
    fails loudly, so one broken test cannot leave the machine busy for the next."""
    yield
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=10)
    strays = stray_processes()
    objects = [p.name for p in SHM_DIR.iterdir() if PREFIX in p.name
               and (runner_pid(p.name) == os.getpid() or not pid_alive(runner_pid(p.name) or 0))]
    cleanup()
    sweep(f"{PREFIX}{os.getpid()}-")
    assert not children, f"the tests left processes running: {[c.pid for c in children]}"
    assert not strays, f"workers or servers of finished runs were still running: {strays}"
    assert not objects, f"IPC objects were left in {SHM_DIR}: {objects}"


@pytest.fixture
def dead_runs_object() -> Iterator[Path]:
    """A /dev/shm object of a run whose runner is gone (its pid belongs to no one now),
    as a SIGKILLed run strands it; removed at teardown whatever the test did."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    leftover = SHM_DIR / f"{PREFIX}{child.pid}-beef00-0-0-shm"
    leftover.write_bytes(b"x")
    yield leftover
    leftover.unlink(missing_ok=True)


def shm_objects(prefix: str) -> list[str]:
    return [p.name for p in SHM_DIR.iterdir() if prefix in p.name]


@pytest.fixture
def names(tmp_path: Path) -> Iterator[NameSource]:
    """A unique run prefix with a journal; fails the test if anything is left behind."""
    prefix = new_run_prefix()
    source = NameSource(prefix, tmp_path / "journal")
    yield source
    leaked = shm_objects(prefix)
    sweep(prefix)
    sysv_leaked = sysv_objects(tmp_path / "journal", remove=True)
    assert not leaked, f"IPC objects left in /dev/shm: {leaked}"
    assert not sysv_leaked, f"SysV objects left (ipcs): {sysv_leaked}"


def sysv_objects(journal: Path, remove: bool = False) -> list[str]:
    """The SysV objects (as ``ipcs`` lists them) whose keys the journal's names give."""
    keys = {(kind, sysv.key_of(name)) for kind, name in
            (read_journal(journal.read_text()) if journal.exists() else [])
            if kind in sysv.PROC_TABLES}
    found = []
    for kind in sysv.PROC_TABLES:
        for key, ident, _uid, _changed in sysv.listed(kind):
            if (kind, key) in keys:
                found.append(f"{kind} key {key:#x} id {ident}")
                if remove:
                    sysv.remove(kind, ident)
    return found


@pytest.fixture
def no_child_left() -> Iterator[None]:
    yield
    children = []
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.append(pid)
    except ChildProcessError:
        pass
    assert not children, f"children were not reaped by the supervisor: {children}"


# .ci/run sets it: there a PostgreSQL server must start, or the history tests fail.
REQUIRE_POSTGRES = "IPCBENCH_REQUIRE_POSTGRES"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server for the session (pgserver: PostgreSQL's own binaries from
    PyPI; as root it runs them as a user of its own). Where none can start the tests that
    need it skip and say why, unless $IPCBENCH_REQUIRE_POSTGRES is set."""
    def unavailable(why: str) -> None:
        if os.environ.get(REQUIRE_POSTGRES):
            pytest.fail(f"no PostgreSQL server, and {REQUIRE_POSTGRES} is set: {why}")
        pytest.skip(f"no PostgreSQL server: {why}")

    try:
        import pgserver
    except ImportError as exc:
        unavailable(f"pgserver is not installed ({exc})")
    folder = Path(tempfile.mkdtemp(prefix="ipcbench-pg-"))
    try:
        server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        unavailable(f"pgserver could not start one ({type(exc).__name__}: {exc})")
    try:
        yield server
    finally:
        server.cleanup()  # stops it, then removes its data
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: Any) -> Iterator[str]:
    """A new, empty database on the session's server: its postgresql:// URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres_server.psql(f"CREATE DATABASE {name};")
    yield postgres_server.get_uri(name)
    postgres_server.psql(f"DROP DATABASE {name} WITH (FORCE);")
