"""``zmq``: a pyzmq PAIR socket each side over ``ipc://`` in a private 0700 folder.

A ZeroMQ context is not fork-safe (its I/O thread does not survive fork), so the link
only names the endpoint before fork, and an end makes its context and socket in the
process that first uses it (a chain's next hop is taken in one process and used in
another): the server binds, the client connects (ZeroMQ retries a connect until the
bind exists). PAIR has no EOF: a dead peer shows as the timeout.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import zmq

from servers.transports.base import (
    Buffer,
    Channel,
    Link,
    Names,
    PeerTimeout,
    Recv,
    Send,
    Transport,
    private_folder,
    remove_folder,
)

ZMQ_LIMIT = 1 << 28  # ZeroMQ copies a message whole into its own buffers: a bound


class ZmqChannel(Channel):
    def __init__(self, endpoint: str, bind: bool, payload: int, timeout: float) -> None:
        self.payload = payload
        self._endpoint, self._bind, self._timeout = endpoint, bind, timeout
        self._opened_by = 0  # the pid that made the socket, 0 before first use
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None

    @property
    def _socket(self) -> zmq.Socket[bytes]:
        if self._opened_by != os.getpid():
            self._context = zmq.Context(io_threads=1)
            sock = self._context.socket(zmq.PAIR)
            ms = int(self._timeout * 1000)
            for option, value in ((zmq.RCVTIMEO, ms), (zmq.SNDTIMEO, ms), (zmq.LINGER, 0),
                                  (zmq.RECONNECT_IVL, 1)):
                sock.setsockopt(option, value)
            try:
                (sock.bind if self._bind else sock.connect)(self._endpoint)
            except zmq.ZMQError:  # a path over the 107 bytes a Unix socket takes, say
                sock.close(linger=0)
                self._context.term()
                self._context = None
                raise
            self._sock, self._opened_by = sock, os.getpid()
        return self._sock

    def send(self, data: Buffer) -> None:
        try:
            self._socket.send(data, copy=True)
        except zmq.Again:
            raise PeerTimeout("send blocked longer than the timeout") from None

    def recv(self) -> Buffer:
        try:
            return self._socket.recv(copy=True)
        except zmq.Again:
            raise PeerTimeout("no message within the timeout (PAIR gives no EOF)") from None

    def timed_ops(self) -> tuple[Send, Recv | None]:
        sock = self._socket
        return sock.send, sock.recv

    def serve(self, handler: Callable[[Buffer], Buffer]) -> None:
        sock = self._socket
        send, recv = sock.send, sock.recv
        try:
            while True:
                send(handler(recv()))
        except zmq.Again:
            raise PeerTimeout("no request within the timeout") from None

    def close(self) -> None:
        # Another process's context (inherited through fork) is left alone: its I/O
        # thread is not here, and terminating it would wait for that thread forever.
        if self._opened_by == os.getpid() and self._context is not None:
            self._sock.close(linger=0)
            self._context.term()
        self._opened_by, self._context = 0, None


class ZmqLink(Link):
    def __init__(self, names: Names, payload: int, timeout: float) -> None:
        self._payload, self._timeout = payload, timeout
        self._folder = private_folder(names, "zmq")
        self._endpoint = f"ipc://{os.path.join(self._folder, 'pair')}"
        self._creator = os.getpid()

    def client(self) -> Channel:
        return ZmqChannel(self._endpoint, False, self._payload, self._timeout)

    def server(self) -> Channel:
        return ZmqChannel(self._endpoint, True, self._payload, self._timeout)

    def loopback(self) -> tuple[Channel, Channel]:
        client, server = self.client(), self.server()
        server.timed_ops()  # bind before the client's first connect
        return client, server

    def close(self) -> None:
        pass  # the socket file stays until ``destroy``: a late connect must find it

    def destroy(self) -> None:
        if os.getpid() == self._creator:
            remove_folder(self._folder)


class ZmqTransport(Transport):
    name = "zmq"

    def max_payload(self) -> int:
        return ZMQ_LIMIT

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return ZmqLink(names, payload, timeout)
