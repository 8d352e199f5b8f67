"""What every server process does first, forked or exec'd: die with its parent, place itself.

Only ``os``, ``ctypes`` and ``signal``: an exec'd server (``servers.standalone``)
imports this and nothing of the transports, so its start-up measures an
interpreter, not our imports.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_ORPHANED = 3


class ServerSetup:
    """How a server places itself: CPU, scheduling class, who its parent is.

    A plain class: a NamedTuple would import ``typing``, and an exec'd server's start
    measures the interpreter, not our imports."""

    __slots__ = ("cpu", "parent_pid", "sched_batch")

    def __init__(self, cpu: int | None, sched_batch: bool, parent_pid: int) -> None:
        self.cpu = cpu
        self.sched_batch = sched_batch
        self.parent_pid = parent_pid


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when the parent dies, then close the race."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(EXIT_ORPHANED)


def place(setup: ServerSetup) -> None:
    if setup.cpu is not None:
        os.sched_setaffinity(0, {setup.cpu})
    if setup.sched_batch:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
