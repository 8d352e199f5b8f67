"""A run's output folder: claimed up front, written hidden, and shown whole or not at all.

A run writes into a hidden sibling, ``.<out>.partial-<runner pid>``, and renames it to
``<out>`` once every file is in it. That stage is also the claim on ``<out>``: a second
run that finds a live runner's stage for the same ``<out>`` is refused before it
measures anything (or, for a default name, takes another). The final rename never
costs a run: if ``<out>`` was filled meanwhile, the run lands beside it, under a name
of its own, and says so.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UsageError
from harness.ipcnames import stage_record, write_stage_record

STAGE = ".{name}.partial-{pid}"


@dataclass
class Staging:
    path: Path  # where the run writes
    out: Path  # where it ends up (another name if ``out`` was taken meanwhile)
    notes: list[str] = field(default_factory=list)


# The folders this process finished: an interrupt after the rename is no failed run.
completed: list[Path] = []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def writers(out: Path) -> list[int]:
    """Pids of other live runs staging into ``out``."""
    found = []
    for stage in out.parent.glob(STAGE.format(name=glob.escape(out.name), pid="*")):
        pid = stage.name.rsplit("-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            found.append(int(pid))
    return sorted(found)


def _taken(out: Path) -> bool:
    return out.exists() and (not out.is_dir() or any(out.iterdir()))


def free_name(out: Path) -> Path:
    """``out``, or ``out-<pid>`` when ``out`` is taken or being written (two runs with
    default names started in the same second)."""
    return out.with_name(f"{out.name}-{os.getpid()}") if _taken(out) or writers(out) else out


@contextlib.contextmanager
def staged_folder(out: Path, prefix: str) -> Iterator[Staging]:
    """The stage to write into; renamed to ``out`` only when the block ends normally.

    The stage is noted under the run's prefix, so ``ipcbench cleanup`` can remove it
    if the run is killed with SIGKILL."""
    if _taken(out):
        raise UsageError(f"--out {out}: already exists and is not an empty folder")
    stage = out.parent / STAGE.format(name=out.name, pid=os.getpid())
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage.mkdir()
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror})") from None
    record = stage_record(prefix)
    whole = False  # once the block has ended normally, the stage is a whole run
    try:
        write_stage_record(record, stage)
        # After our own stage exists, so that of two runs starting together at least
        # one sees the other (both may, and then both stop: nothing was measured yet).
        others = writers(out)
        if others:
            raise UsageError(f"--out {out}: run pid {others[0]} is writing there")
        staging = Staging(stage, out)
        yield staging
        whole = True
        staging.out = _publish(stage, out, staging.notes)
        completed.append(staging.out)
    finally:
        if not whole:  # a whole run is renamed away, or kept where the error names it
            shutil.rmtree(stage, ignore_errors=True)
        record.unlink(missing_ok=True)


def _publish(stage: Path, out: Path, notes: list[str]) -> Path:
    """Rename the stage to ``out``; if something filled ``out`` meanwhile, to the first
    free ``out-2``, ``out-3``... beside it."""
    for n in range(1, 1000):
        target = out if n == 1 else out.with_name(f"{out.name}-{n}")
        try:
            stage.rename(target)  # replaces an empty folder; fails on a full one
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            continue
        if target != out:
            notes.append(f"--out {out} was filled by someone else while this run measured; "
                         f"the run is in {target}")
        return target
    raise UsageError(f"--out {out}: no free name beside it; the run is in {stage}")
