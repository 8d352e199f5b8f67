"""``fifo``: two named pipes (mkfifo) in a private 0700 folder, one per direction.

Once open, a fifo is a pipe: the same kernel object and the same fixed-frame channel.
What differs is how the ends meet: by path, as unrelated processes (lat_fifo) reach them.
Both ends are open before fork, so the folder goes at once (as shm unlinks its names):
nothing is left on disk for a SIGKILL to leak.
"""

from __future__ import annotations

import os

from servers.transports.base import (
    Link,
    Names,
    Transport,
    close_fds,
    private_folder,
    remove_folder,
)
from servers.transports.pipe import PipeLink, pipe_max_size


def open_fifo(path: str) -> tuple[int, int]:
    """Both ends of a new fifo at ``path``, as os.pipe returns them. The read end opens
    first, non-blocking (a blocking open waits for a writer), then turns blocking."""
    os.mkfifo(path, 0o600)
    read = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        write = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        os.close(read)
        raise
    os.set_blocking(read, True)
    return read, write


class FifoLink(PipeLink):
    def __init__(self, names: Names, payload: int) -> None:
        self._folder = private_folder(names, "fifo")
        try:
            c2s = open_fifo(os.path.join(self._folder, "c2s"))
            try:
                s2c = open_fifo(os.path.join(self._folder, "s2c"))
            except OSError:
                close_fds(*c2s)
                raise
        finally:
            remove_folder(self._folder)
        try:
            super().__init__(payload, pipes=(c2s, s2c))
        except OSError:  # F_SETPIPE_SZ refused: the fifos go with the error
            close_fds(*c2s, *s2c)
            raise


class FifoTransport(Transport):
    name = "fifo"

    def max_payload(self) -> int:
        return pipe_max_size()  # as a pipe: a fifo is one

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return FifoLink(names, payload)
