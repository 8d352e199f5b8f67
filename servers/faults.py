"""The faults experiment's server role: a stateful service that can be made to crash.

Every frame, both ways, is ``id u64 | op u32 | acc u32 | count u64 | payload | crc32 u32``,
of one fixed size no larger than PIPE_BUF, so a frame is written whole or not at all,
even by a process killed in the middle of answering. The CRC covers everything before it.

The service keeps state: ``count`` requests applied and ``acc``, a CRC32 chained over
each applied request's id and payload. Every reply carries that state, so a request
applied twice, or lost, shows in every later reply, not only in its own. Ops:

- ``APPLY``: apply the request once (a repeated id is answered again, not re-applied),
  answer with the new state and the payload echoed;
- ``RESTORE``: take the state the client re-sends to a restarted server;
- ``QUERY``: report the state.

SIGUSR1 plants a bug: the next ``APPLY`` raises ``InjectedFault`` inside the handler and
the process exits with ``EXIT_FAULT``, as a driver with a bad code path would.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import zlib
from collections.abc import Callable
from types import FrameType

from servers.transports.base import Buffer, Channel

HEAD = struct.Struct("<QIIQ")  # id, op (status in replies), acc, count
CRC = struct.Struct("<I")
APPLY, RESTORE, QUERY = 1, 2, 3
OK, BAD = 0, 1
EXIT_FAULT = 70  # an exception escaped the request handler
MAX_PAYLOAD = select.PIPE_BUF - HEAD.size - CRC.size


class InjectedFault(RuntimeError):
    """The planted bug fired."""


def frame_size(payload: int) -> int:
    if not 0 <= payload <= MAX_PAYLOAD:
        raise ValueError(f"faults payload must be 0 to {MAX_PAYLOAD} bytes (one atomic frame)")
    return HEAD.size + payload + CRC.size


class Codec:
    """Builds frames in one reused buffer (valid until the next ``pack``)."""

    def __init__(self, payload: int) -> None:
        self.payload = payload
        self.size = frame_size(payload)
        self._buf = bytearray(self.size)
        self._view = memoryview(self._buf)
        self._end = self.size - CRC.size

    def pack(self, ident: int, op: int, acc: int, count: int, payload: Buffer = b"") -> memoryview:
        HEAD.pack_into(self._buf, 0, ident, op, acc, count)
        if payload:
            self._view[HEAD.size:self._end] = payload
        else:
            self._view[HEAD.size:self._end] = bytes(self.payload)
        CRC.pack_into(self._buf, self._end, zlib.crc32(self._view[:self._end]))
        return self._view


def unpack(frame: Buffer) -> tuple[int, int, int, int] | None:
    """(id, op or status, acc, count), or None when the checksum does not match."""
    end = len(frame) - CRC.size
    if end < HEAD.size or zlib.crc32(frame[:end]) != CRC.unpack_from(frame, end)[0]:
        return None
    return HEAD.unpack_from(frame)


def body(frame: Buffer) -> Buffer:
    """The payload part of a frame."""
    return memoryview(frame)[HEAD.size:len(frame) - CRC.size]


def advance(acc: int, frame: Buffer) -> int:
    """The state after applying ``frame``: both ends compute it, from the same bytes."""
    view = memoryview(frame)
    return zlib.crc32(view[HEAD.size:len(view) - CRC.size], zlib.crc32(view[:8], acc))


class Service:
    """One server's state and its request handler."""

    def __init__(self, payload: int) -> None:
        self.codec = Codec(payload)
        self.acc = 0
        self.count = 0
        self.last_id = -1
        self.fault = False

    def handle(self, request: Buffer) -> Buffer:
        head = unpack(request)
        if head is None:
            return self.codec.pack(0, BAD, self.acc, self.count)
        ident, op, acc, count = head
        if op == APPLY:
            if ident != self.last_id:  # idempotent by id: a retry is answered, not re-applied
                if self.fault:
                    raise InjectedFault(f"planted bug hit by request {ident}")
                self.acc = advance(self.acc, request)
                self.count += 1
                self.last_id = ident
            return self.codec.pack(ident, OK, self.acc, self.count, body(request))
        if op == RESTORE:
            self.acc, self.count = acc, count
        elif op != QUERY:
            return self.codec.pack(ident, BAD, self.acc, self.count)
        return self.codec.pack(ident, OK, self.acc, self.count)

    def plant(self, _signum: int, _frame: FrameType | None) -> None:
        self.fault = True


def faulty_role(channel: Channel, payload: int) -> Callable[[], None]:
    """Set the server up (before it reports ready, so a planted bug never meets SIGUSR1's
    default action, which would kill it) and return its loop."""
    service = Service(payload)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # the client's injector timer is not ours
    signal.signal(signal.SIGUSR1, service.plant)

    def loop() -> None:
        try:
            channel.serve(service.handle)
        except InjectedFault:
            os._exit(EXIT_FAULT)

    return loop
