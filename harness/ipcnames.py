"""Names for IPC objects and the journal of what a run created.

Every name carries the run's prefix ``ipcb-<runner pid>-<random>-``. Objects
are unlinked right after creation (fork keeps them alive), so normally
nothing is ever visible; the journal and the sweep (``harness.cleanup``)
cover the microseconds in between and runs killed with SIGKILL. The mqueue
file system is often not mounted, so message queues can only be found again
through the journal.
"""

from __future__ import annotations

import itertools
import os
import secrets
import tempfile
from pathlib import Path

PREFIX = "ipcb-"
SHM_DIR = Path("/dev/shm")
MQUEUE_DIR = Path("/dev/mqueue")


def state_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/ipcbench-{os.getuid()}"
    path = Path(base) / "ipcbench" if "XDG_RUNTIME_DIR" in os.environ else Path(base)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def new_run_prefix() -> str:
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-"


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


class NameSource:
    """Hands out unique names under a prefix and journals each before it is created."""

    def __init__(self, prefix: str, journal: Path | None = None) -> None:
        self.prefix = prefix
        self._journal = journal
        self._counter = itertools.count()

    def __call__(self, tag: str) -> str:
        name = f"/{self.prefix}{next(self._counter)}-{tag}"
        if self._journal is not None:
            fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{name}\n".encode())
            finally:
                os.close(fd)
        return name

    def scratch(self, tag: str) -> tempfile.TemporaryDirectory[str]:
        """A temporary folder named under the run prefix: removed on exit, and by the
        sweep if the worker is SIGKILLed (Ctrl-C, a worker timeout) before it can."""
        return tempfile.TemporaryDirectory(prefix=f"{self.prefix.lstrip('/')}{tag}-",
                                           dir=scratch_root())


def scratch_root() -> Path:
    return Path(tempfile.gettempdir())


def journal_path(prefix: str) -> Path:
    return state_dir() / f"{prefix}names"


def stage_record(prefix: str) -> Path:
    """Where a run notes its unfinished output folder, for cleanup after a SIGKILL."""
    return state_dir() / f"{prefix}stage"
