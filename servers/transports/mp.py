"""``mp-pipe`` and ``mp-queue``: ``multiprocessing.Pipe`` and ``multiprocessing.Queue``
(fork context), as Python programs use them to pass bytes between processes.

A Pipe is a duplex Connection over a socket pair: ``send_bytes``/``recv_bytes`` frame
each message with a length header. A Queue pickles each item, and a feeder thread
writes it into a pipe guarded by a lock: the cost of that machinery over a raw pipe
is what these two transports show.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable

from servers.transports.base import (
    Buffer,
    Channel,
    Link,
    Names,
    PeerGone,
    PeerTimeout,
    Recv,
    Send,
    Transport,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from multiprocessing.connection import Connection

FORK = multiprocessing.get_context("fork")
CONNECTION_SPARE = 1 << 12  # the length header and the kernel's bookkeeping per write


def wmem_default(default: int = 212_992) -> int:
    """The socket buffer a Pipe's sockets get (net.core.wmem_default)."""
    try:
        with open("/proc/sys/net/core/wmem_default") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return default
QUEUE_LIMIT = 1 << 28  # items are pickled whole in memory: a bound, not a kernel limit


class ConnectionChannel(Channel):
    def __init__(self, connection: Connection, payload: int, timeout: float) -> None:
        self.payload = payload
        self._connection = connection
        self._timeout = timeout

    def send(self, data: Buffer) -> None:
        try:
            self._connection.send_bytes(data)
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone("peer closed its end") from None

    def recv(self) -> Buffer:
        try:
            if not self._connection.poll(self._timeout):
                raise PeerTimeout("no message within the timeout")
            return self._connection.recv_bytes()
        except (EOFError, ConnectionResetError):
            raise PeerGone("peer closed its end (EOF)") from None

    def timed_ops(self) -> tuple[Send, Recv | None]:
        return self._connection.send_bytes, self._connection.recv_bytes

    def serve(self, handler: Callable[[Buffer], Buffer]) -> None:
        send, recv = self._connection.send_bytes, self._connection.recv_bytes
        try:
            while True:
                send(handler(recv()))
        except (EOFError, ConnectionResetError, BrokenPipeError):
            raise PeerGone("peer closed its end") from None

    def close(self) -> None:
        self._connection.close()


class MpPipeLink(Link):
    def __init__(self, payload: int, timeout: float) -> None:
        self._payload, self._timeout = payload, timeout
        self._client, self._server = FORK.Pipe(duplex=True)

    def _take(self, keep: Connection, drop: Connection) -> Channel:
        drop.close()
        return ConnectionChannel(keep, self._payload, self._timeout)

    def client(self) -> Channel:
        return self._take(self._client, self._server)

    def server(self) -> Channel:
        return self._take(self._server, self._client)

    def loopback(self) -> tuple[Channel, Channel]:
        return (ConnectionChannel(self._client, self._payload, self._timeout),
                ConnectionChannel(self._server, self._payload, self._timeout))

    def close(self) -> None:
        self._client.close()
        self._server.close()


class MpPipeTransport(Transport):
    name = "mp-pipe"

    def max_payload(self) -> int:
        # A loopback writes a whole frame into the socket pair before reading it, and a
        # Pipe's sockets keep the default buffer (net.core.wmem_default), less its header.
        return wmem_default() - CONNECTION_SPARE

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return MpPipeLink(payload, timeout)


class QueueChannel(Channel):
    def __init__(self, outbox: multiprocessing.queues.Queue[Buffer],
                 inbox: multiprocessing.queues.Queue[Buffer], payload: int,
                 timeout: float) -> None:
        self.payload = payload
        self._outbox, self._inbox = outbox, inbox
        self._timeout = timeout
        self._owner = os.getpid()

    def prepare(self, data: Buffer) -> Buffer:
        return bytes(data)  # an item is pickled: a memoryview is not picklable

    def send(self, data: Buffer) -> None:
        self._outbox.put(bytes(data) if isinstance(data, memoryview) else data)

    def recv(self) -> Buffer:
        try:
            return self._inbox.get(timeout=self._timeout)
        except queue.Empty:
            raise PeerTimeout("no item within the timeout (a queue gives no EOF)") from None

    def timed_ops(self) -> tuple[Send, Recv | None]:
        return self._outbox.put, self._inbox.get

    def serve(self, handler: Callable[[Buffer], Buffer]) -> None:
        put, get = self._outbox.put, self._inbox.get
        while True:  # blocking: a server is told to go by its supervisor
            put(handler(get()))

    def close(self) -> None:
        # Only where the channel was made: multiprocessing resets a queue after fork only
        # in its own Process, so a forked copy's close could wait on a lock the parent's
        # feeder thread held at fork. A copy is dropped; its fds go with the process.
        if os.getpid() == self._owner:
            for q in (self._outbox, self._inbox):
                q.cancel_join_thread()  # exit without flushing to a reader that is gone
                q.close()


class MpQueueLink(Link):
    def __init__(self, payload: int, timeout: float) -> None:
        self._payload, self._timeout = payload, timeout
        self._owner = os.getpid()
        self._c2s: multiprocessing.queues.Queue[Buffer] = FORK.Queue()
        self._s2c: multiprocessing.queues.Queue[Buffer] = FORK.Queue()

    def client(self) -> Channel:
        return QueueChannel(self._c2s, self._s2c, self._payload, self._timeout)

    def server(self) -> Channel:
        return QueueChannel(self._s2c, self._c2s, self._payload, self._timeout)

    def loopback(self) -> tuple[Channel, Channel]:
        return self.client(), self.server()

    def close(self) -> None:
        if os.getpid() == self._owner:  # as QueueChannel.close
            for q in (self._c2s, self._s2c):
                q.cancel_join_thread()
                q.close()


class MpQueueTransport(Transport):
    name = "mp-queue"

    def max_payload(self) -> int:
        return QUEUE_LIMIT

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return MpQueueLink(payload, timeout)
