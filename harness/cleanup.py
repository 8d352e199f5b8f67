"""Removing what runs leave behind: IPC objects and processes.

A run sweeps its own prefix at exit (Ctrl-C and SIGTERM included) and the
leftovers of dead runs at start; ``ipcbench cleanup`` does the same by hand
after a SIGKILL.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import posix_ipc
import psutil

from harness.ipcnames import (
    MQUEUE_DIR,
    SHM_DIR,
    pid_alive,
    runner_pid,
    scratch_root,
    state_dir,
)
from harness.names import PREFIX

WORKER_MODULE = "harness.worker"
STANDALONE_MODULE = "servers.standalone"  # exec'd servers carry --run too


@dataclass
class SweepReport:
    removed: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.removed or self.killed)


def _owned(name: str, prefix: str | None, include_live_runs: bool) -> bool:
    """Whether an object or journal belongs to ``prefix``, or to a run that is gone."""
    bare = name.lstrip("/").removeprefix("sem.")
    if prefix is not None:
        return bare.startswith(prefix)
    pid = runner_pid(bare)
    return pid is not None and (include_live_runs or not pid_alive(pid))


def _ipc_files() -> Iterator[Path]:
    for folder in (SHM_DIR, MQUEUE_DIR):
        if folder.is_dir():
            yield from folder.iterdir()


def sweep(prefix: str | None = None, include_live_runs: bool = False) -> SweepReport:
    """Remove IPC objects of ``prefix`` (or of every run whose runner is gone)."""
    report = SweepReport()
    for path in _ipc_files():
        if _owned(path.name, prefix, include_live_runs):
            try:
                path.unlink()
                report.removed.append(str(path))
            except FileNotFoundError:
                pass
    for folder in scratch_root().glob(f"{prefix or PREFIX}*"):  # probes' scratch folders
        if folder.is_dir() and _owned(folder.name, prefix, include_live_runs):
            shutil.rmtree(folder, ignore_errors=True)
            report.removed.append(str(folder))
    for journal in state_dir().glob(f"{prefix or PREFIX}*names"):
        if _owned(journal.name, prefix, include_live_runs):
            report.removed += _unlink_journaled_queues(journal)
            journal.unlink(missing_ok=True)
    # A live run removes its own unfinished folder; these are of runs that are gone.
    for record in state_dir().glob(f"{PREFIX}*stage") if prefix is None else ():
        if _owned(record.name, prefix, include_live_runs):
            stage = Path(record.read_text().strip())
            if stage.name.startswith(".") and ".partial-" in stage.name and stage.is_dir():
                shutil.rmtree(stage, ignore_errors=True)
                report.removed.append(str(stage))
            record.unlink(missing_ok=True)
    return report


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


def stray_processes(prefix: str | None = None, include_live_runs: bool = False) -> list[int]:
    """Workers and their forked servers (same command line) of gone runs."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if not {WORKER_MODULE, STANDALONE_MODULE} & set(cmdline) or "--run" not in cmdline:
            continue
        at = cmdline.index("--run") + 1
        run = cmdline[at] if at < len(cmdline) else ""
        if _owned(run, prefix, include_live_runs):
            found.append(proc.info["pid"])
    return found


def kill_strays(prefix: str | None = None, include_live_runs: bool = False) -> list[int]:
    procs = []
    for pid in stray_processes(prefix, include_live_runs):
        try:
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)
    return [p.pid for p in procs]


def cleanup(prefix: str | None = None, include_live_runs: bool = False) -> SweepReport:
    """Processes first (they may still hold objects), then the objects."""
    killed = kill_strays(prefix, include_live_runs)
    report = sweep(prefix, include_live_runs)
    report.killed = killed
    return report
