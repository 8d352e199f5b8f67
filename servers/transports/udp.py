"""``udp``: two connected loopback UDP sockets, one datagram per frame (lat_udp).

A datagram arrives whole or not at all, so a frame is at most the largest IPv4 UDP
payload. A 0-byte frame travels as a 1-byte token, as on every byte transport. UDP has
no EOF: a dead peer shows as ECONNREFUSED (the port is closed) or as the timeout.
"""

from __future__ import annotations

import socket

from servers.transports.base import Link, Names, Transport
from servers.transports.sockets import SocketLink, wmem_max

MAX_DATAGRAM = 65507  # 65535 - 8 (UDP header) - 20 (IPv4 header)


class UdpTransport(Transport):
    name = "udp"

    def max_payload(self) -> int:
        return min(MAX_DATAGRAM, wmem_max())

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for sock in (client, server):
                sock.bind(("127.0.0.1", 0))
            client.connect(server.getsockname())
            server.connect(client.getsockname())
        except OSError:
            client.close()
            server.close()
            raise
        return SocketLink(client, server, payload, timeout)
