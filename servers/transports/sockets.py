"""A link over two connected sockets, whatever made them (uds, socketpair, tcp)."""

from __future__ import annotations

import socket
import struct

from servers.transports.base import Channel, Link
from servers.transports.stream import StreamChannel


def wmem_max(default: int = 1 << 20) -> int:
    """The largest socket send buffer a process may ask for (net.core.wmem_max)."""
    try:
        with open("/proc/sys/net/core/wmem_max") as limit:
            return int(limit.read())
    except OSError:
        return default


def _set_timeouts(sock: socket.socket, timeout: float) -> None:
    # Kernel-side timeouts: a blocked read returns EAGAIN, no extra syscall per message.
    sock.settimeout(None)  # blocking: the fds are used with os.read and os.write
    tv = struct.pack("ll", int(timeout), int((timeout % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class SocketLink(Link):
    """Two connected sockets: the client's end and the server's."""

    def __init__(self, client: socket.socket, server: socket.socket, payload: int,
                 timeout: float, buffer: int = 1 << 16) -> None:
        self._payload = payload
        self._client, self._server = client, server
        for sock in (client, server):
            _set_timeouts(sock, timeout)
            if payload > 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(payload, buffer))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, max(payload, buffer))

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
