"""Fixed-frame channel over byte-stream file descriptors (pipes, Unix sockets)."""

from __future__ import annotations

import os
import select
from functools import partial

from servers.transports.base import Buffer, Channel, PeerGone, PeerTimeout, Recv, Send

# POSIX makes pipe writes of at most PIPE_BUF bytes atomic, so one read gets the frame.
ATOMIC_FRAME = select.PIPE_BUF


class StreamChannel(Channel):
    """Frames of exactly ``payload`` bytes; a 0-byte frame travels as a 1-byte token
    because a zero-length write wakes nobody."""

    def __init__(self, rfd: int, wfd: int, payload: int) -> None:
        self.payload = payload
        self._rfd = rfd
        self._wfd = wfd
        self._wire = max(payload, 1)
        self._buf = bytearray(self._wire)
        self._view = memoryview(self._buf)
        self._token = b"\0"

    def send(self, data: Buffer) -> None:
        view = memoryview(data) if self.payload else memoryview(self._token)
        try:
            while view:
                view = view[os.write(self._wfd, view) :]
        except BlockingIOError:
            raise PeerTimeout(f"send blocked longer than the timeout on fd {self._wfd}") from None
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone("peer closed its end") from None

    def recv(self) -> Buffer:
        view, wire, got = self._view, self._wire, 0
        try:
            while got < wire:
                n = os.readv(self._rfd, [view[got:]])
                if n == 0:
                    raise PeerGone("peer closed its end (EOF)")
                got += n
        except BlockingIOError:
            raise PeerTimeout(f"no message within the timeout on fd {self._rfd}") from None
        except ConnectionResetError:
            raise PeerGone("peer reset the connection") from None
        return view[: self.payload]

    def timed_ops(self) -> tuple[Send, Recv | None]:
        # Bound builtins: no Python frame per message. A dead peer still surfaces,
        # as EPIPE on the next write, and the batch check catches a short frame.
        if 0 < self.payload <= ATOMIC_FRAME:
            return partial(os.write, self._wfd), partial(os.read, self._rfd, self.payload)
        return self.send, self.recv

    def close(self) -> None:
        fds = {self._rfd, self._wfd}
        self._rfd = self._wfd = -1
        for fd in fds - {-1}:
            try:
                os.close(fd)
            except OSError:
                pass
