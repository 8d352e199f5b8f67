"""Where a run's IPC objects and records live on this machine, and whose they are.

Every name carries the run's prefix (``harness.names``). Objects
are unlinked right after creation (fork keeps them alive), so normally
nothing is ever visible; the journal and the sweep (``harness.cleanup``)
cover the microseconds in between and runs killed with SIGKILL. The mqueue
file system is often not mounted, so message queues can only be found again
through the journal.

Cleanup acts on what the journal and stage records name, so they are trusted
only inside a state directory that is ours alone, and only as regular files of
ours that no symlink led to.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.errors import UsageError
from harness.names import PREFIX

SHM_DIR = Path("/dev/shm")
MQUEUE_DIR = Path("/dev/mqueue")


def state_dir() -> Path:
    """Our private folder for journals and stage records, made 0700 if it is missing.

    The fallback lives in /tmp, where another user may have made it first (or put a
    symlink there): an existing one must be a real folder, ours, writable by us alone."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(runtime) / "ipcbench" if runtime else Path(f"/tmp/ipcbench-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UsageError(f"state folder {path}: cannot create it ({exc.strerror})") from None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() \
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"state folder {path}: not a folder owned by uid {os.geteuid()} "
                         "and writable by it alone (a symlink or another user's?); remove it")
    return path


def runner_pid(prefix: str) -> int | None:
    """The pid of the runner that owns a name or prefix, or None if it is not ours."""
    name = prefix.lstrip("/").removeprefix("sem.")
    if not name.startswith(PREFIX):
        return None
    pid = name[len(PREFIX) :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def run_prefix(name: str) -> str | None:
    """The prefix ``ipcb-<runner pid>-<random>-`` of the run a name belongs to, or None."""
    bare = name.lstrip("/").removeprefix("sem.")
    pid, _, rest = bare.removeprefix(PREFIX).partition("-")
    rand = rest.partition("-")[0]
    if not bare.startswith(PREFIX) or not pid.isdigit() or not rand or rand == rest:
        return None
    return f"{PREFIX}{pid}-{rand}-"


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


@dataclass(frozen=True)
class StageRecord:
    stage: Path
    pid: int | None = None  # the runner's, with its start time: a reused pid is not it
    started: float | None = None


def write_stage_record(record: Path, stage: Path) -> None:
    """Note ``stage`` with this runner's pid and start time. A new file only (O_EXCL),
    never through a symlink: whatever is already there was not written by this run."""
    data = {"stage": str(stage.resolve()), "pid": os.getpid(),
            "started": psutil.Process().create_time()}
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(record, flags, 0o600)
    except OSError as exc:
        raise UsageError(f"stage record {record}: cannot create it ({exc.strerror})") from None
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)


def read_private(path: Path) -> str | None:
    """The text of ``path`` if it is a regular file of ours reached without a symlink,
    else None: planted records must not steer what cleanup removes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None
        return file.read().decode(errors="replace")


def read_stage_record(record: Path) -> StageRecord | None:
    """A stage record as written by ``write_stage_record`` (or an older plain path),
    or None if it is not one of ours."""
    text = read_private(record)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return StageRecord(Path(text.strip()))  # an older record: the path alone
    try:
        return StageRecord(Path(data["stage"]), int(data["pid"]), float(data["started"]))
    except (TypeError, KeyError, ValueError):
        return None
