"""Removing what runs leave behind: IPC objects and processes.

A run sweeps its own prefix at exit (Ctrl-C and SIGTERM included) and the
leftovers of dead runs at start; ``ipcbench cleanup`` does the same by hand
after a SIGKILL.

A name alone decides nothing: the run prefix is in every worker's argv, so any
user can make objects, folders and processes that carry it. Only what is ours
(our uid, looked at without following a symlink) is removed or killed, and a
run counts as gone only if no process of ours that started with its runner holds
the runner's pid.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import posix_ipc
import psutil

from harness.ipcnames import (
    MQUEUE_DIR,
    SHM_DIR,
    StageRecord,
    read_private,
    read_stage_record,
    run_prefix,
    runner_pid,
    scratch_root,
    stage_record,
    state_dir,
)
from harness.names import PREFIX, read_journal
from servers.transports import sysv
from servers.transports.base import Kind

WORKER_MODULE = "harness.worker"
STANDALONE_MODULE = "servers.standalone"  # exec'd servers carry --run too
PYTHON = re.compile(r"python[0-9.]*")  # how the runner's and supervisor's argv[0] is named
# psutil derives a start time from the boot time, which it reads to the second.
START_SLACK_S = 1.0


@dataclass
class SweepReport:
    removed: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # runs left alone: their runner is alive
    dry_run: bool = False  # then removed and killed are what would have been

    def __bool__(self) -> bool:
        return bool(self.removed or self.killed)


def runner_alive(run: str) -> bool:
    """Whether the runner of ``run`` still runs: its pid is a process of ours and, where
    the run's stage record notes the runner's start time, a process that started then
    (not another one that got the pid later)."""
    pid = runner_pid(run)
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.uids().effective != os.geteuid():
            return False
        noted = read_stage_record(stage_record(run))
        if noted is not None and noted.pid == pid and noted.started is not None \
                and abs(proc.create_time() - noted.started) > START_SLACK_S:
            return False
    except psutil.NoSuchProcess:  # zombies too: a dead runner's workers died with it
        return False
    except psutil.AccessDenied:
        return True  # cannot tell: leave it be
    return True


class _Runs:
    """Which names to act on: those under ``prefix`` (a caller's own run), or those of
    runs whose runner is gone; of live runs too only with ``force``."""

    def __init__(self, prefix: str | None, include_live_runs: bool, force: bool) -> None:
        self.prefix = prefix
        self.live = include_live_runs and (prefix is not None or force)
        self.alive: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        bare = name.lstrip("/").removeprefix("sem.")
        if self.prefix is not None:
            return bare.startswith(self.prefix)
        run = run_prefix(bare)
        if run is None:
            return False
        if self.live:
            return True
        if run not in self.alive:
            self.alive[run] = runner_alive(run)
        return not self.alive[run]

    def skipped(self) -> list[str]:
        return sorted(run for run, alive in self.alive.items() if alive)


def _ours(path: Path, kind: Callable[[int], bool]) -> bool:
    """Whether ``path`` itself (never what a symlink points to) is a ``kind`` of ours."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return kind(info.st_mode) and info.st_uid == os.geteuid()


def _ipc_files() -> Iterator[Path]:
    for folder in (SHM_DIR, MQUEUE_DIR):
        if folder.is_dir():
            yield from folder.iterdir()


def sweep(prefix: str | None = None, include_live_runs: bool = False, *,
          dry_run: bool = False, force: bool = False) -> SweepReport:
    """Remove IPC objects of ``prefix`` (or of every run whose runner is gone)."""
    wanted = _Runs(prefix, include_live_runs, force)
    report = _sweep(wanted, dry_run)
    report.skipped = wanted.skipped()
    return report


def _sweep(wanted: _Runs, dry_run: bool) -> SweepReport:
    report = SweepReport(dry_run=dry_run)
    glob = wanted.prefix or PREFIX
    for path in _ipc_files():
        if _ours(path, stat.S_ISREG) and wanted(path.name):
            try:
                if not dry_run:
                    path.unlink()
                report.removed.append(str(path))
            except FileNotFoundError:
                pass
    for folder in scratch_root().glob(f"{glob}*"):  # probes' scratch folders
        # The temp dir is sticky: a folder of ours there cannot be swapped after this check,
        # and rmtree follows no symlink inside it.
        if _ours(folder, stat.S_ISDIR) and wanted(folder.name):
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
            report.removed.append(str(folder))
    state = state_dir()
    for journal in state.glob(f"{glob}*names"):
        if _ours(journal, stat.S_ISREG) and wanted(journal.name):
            report.removed += _remove_journaled(journal, dry_run)
            if not dry_run:
                journal.unlink(missing_ok=True)
    # A live run removes its own unfinished folder; these are of runs that are gone.
    for record in state.glob(f"{PREFIX}*stage") if wanted.prefix is None else ():
        noted = read_stage_record(record) if _ours(record, stat.S_ISREG) and \
            wanted(record.name) else None
        if noted is None:
            continue  # a live run's, or not a regular file of ours: nothing it says counts
        if _removable_stage(noted, record.name):
            if not dry_run:
                shutil.rmtree(noted.stage, ignore_errors=True)
            report.removed.append(str(noted.stage))
        if not dry_run:
            record.unlink(missing_ok=True)
    return report


def _removable_stage(noted: StageRecord, record_name: str) -> bool:
    """Whether a stage record names an unfinished run folder we may remove: the exact
    ``.<out>.partial-<runner pid>`` the run made, a real folder of ours reached through
    no symlink and no '..', in a folder no other user can rename things in."""
    stage, pid = noted.stage, runner_pid(record_name)
    if not stage.is_absolute() or os.path.realpath(stage) != str(stage):
        return False
    if re.fullmatch(rf"\..+\.partial-{pid}", stage.name) is None or not _ours(stage, stat.S_ISDIR):
        return False
    try:
        parent = os.lstat(stage.parent)
    except OSError:
        return False
    writable_by_others = parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return parent.st_uid in (0, os.geteuid()) and \
        (not writable_by_others or bool(parent.st_mode & stat.S_ISVTX))


def _remove_journaled(journal: Path, dry_run: bool) -> list[str]:
    text = read_private(journal)
    if text is None:
        return []
    run = "/" + journal.name.removesuffix("names")
    removed = []
    sysv_keys: dict[str, set[int]] = {}
    for kind, name in read_journal(text):
        # shm and semaphores show up in /dev/shm and were swept there, folders in the
        # temp dir; a journal speaks only for its own run's queues and SysV objects.
        if not name.startswith(run) or "/" in name[1:]:
            continue
        if kind == Kind.MQ and _queue_ours(name) and (dry_run or _unlink_queue(name)):
            removed.append(f"mq:{name}")
        elif kind in sysv.PROC_TABLES:
            sysv_keys.setdefault(kind, set()).add(sysv.key_of(name))
    noted = read_stage_record(stage_record(run.lstrip("/")))
    since = int(noted.started) if noted is not None and noted.started is not None else 0
    return removed + _remove_sysv(sysv_keys, since, dry_run)


def _remove_sysv(keys: dict[str, set[int]], since: int, dry_run: bool) -> list[str]:
    """The SysV objects whose keys the journal's names give, made by our uid and not
    before the run started (``since``, where its stage record says), found where ``ipcs``
    finds them and removed by id. A name is journaled before its object is made, so a
    key that was taken already is in the journal too: what holds it is older than the
    run, and is left alone."""
    removed = []
    for kind, wanted in keys.items():
        for found in sysv.listed(kind):
            if found.key in wanted and found.creator_uid == os.geteuid() \
                    and found.changed >= since and (dry_run or sysv.remove(kind, found.ident)):
                removed.append(f"{kind}:{found.key:#010x} (id {found.ident})")
    return removed


def _queue_ours(name: str) -> bool:
    """Whether queue ``name`` exists and is ours. /dev/mqueue is often not mounted, but on
    Linux a queue descriptor is a file descriptor: fstat gives its owner."""
    try:
        queue = posix_ipc.MessageQueue(name, read=True, write=False)
    except (posix_ipc.Error, OSError):
        return False  # gone, or not ours to open
    try:
        return os.fstat(queue.mqd).st_uid == os.geteuid()
    except OSError:
        return False
    finally:
        queue.close()


def _unlink_queue(name: str) -> bool:
    try:
        posix_ipc.unlink_message_queue(name)
    except posix_ipc.ExistentialError:
        return False
    return True


def _run_argument(cmdline: list[str]) -> str | None:
    """The ``--run`` of a worker or exec'd server started as the runner and supervisor
    start them (``python -I -m MODULE ... --run RUN``; forked servers share the worker's
    command line), else None."""
    if len(cmdline) < 6 or PYTHON.fullmatch(os.path.basename(cmdline[0])) is None:
        return None
    if cmdline[1:3] != ["-I", "-m"] or cmdline[3] not in (WORKER_MODULE, STANDALONE_MODULE):
        return None
    try:
        at = cmdline.index("--run", 4) + 1
    except ValueError:
        return None
    return cmdline[at] if at < len(cmdline) else None


def _stray_procs(wanted: _Runs) -> list[psutil.Process]:
    me = os.geteuid()
    found = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        uids = proc.info["uids"]
        run = _run_argument(proc.info["cmdline"] or [])
        if run is not None and uids is not None and uids.real == me == uids.effective \
                and wanted(run):
            found.append(proc)
    return found


def stray_processes(prefix: str | None = None, include_live_runs: bool = False, *,
                    force: bool = False) -> list[int]:
    """Workers and their forked servers (same command line) of gone runs."""
    return [proc.pid for proc in _stray_procs(_Runs(prefix, include_live_runs, force))]


def _kill(wanted: _Runs, dry_run: bool) -> list[int]:
    procs = _stray_procs(wanted)
    if dry_run:
        return [proc.pid for proc in procs]
    killed = []
    for proc in procs:
        try:
            proc.kill()  # psutil checks first that the pid is still this process
            killed.append(proc)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(killed, timeout=5)
    return [p.pid for p in killed]


def kill_strays(prefix: str | None = None, include_live_runs: bool = False, *,
                dry_run: bool = False, force: bool = False) -> list[int]:
    return _kill(_Runs(prefix, include_live_runs, force), dry_run)


def cleanup(prefix: str | None = None, include_live_runs: bool = False, *,
            dry_run: bool = False, force: bool = False) -> SweepReport:
    """Processes first (they may still hold objects), then the objects.

    Without ``prefix``, only runs whose runner is gone are touched; ``include_live_runs``
    (``--all``) reaches live runs only with ``force`` and otherwise lists them as
    ``skipped``. With ``dry_run`` nothing is killed or removed: the report lists what
    would be."""
    wanted = _Runs(prefix, include_live_runs, force)
    killed = _kill(wanted, dry_run)
    report = _sweep(wanted, dry_run)
    report.killed = killed
    report.skipped = wanted.skipped()
    return report
