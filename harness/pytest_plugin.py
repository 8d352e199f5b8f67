"""ipcbench's pytest plugin (the ``pytest11`` entry point): the fixtures that
``harness.contract.TransportContract`` needs, for ipcbench's tests and a user's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.names import NameSource, new_run_prefix


@pytest.fixture
def ipcbench_names(tmp_path: Path) -> Iterator[NameSource]:
    """A fresh run prefix whose names are journaled; fails the test if any object of it
    (in /dev/shm, a SysV key, a POSIX queue, a private folder) is left behind."""
    from harness.cleanup import sweep
    from harness.ipcnames import journal_path

    prefix = new_run_prefix()
    journal = journal_path(prefix)
    yield NameSource(prefix, journal)
    left = sweep(prefix, dry_run=True).removed
    sweep(prefix)
    journal.unlink(missing_ok=True)
    assert not left, f"IPC objects left behind: {left}"


@pytest.fixture
def ipcbench_no_child_left() -> Iterator[None]:
    """Fails the test if a child process was left unreaped (the supervisor reaps its own)."""
    yield
    children = []
    try:
        while (pid := os.waitpid(-1, os.WNOHANG)[0]) != 0:
            children.append(pid)
    except ChildProcessError:
        pass
    assert not children, f"children were not reaped by the supervisor: {children}"
