"""The transport registry: adding one is a new file plus its line here."""

from __future__ import annotations

from servers.transports.base import (
    Buffer,
    Channel,
    Link,
    PeerGone,
    PeerTimeout,
    Placement,
    Transport,
)
from servers.transports.call import CallTransport
from servers.transports.mq import MqTransport
from servers.transports.pipe import PipeTransport
from servers.transports.shm import ShmTransport
from servers.transports.shm_spin import SpinTransport
from servers.transports.uds import UdsTransport

TRANSPORTS: dict[str, Transport] = {
    t.name: t
    for t in (
        CallTransport(),
        PipeTransport(),
        MqTransport(),
        ShmTransport(),
        SpinTransport(),
        UdsTransport(),
    )
}

PLACEMENTS = ("same-cpu", "cross-cpu")


def get_transport(name: str) -> Transport:
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise KeyError(f"unknown transport {name!r} (known: {', '.join(TRANSPORTS)})") from None


__all__ = [
    "PLACEMENTS",
    "TRANSPORTS",
    "Buffer",
    "Channel",
    "Link",
    "PeerGone",
    "PeerTimeout",
    "Placement",
    "Transport",
    "get_transport",
]
