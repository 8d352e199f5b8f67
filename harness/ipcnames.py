"""Names for IPC objects, the journal of what a run created, and the sweep.

Every name carries the run's prefix ``ipcb-<runner pid>-<random>-``. Objects
are unlinked right after creation (fork keeps them alive), so normally
nothing is ever visible; the journal and the sweep cover the microseconds in
between and runs killed with SIGKILL. The mqueue file system is often not
mounted, so message queues can only be found again through the journal.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import posix_ipc

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


def journal_path(prefix: str) -> Path:
    return state_dir() / f"{prefix}names"


@dataclass
class SweepReport:
    removed: list[str]

    def __bool__(self) -> bool:
        return bool(self.removed)


def _leftover_files(owner_alive: bool) -> Iterator[Path]:
    for folder in (SHM_DIR, MQUEUE_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            pid = runner_pid(path.name)
            if pid is not None and (owner_alive or not pid_alive(pid)):
                yield path


def sweep(prefix: str | None = None, include_live_runs: bool = False) -> SweepReport:
    """Remove IPC objects of ``prefix`` (or of every run whose runner is gone)."""
    removed: list[str] = []
    if prefix is not None:
        candidates = [p for f in (SHM_DIR, MQUEUE_DIR) if f.is_dir()
                      for p in f.iterdir() if p.name.removeprefix("sem.").startswith(prefix)]
    else:
        candidates = list(_leftover_files(include_live_runs))
    for path in candidates:
        try:
            path.unlink()
            removed.append(str(path))
        except FileNotFoundError:
            pass
    for journal in state_dir().glob(f"{prefix or PREFIX}*names"):
        pid = runner_pid(journal.name)
        if prefix is None and not include_live_runs and pid is not None and pid_alive(pid):
            continue
        removed.extend(_unlink_journaled_queues(journal))
        journal.unlink(missing_ok=True)
    return SweepReport(removed)


def _unlink_journaled_queues(journal: Path) -> list[str]:
    removed = []
    for name in journal.read_text().split():
        if "-mq-" not in name:
            continue  # shm and semaphores show up in /dev/shm and were swept there
        try:
            posix_ipc.unlink_message_queue(name)
            removed.append(f"mq:{name}")
        except posix_ipc.ExistentialError:
            pass
    return removed
