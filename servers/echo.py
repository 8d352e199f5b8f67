"""The echo / request-handler role: answer each request with the handler's reply."""

from __future__ import annotations

from servers.transports.base import Channel
from servers.workloads import Handler


def serve(channel: Channel, handler: Handler) -> None:
    """Serve until the peer goes away (PeerGone) or falls silent (PeerTimeout).

    The loop itself belongs to the channel, which knows its tightest shape.
    """
    channel.serve(handler)
