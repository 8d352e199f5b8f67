"""The server entry point: what a freshly forked server does before its role runs."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from servers.lifeline import (  # noqa: F401 (EXIT_ORPHANED, die_with_parent: re-exported)
    EXIT_ERROR,
    EXIT_OK,
    EXIT_ORPHANED,
    ServerSetup,
    die_with_parent,
    place,
)
from servers.transports.base import PeerTimeout


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
