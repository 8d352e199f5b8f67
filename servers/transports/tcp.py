"""``tcp``: one loopback TCP connection with TCP_NODELAY (Nagle off: a frame leaves at once,
as lat_tcp and avsm's tcp_nodelay measure it)."""

from __future__ import annotations

import socket

from servers.transports.base import Link, Names, Transport
from servers.transports.sockets import SocketLink, wmem_max


class TcpTransport(Transport):
    name = "tcp"

    def max_payload(self) -> int:
        return wmem_max()  # as uds: the loopback holds a whole frame in the send buffer

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            client = socket.create_connection(listener.getsockname(), timeout=timeout)
            server, _ = listener.accept()
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return SocketLink(client, server, payload, timeout)
