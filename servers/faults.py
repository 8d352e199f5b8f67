"""The faults experiment's server role: a stateful service whose state outlives its process.

Every frame, both ways, is ``id u64 | op u32 | acc u32 | count u64 | since u64 | payload |
crc32 u32``, of one fixed size no larger than PIPE_BUF, so a frame is written whole or not
at all, even by a process killed in the middle of answering. The CRC covers everything
before it. ``since`` (replies only) is when the answering process came up, on
CLOCK_MONOTONIC: the client can tell an answer from the process that was up when it asked
from one by a replacement.

The service keeps state: ``count`` requests applied and ``acc``, a CRC32 chained over each
applied request's id and payload. Every reply carries that state, so a request applied
twice, or lost, shows in every later reply, not only in its own.

The state lives in a ``StateArea``: shared memory that the supervisor creates, unlinks at
once and keeps mapped, so a server forked to replace a dead one inherits it and resumes.
It is written before the reply, crash-consistently (SIGKILL can land mid-copy): the new
record goes to the spare of two buffers, then one byte flips which buffer is current. The
area also holds a log of the ids applied (the state chain, written before the commit), which
the supervisor audits against what the client was answered. Ops:

- ``APPLY``: apply the request once; a retry of the last applied id is answered from the
  stored state, status ``REPLAYED``, and not applied again;
- ``RESTORE``: take the state the client re-sends (the monolithic reboot lost it);
- ``QUERY``: report the state (the supervisor's health check).

SIGUSR1 plants a bug: the next ``APPLY`` is applied and committed, then raises
``InjectedFault`` before the reply is sent, and the process exits with ``EXIT_FAULT``: the
window in which only de-duplication keeps a retry from being applied twice.
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import struct
import time
import zlib
from collections.abc import Callable
from types import FrameType

import posix_ipc

from servers.transports.base import Buffer, Channel

HEAD = struct.Struct("<QIIQQ")  # id, op (status in replies), acc, count, since
CRC = struct.Struct("<I")
APPLY, RESTORE, QUERY = 1, 2, 3
OK, BAD, REPLAYED = 0, 1, 2
EXIT_FAULT = 70  # an exception escaped the request handler
MAX_PAYLOAD = select.PIPE_BUF - HEAD.size - CRC.size

RECORD = struct.Struct("<QQII")  # last id, count, acc, crc32 of the first three
ID = struct.Struct("<Q")
RECORDS_AT = 8  # byte 0 says which of the two records is current
LOG_AT = RECORDS_AT + 2 * RECORD.size


class InjectedFault(RuntimeError):
    """The planted bug fired."""


class TornState(RuntimeError):
    """The current state record fails its checksum: the commit protocol is broken."""


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

    def pack(self, ident: int, op: int, acc: int, count: int, payload: Buffer = b"",
             since: int = 0) -> memoryview:
        HEAD.pack_into(self._buf, 0, ident, op, acc, count, since)
        if payload:
            self._view[HEAD.size:self._end] = payload
        else:
            self._view[HEAD.size:self._end] = bytes(self.payload)
        CRC.pack_into(self._buf, self._end, zlib.crc32(self._view[:self._end]))
        return self._view


def unpack(frame: Buffer) -> tuple[int, int, int, int, int] | None:
    """(id, op or status, acc, count, since), or None when the checksum does not match."""
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


class StateArea:
    """One server slot's state in shared memory: two records, a flip byte, a log of ids.

    Created by the supervisor (name unlinked at once, the mapping kept), inherited by
    every server forked into the slot. Only the slot's live server writes it; the
    supervisor reads it while the server is idle (audit) or dead (restart)."""

    def __init__(self, name: str, log_capacity: int) -> None:
        self.capacity = log_capacity
        size = LOG_AT + ID.size * log_capacity
        segment = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
        try:
            self.map = mmap.mmap(segment.fd, size)
        finally:
            segment.close_fd()
            segment.unlink()  # the mapping outlives the name: nothing to leak later
        self.commit(0, 0, 0)

    def load(self) -> tuple[int, int, int]:
        """(last id, acc, count) of the current record."""
        last, count, acc, crc = RECORD.unpack_from(self.map, RECORDS_AT + self.map[0] * RECORD.size)
        if zlib.crc32(RECORD.pack(last, count, acc, 0)[:-CRC.size]) != crc:
            raise TornState("the committed state record fails its checksum")
        return last, acc, count

    def commit(self, last: int, acc: int, count: int) -> None:
        """Write the spare record whole, then make it current with a one-byte store."""
        spare = 1 - self.map[0]
        record = RECORD.pack(last, count, acc, 0)
        crc = zlib.crc32(record[:-CRC.size])
        RECORD.pack_into(self.map, RECORDS_AT + spare * RECORD.size, last, count, acc, crc)
        self.map[0] = spare  # SIGKILL before this byte: the old record stands, whole

    def log(self, index: int, ident: int) -> None:
        """The id applied as the ``index``-th request; valid once ``count`` > index commits."""
        ID.pack_into(self.map, LOG_AT + ID.size * (index % self.capacity), ident)

    def applied(self, start: int, stop: int) -> list[int]:
        """Ids applied as requests ``start`` to ``stop - 1`` (the ring must still hold them)."""
        if stop - start > self.capacity:
            raise RuntimeError(f"faults: {stop - start} requests since the last audit, the "
                               f"state log holds {self.capacity}")
        return [ID.unpack_from(self.map, LOG_AT + ID.size * (i % self.capacity))[0]
                for i in range(start, stop)]

    def wipe(self) -> None:
        """Lose everything, as a rebooted monolithic system does."""
        self.map[:] = bytes(len(self.map))
        self.commit(0, 0, 0)

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:
            pass  # a view is still exported; the mapping goes with the process


class Service:
    """One server's request handler over the state of its slot."""

    def __init__(self, payload: int, area: StateArea) -> None:
        self.codec = Codec(payload)
        self.area = area
        self.last_id, self.acc, self.count = area.load()  # resume where the last one died
        self.since = time.monotonic_ns()
        self.fault = False

    def reply(self, ident: int, status: int, payload: Buffer = b"") -> Buffer:
        return self.codec.pack(ident, status, self.acc, self.count, payload, self.since)

    def handle(self, request: Buffer) -> Buffer:
        head = unpack(request)
        if head is None:
            return self.reply(0, BAD)
        ident, op, acc, count, _ = head
        if op == APPLY:
            if ident == self.last_id:  # a retry of what a dead predecessor applied
                return self.reply(ident, REPLAYED, body(request))
            new_acc, new_count = advance(self.acc, request), self.count + 1
            self.area.log(self.count, ident)
            self.area.commit(ident, new_acc, new_count)
            self.last_id, self.acc, self.count = ident, new_acc, new_count
            if self.fault:  # applied and committed, not answered: the dangerous window
                raise InjectedFault(f"planted bug hit by request {ident}")
            return self.reply(ident, OK, body(request))
        if op == RESTORE:
            self.area.commit(0, acc, count)
            self.last_id, self.acc, self.count = 0, acc, count
        elif op != QUERY:
            return self.reply(ident, BAD)
        return self.reply(ident, OK)

    def plant(self, _signum: int, _frame: FrameType | None) -> None:
        self.fault = True


def faulty_role(channel: Channel, payload: int, area: StateArea) -> Callable[[], None]:
    """Set the server up (before it reports ready, so a planted bug never meets SIGUSR1's
    default action, which would kill it) and return its loop."""
    service = Service(payload, area)
    signal.signal(signal.SIGUSR1, service.plant)

    def loop() -> None:
        try:
            channel.serve(service.handle)
        except InjectedFault:
            os._exit(EXIT_FAULT)

    return loop
