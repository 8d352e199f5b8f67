"""``mq``: a pair of POSIX message queues, one per direction."""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from operator import itemgetter

import posix_ipc

from servers.transports.base import (
    Buffer,
    Channel,
    Kind,
    Link,
    Names,
    PeerTimeout,
    Placement,
    Recv,
    Send,
    Transport,
    create_new,
)

QUEUE_DEPTH = 2  # ping-pong needs one slot; a second absorbs a late reply


@dataclass(frozen=True)
class MqLimits:
    """The kernel's POSIX queue limits, read once (DESIGN: check them up front)."""

    msgsize_max: int
    msg_max: int
    queues_max: int
    rlimit_bytes: int

    @classmethod
    def read(cls) -> MqLimits:
        def proc(name: str, default: int) -> int:
            try:
                with open(f"/proc/sys/fs/mqueue/{name}") as limit:
                    return int(limit.read())
            except OSError:
                return default

        soft, _hard = resource.getrlimit(resource.RLIMIT_MSGQUEUE)
        return cls(
            msgsize_max=proc("msgsize_max", 8192),
            msg_max=proc("msg_max", 10),
            queues_max=proc("queues_max", 256),
            rlimit_bytes=soft if soft != resource.RLIM_INFINITY else 1 << 62,
        )

    def queue_pairs_allowed(self, payload: int) -> int:
        """How many client/server queue pairs the per-user byte limit allows."""
        per_queue = QUEUE_DEPTH * (max(payload, 1) + 64)  # 64: the kernel's per-message header
        return min(self.rlimit_bytes // (2 * per_queue), self.queues_max // 2)


class MqChannel(Channel):
    def __init__(
        self, inbox: posix_ipc.MessageQueue, outbox: posix_ipc.MessageQueue, payload: int,
        timeout: float,
    ) -> None:
        self.payload = payload
        self._inbox = inbox
        self._outbox = outbox
        self._receive = inbox.receive
        self._send = outbox.send
        self._timeout = timeout

    def send(self, data: Buffer) -> None:
        try:
            self._send(data, self._timeout)
        except posix_ipc.BusyError:
            raise PeerTimeout("message queue stayed full for the timeout") from None

    def recv(self) -> Buffer:
        try:
            return self._receive(self._timeout)[0]
        except posix_ipc.BusyError:
            raise PeerTimeout("no message within the timeout (a queue gives no EOF)") from None

    def timed_ops(self) -> tuple[Send, Recv | None]:
        # posix_ipc's own calls: no Python frame per message (BusyError on timeout)
        return partial(self._send, timeout=self._timeout), partial(self._receive, self._timeout)

    def frames(self) -> Iterator[Buffer]:
        # C-level all the way: receive() returns (message, priority), never None;
        # a silent peer ends it with posix_ipc.BusyError after the timeout.
        return map(itemgetter(0), iter(partial(self._receive, self._timeout), None))

    def serve(self, handler: Callable[[Buffer], Buffer]) -> None:
        send, receive, timeout = self._send, self._receive, self._timeout
        try:
            while True:
                send(handler(receive(timeout)[0]), timeout)
        except posix_ipc.BusyError:
            raise PeerTimeout("no request within the timeout (a queue gives no EOF)") from None

    def close(self) -> None:
        for queue in (self._inbox, self._outbox):
            try:
                queue.close()
            except posix_ipc.ExistentialError:
                pass


class MqLink(Link):
    def __init__(self, names: Names, payload: int, timeout: float) -> None:
        self._payload = payload
        self._timeout = timeout
        size = max(payload, 1)

        def queue(name: str) -> posix_ipc.MessageQueue:
            return posix_ipc.MessageQueue(name, posix_ipc.O_CREX, mode=0o600,
                                          max_messages=QUEUE_DEPTH, max_message_size=size)

        self._c2s = create_new(names, Kind.MQ, "c2s", queue, posix_ipc.ExistentialError)
        try:
            self._s2c = create_new(names, Kind.MQ, "s2c", queue, posix_ipc.ExistentialError)
        except BaseException:
            self._c2s.unlink()
            self._c2s.close()
            raise
        # Descriptors survive fork, so the names can go now: a SIGKILL leaks nothing.
        self._c2s.unlink()
        self._s2c.unlink()

    def client(self) -> Channel:
        return MqChannel(self._s2c, self._c2s, self._payload, self._timeout)

    def server(self) -> Channel:
        return MqChannel(self._c2s, self._s2c, self._payload, self._timeout)

    def loopback(self) -> tuple[Channel, Channel]:
        return self.client(), self.server()

    def close(self) -> None:
        MqChannel(self._c2s, self._s2c, self._payload, self._timeout).close()


class MqTransport(Transport):
    name = "mq"

    def max_payload(self) -> int:
        return MqLimits.read().msgsize_max

    def refuse(self, payload: int, placement: Placement, links: int = 1) -> str | None:
        if not posix_ipc.MESSAGE_QUEUES_SUPPORTED:
            return "POSIX message queues are not supported on this system"
        reason = super().refuse(payload, placement)
        if reason:
            return f"{reason} (/proc/sys/fs/mqueue/msgsize_max)"
        limits = MqLimits.read()
        if limits.msg_max < QUEUE_DEPTH:
            return f"mq needs {QUEUE_DEPTH} messages per queue; msg_max is {limits.msg_max}"
        allowed = limits.queue_pairs_allowed(payload)
        if allowed < links:
            return (f"needs {links} queue pairs; RLIMIT_MSGQUEUE ({limits.rlimit_bytes} bytes) "
                    f"and queues_max ({limits.queues_max}) allow {allowed}")
        return None

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return MqLink(names, payload, timeout)
