"""The transport registry: adding one is a new file plus its line here.

A transport's module is imported the first time it is asked for: a worker that
measures pipes does not pay for importing sockets or message queues (every worker
is a fresh interpreter, and imports are most of its start-up).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module

from servers.transports.base import (
    Buffer,
    Channel,
    Link,
    PeerGone,
    PeerTimeout,
    Placement,
    Transport,
)

# name -> "module:class"
MODULES = {
    "call": "servers.transports.call:CallTransport",
    "pipe": "servers.transports.pipe:PipeTransport",
    "mq": "servers.transports.mq:MqTransport",
    "shm": "servers.transports.shm:ShmTransport",
    "shm-spin": "servers.transports.shm_spin:SpinTransport",
    "uds": "servers.transports.uds:UdsTransport",
    "socketpair": "servers.transports.seqpacket:SeqpacketTransport",
    "tcp": "servers.transports.tcp:TcpTransport",
    "eventfd": "servers.transports.eventfd:EventfdTransport",
    "fifo": "servers.transports.fifo:FifoTransport",
    "udp": "servers.transports.udp:UdpTransport",
    "futex": "servers.transports.futex:FutexTransport",
    "signal": "servers.transports.rtsignal:SignalTransport",
    "sysv-mq": "servers.transports.sysv_mq:SysvMqTransport",
    "sysv-sem": "servers.transports.sysv_sem:SysvSemTransport",
    "mp-pipe": "servers.transports.mp:MpPipeTransport",
    "mp-queue": "servers.transports.mp:MpQueueTransport",
    "zmq": "servers.transports.zeromq:ZmqTransport",
}

# Where a server runs against its client (harness.cputopology resolves each to CPUs):
# the client's CPU, its SMT sibling, a core under the same last-level cache, another LLC
# of the package (a CCX), another package, another NUMA node, or any other CPU.
PLACEMENTS = ("same-cpu", "smt-sibling", "same-llc", "cross-llc", "cross-package",
              "cross-numa", "cross-cpu")


class Registry(Mapping[str, Transport]):
    """The transports by name; each one built on first use."""

    def __init__(self, modules: dict[str, str]) -> None:
        self._modules = modules
        self._loaded: dict[str, Transport] = {}

    def __getitem__(self, name: str) -> Transport:
        if name not in self._loaded:
            module, _, cls = self._modules[name].partition(":")
            self._loaded[name] = getattr(import_module(module), cls)()
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


TRANSPORTS = Registry(MODULES)


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
