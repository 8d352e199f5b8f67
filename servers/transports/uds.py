"""``uds``: a connected pair of Unix domain stream sockets."""

from __future__ import annotations

import socket

from servers.transports.base import Link, Names, Transport
from servers.transports.sockets import SocketLink, wmem_max


class UdsTransport(Transport):
    name = "uds"

    def max_payload(self) -> int:
        # The socket buffer (capped by net.core.wmem_max) must hold a whole frame: the
        # loopback (one process sends, then receives) writes it all before reading.
        return wmem_max()

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return SocketLink(*socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM), payload,
                          timeout)
