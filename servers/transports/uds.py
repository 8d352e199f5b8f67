"""``uds``: a connected pair of Unix domain stream sockets."""

from __future__ import annotations

import socket
import struct

from servers.transports.base import Channel, Link, Names, Transport
from servers.transports.stream import StreamChannel


def _set_timeouts(sock: socket.socket, timeout: float) -> None:
    # Kernel-side timeouts: a blocked read returns EAGAIN, no extra syscall per message.
    tv = struct.pack("ll", int(timeout), int((timeout % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class UdsLink(Link):
    def __init__(self, payload: int, timeout: float) -> None:
        self._payload = payload
        self._client, self._server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock in (self._client, self._server):
            _set_timeouts(sock, timeout)
            if payload > 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(payload, 1 << 16))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, max(payload, 1 << 16))

    @staticmethod
    def _take(keep: socket.socket, drop: socket.socket, payload: int) -> Channel:
        drop.close()
        fd = keep.detach()
        return StreamChannel(fd, fd, payload)

    def client(self) -> Channel:
        return self._take(self._client, self._server, self._payload)

    def server(self) -> Channel:
        return self._take(self._server, self._client, self._payload)

    def loopback(self) -> tuple[Channel, Channel]:
        client, server = self._client.detach(), self._server.detach()
        return (StreamChannel(client, client, self._payload),
                StreamChannel(server, server, self._payload))

    def close(self) -> None:
        self._client.close()
        self._server.close()


class UdsTransport(Transport):
    name = "uds"

    def max_payload(self) -> int:
        # The socket buffer (capped by net.core.wmem_max) must hold a whole frame.
        try:
            with open("/proc/sys/net/core/wmem_max") as limit:
                return int(limit.read())
        except OSError:
            return 1 << 20

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return UdsLink(payload, timeout)
