"""``sysv-mq``: two SysV message queues (msgsnd, msgrcv), one per direction."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import sysv_ipc

from servers.transports.base import (
    Buffer,
    Channel,
    Kind,
    Link,
    Names,
    PeerGone,
    Recv,
    Send,
    Transport,
)
from servers.transports.sysv import create_keyed, read_limit, remove, wait_blocking

MSGMAX, MSGMNB = "/proc/sys/kernel/msgmax", "/proc/sys/kernel/msgmnb"


class SysvMqChannel(Channel):
    def __init__(self, outbox: sysv_ipc.MessageQueue, inbox: sysv_ipc.MessageQueue,
                 payload: int, timeout: float) -> None:
        self.payload = payload
        self._send = outbox.send
        self._receive = inbox.receive
        self._timeout = timeout

    def send(self, data: Buffer) -> None:
        try:
            self._send(bytes(data) if isinstance(data, memoryview) else data)
        except sysv_ipc.ExistentialError:
            raise PeerGone("the queue was removed") from None

    def recv(self) -> Buffer:
        try:  # msgrcv has no timeout: an interval timer bounds it (a chain's hops wait here)
            received = wait_blocking(self._receive, self._timeout, "message")
        except sysv_ipc.ExistentialError:
            raise PeerGone("the queue was removed") from None
        message: bytes = received[0]
        return message

    def timed_ops(self) -> tuple[Send, Recv | None]:
        # Blocking receive: the batch watchdog ends a wait on a dead peer.
        return self._send, self._receive

    def frames(self) -> Iterator[Buffer]:
        receive = self._receive
        while True:  # blocking: a server is told to go by its supervisor
            yield receive()[0]

    def serve(self, handler: Callable[[Buffer], Buffer]) -> None:
        receive, send = self._receive, self._send
        while True:
            send(handler(receive()[0]))

    def close(self) -> None:
        pass  # the link owns the queues


class SysvMqLink(Link):
    def __init__(self, names: Names, payload: int, timeout: float) -> None:
        self._payload, self._timeout = payload, timeout

        def queue(key: int) -> sysv_ipc.MessageQueue:
            return sysv_ipc.MessageQueue(key, sysv_ipc.IPC_CREX, 0o600,
                                         max_message_size=max(payload, 1))

        self._c2s = create_keyed(names, Kind.SYSV_MSG, "c2s", queue)
        try:
            self._s2c = create_keyed(names, Kind.SYSV_MSG, "s2c", queue)
        except BaseException:
            remove(Kind.SYSV_MSG, self._c2s.id)
            raise

    def _channel(self, outbox: sysv_ipc.MessageQueue,
                 inbox: sysv_ipc.MessageQueue) -> Channel:
        return SysvMqChannel(outbox, inbox, self._payload, self._timeout)

    def client(self) -> Channel:
        return self._channel(self._c2s, self._s2c)

    def server(self) -> Channel:
        return self._channel(self._s2c, self._c2s)

    def loopback(self) -> tuple[Channel, Channel]:
        return self.client(), self._channel(self._s2c, self._c2s)

    def close(self) -> None:
        pass  # a queue has no handle to close: it lives until ``destroy``

    def destroy(self) -> None:
        for queue in (self._c2s, self._s2c):
            remove(Kind.SYSV_MSG, queue.id)


def sysv_mq_limit() -> int:
    """The largest message (kernel.msgmax) that also fits an empty queue (kernel.msgmnb)."""
    return min(read_limit(MSGMAX, 8192), read_limit(MSGMNB, 16384))


class SysvMqTransport(Transport):
    name = "sysv-mq"

    def max_payload(self) -> int:
        return sysv_mq_limit()

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return SysvMqLink(names, payload, timeout)
