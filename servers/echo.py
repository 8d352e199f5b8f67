"""The echo / request-handler role: answer each request with the handler's reply."""

from __future__ import annotations

from servers.transports.base import Channel
from servers.workloads import Handler


def serve(channel: Channel, handler: Handler) -> None:
    """Serve until the peer goes away (PeerGone) or falls silent (PeerTimeout)."""
    recv, send = channel.recv, channel.send
    while True:
        send(handler(recv()))
