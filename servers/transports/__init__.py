"""The transport registry: adding one is a new file plus its line here, or, from
another package, an entry point in the ``ipcbench.transports`` group.

A transport's module is imported the first time it is asked for: a worker that
measures pipes does not pay for importing sockets or message queues (every worker
is a fresh interpreter, and imports are most of its start-up). Installed packages are
looked through only for a name that is not built in, or to list every transport.
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


ENTRY_POINT_GROUP = "ipcbench.transports"


class PluginError(ValueError):
    """A transport an installed package registers cannot be used."""


class Registry(Mapping[str, Transport]):
    """The transports by name, built in then plugged in; each one built on first use."""

    def __init__(self, modules: dict[str, str], group: str) -> None:
        self._modules = modules
        self._group = group
        self._plugins: dict[str, str] | None = None
        self._loaded: dict[str, Transport] = {}

    def plugins(self) -> dict[str, str]:
        """name -> "module:Class" of every transport installed packages register."""
        if self._plugins is None:
            from importlib.metadata import entry_points  # tens of ms: only when needed

            self._plugins = {ep.name: ep.value for ep in entry_points(group=self._group)
                             if ep.name not in self._modules}
        return self._plugins

    def _spec(self, name: str) -> str:
        spec = self._modules.get(name)
        if spec is None:
            spec = self.plugins()[name]  # KeyError: unknown
        return spec

    def __getitem__(self, name: str) -> Transport:
        if name not in self._loaded:
            spec = self._spec(name)
            module, _, cls = spec.partition(":")
            try:
                made = getattr(import_module(module), cls)()
            except (ImportError, AttributeError, TypeError) as exc:
                raise PluginError(f"transport {name!r} ({spec}) cannot be loaded: {exc}") \
                    from None
            if not isinstance(made, Transport) or made.name != name:
                raise PluginError(f"transport {name!r} ({spec}) must be a Transport subclass "
                                  f"whose name is {name!r}")
            self._loaded[name] = made
        return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in self._modules or name in self.plugins()

    def __iter__(self) -> Iterator[str]:
        yield from self._modules
        yield from self.plugins()

    def __len__(self) -> int:
        return len(self._modules) + len(self.plugins())


TRANSPORTS = Registry(MODULES, ENTRY_POINT_GROUP)


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
    "PluginError",
    "Transport",
    "get_transport",
]
