"""The chain role: a server that forwards each request to the next one and relays the reply
(client -> VFS -> net -> driver)."""

from __future__ import annotations

from servers.transports.base import Buffer, Channel
from servers.workloads import Handler


def forwarder(downstream: Channel) -> Handler:
    send, recv = downstream.send, downstream.recv

    def forward(request: Buffer) -> Buffer:
        send(request)
        return recv()

    return forward
