"""``call``: the monolithic baseline, the handler invoked as a function in process."""

from __future__ import annotations

from collections.abc import Callable

from servers.transports.base import (
    Buffer,
    Channel,
    Link,
    Names,
    PeerGone,
    Recv,
    Send,
    Transport,
)

Handler = Callable[[Buffer], Buffer]


class CallChannel(Channel):
    def __init__(self, handler: Handler, payload: int) -> None:
        self.payload = payload
        self._handler = handler
        self._reply: Buffer | None = None

    def send(self, data: Buffer) -> None:
        self._reply = self._handler(data)

    def recv(self) -> Buffer:
        reply, self._reply = self._reply, None
        if reply is None:
            raise PeerGone("recv without a send: an in-process call has no queue")
        return reply

    def timed_ops(self) -> tuple[Send, Recv | None]:
        return self._handler, None

    def close(self) -> None:
        self._reply = None


class CallLink(Link):
    """No kernel object: the server end is the handler itself, attached in process."""

    def __init__(self, payload: int) -> None:
        self._payload = payload
        self._handler: Handler | None = None

    def attach(self, handler: Handler) -> None:
        self._handler = handler

    def client(self) -> Channel:
        if self._handler is None:
            raise RuntimeError("attach a handler before taking the client end of a call")
        return CallChannel(self._handler, self._payload)

    def server(self) -> Channel:
        raise RuntimeError("an in-process call has no server process")

    def loopback(self) -> tuple[Channel, Channel]:
        raise RuntimeError("an in-process call sends no message to loop back")

    def close(self) -> None:
        self._handler = None


class CallTransport(Transport):
    name = "call"
    in_process = True

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return CallLink(payload)
