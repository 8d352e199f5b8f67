"""``socketpair``: a connected pair of Unix SOCK_SEQPACKET sockets.

Each frame is one record: the kernel keeps message boundaries, so a read returns one
frame whole, and a frame must fit the send buffer at once (records are not split).
"""

from __future__ import annotations

import socket

from servers.transports.base import Link, Names, Transport
from servers.transports.sockets import SocketLink, wmem_max

RECORD_SPARE = 1 << 12  # the kernel's bookkeeping per record counts against the buffer


class SeqpacketTransport(Transport):
    name = "socketpair"

    def max_payload(self) -> int:
        # SO_SNDBUF is capped at wmem_max (the kernel doubles what is asked); a record
        # and its overhead must fit it.
        return wmem_max() - RECORD_SPARE

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return SocketLink(*socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET), payload,
                          timeout, buffer=1 << 16)
