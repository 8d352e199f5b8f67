from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cleanup import sweep
from harness.ipcnames import SHM_DIR
from harness.names import NameSource, new_run_prefix


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
    assert not leaked, f"IPC objects left in /dev/shm: {leaked}"


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
