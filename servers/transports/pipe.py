"""``pipe``: two anonymous pipes, one per direction."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

from servers.transports.base import Channel, Link, Names, Transport, close_fds
from servers.transports.stream import StreamChannel

DEFAULT_PIPE_SIZE = 64 << 10  # the kernel's default pipe buffer
# What one end of a pipe pair speaks: (read fd, write fd, payload bytes) -> Channel.
ChannelOver = Callable[[int, int, int], Channel]


def pipe_max_size() -> int:
    try:
        with open("/proc/sys/fs/pipe-max-size") as limit:
            return int(limit.read())
    except OSError:
        return DEFAULT_PIPE_SIZE


class PipeLink(Link):
    """Two pipes, one per direction; ``channel`` is what each end speaks over them
    (fixed frames here, the storage stack's variable frames in ``servers.layers``)."""

    def __init__(self, payload: int, channel: ChannelOver = StreamChannel,
                 resize_required: bool = True,
                 pipes: tuple[tuple[int, int], tuple[int, int]] | None = None) -> None:
        """``pipes``: the (read, write) fds of client-to-server and server-to-client, if
        not two fresh anonymous pipes (a fifo's ends)."""
        self._payload = payload
        self._channel = channel
        self._c2s, self._s2c = pipes or (os.pipe(), os.pipe())
        if payload > DEFAULT_PIPE_SIZE:
            # Without a bigger buffer a large frame crosses in 64 KiB chunks,
            # each a wake-up: that would measure chunking, not copying.
            size = min(pipe_max_size(), max(payload, DEFAULT_PIPE_SIZE))
            for r, _w in (self._c2s, self._s2c):
                try:
                    fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, size)
                except OSError:  # EPERM past the user's pipe pages
                    if resize_required:
                        raise

    def client(self) -> Channel:
        close_fds(self._c2s[0], self._s2c[1])
        return self._channel(self._s2c[0], self._c2s[1], self._payload)

    def server(self) -> Channel:
        close_fds(self._c2s[1], self._s2c[0])
        return self._channel(self._c2s[0], self._s2c[1], self._payload)

    def loopback(self) -> tuple[Channel, Channel]:
        return (self._channel(self._s2c[0], self._c2s[1], self._payload),
                self._channel(self._c2s[0], self._s2c[1], self._payload))

    def close(self) -> None:
        close_fds(*self._c2s, *self._s2c)


class PipeTransport(Transport):
    name = "pipe"

    def max_payload(self) -> int:
        # Beyond the largest pipe buffer a frame crosses in chunks, a wake-up
        # each: that measures chunking, not copying.
        return pipe_max_size()

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return PipeLink(payload)
