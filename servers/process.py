"""The server entry point: what a freshly forked server does before its role runs."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from servers.transports.base import PeerTimeout

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_ORPHANED = 3


@dataclass(frozen=True)
class ServerSetup:
    """How a server places itself: CPU, scheduling class, who its parent is."""

    cpu: int | None
    sched_batch: bool
    parent_pid: int


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


def run_server(setup: ServerSetup, status_fd: int, body: Callable[[], Callable[[], None]]) -> None:
    """Set up, report ``ready`` (or the error) on ``status_fd``, run, and never return.

    ``body`` prepares the role (takes its channel end, builds its handler) and
    returns the loop to run; both happen in the child so nothing of the
    client's end is touched here.
    """
    code = EXIT_ERROR
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die_with_parent(setup.parent_pid)
        place(setup)
        loop = body()
        os.write(status_fd, b"ready\n")
        os.close(status_fd)
        status_fd = -1
        loop()
    except (ConnectionError, PeerTimeout):  # PeerGone, or EPIPE from a bound os.write
        code = EXIT_OK
    except BaseException as exc:  # report anything to the supervisor, then exit
        message = f"error: {type(exc).__name__}: {exc}\n".encode()
        try:
            os.write(status_fd if status_fd >= 0 else 2, message)
        except OSError:
            pass
    finally:
        os._exit(code)
