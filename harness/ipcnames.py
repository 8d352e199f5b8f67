"""Where a run's IPC objects and records live on this machine, and whose they are.

Every name carries the run's prefix (``harness.names``). Objects
are unlinked right after creation (fork keeps them alive), so normally
nothing is ever visible; the journal and the sweep (``harness.cleanup``)
cover the microseconds in between and runs killed with SIGKILL. The mqueue
file system is often not mounted, so message queues can only be found again
through the journal.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from harness.names import PREFIX

SHM_DIR = Path("/dev/shm")
MQUEUE_DIR = Path("/dev/mqueue")


def state_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/ipcbench-{os.getuid()}"
    path = Path(base) / "ipcbench" if "XDG_RUNTIME_DIR" in os.environ else Path(base)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def runner_pid(prefix: str) -> int | None:
    """The pid of the runner that owns a name or prefix, or None if it is not ours."""
    name = prefix.lstrip("/").removeprefix("sem.")
    if not name.startswith(PREFIX):
        return None
    pid = name[len(PREFIX) :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scratch_root() -> Path:
    """Where probes' scratch folders go (``NameSource.scratch``: the default temp dir)."""
    return Path(tempfile.gettempdir())


def journal_path(prefix: str) -> Path:
    return state_dir() / f"{prefix}names"


def stage_record(prefix: str) -> Path:
    """Where a run notes its unfinished output folder, for cleanup after a SIGKILL."""
    return state_dir() / f"{prefix}stage"
