"""Suite-table declarations more than one experiment shares (each experiment declares
the rest of its own, beside it): see ``harness.experiment.Params``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from harness.experiment import Params, param
from harness.topology import builders
from servers.transports import PLACEMENTS, TRANSPORTS, Placement
from servers.workloads import WORKLOADS


def known_transports() -> list[str]:
    return list(TRANSPORTS)


def same_cpu_transports() -> list[str]:
    """The transports a probe experiment's servers can speak: its cases run same-cpu,
    where a busy-polling transport refuses to run."""
    here = Placement("same-cpu", len(os.sched_getaffinity(0)))
    return [name for name in TRANSPORTS if TRANSPORTS[name].refuse(0, here) is None]


def _placements() -> tuple[str, ...]:
    return PLACEMENTS


def _workloads() -> list[str]:
    return list(WORKLOADS)


def _topologies() -> list[str]:
    return sorted(builders())


@dataclass(frozen=True)
class EchoParams(Params):
    """A client and one echo server per case (latency, payload)."""

    transports: tuple[str, ...] = param(("call", "pipe", "mq", "shm", "uds"),
                                        "the transports measured", choices=known_transports)
    placements: tuple[str, ...] = param(("same-cpu",), "where the server runs against the "
                                        "client", choices=_placements)
    payload_bytes: tuple[int, ...] = param((64,), "request and reply size", "bytes", low=0)
    workload: str = param("echo", "what the server does with a request",
                          choices=_workloads)
    iterations: int = param(0, "the workload's loop count per request", low=0)


@dataclass(frozen=True)
class ChainParams(EchoParams):
    """Requests through k servers (amplification)."""

    k: tuple[int, ...] = param((1,), "servers a request passes", low=1)
    topologies: tuple[str, ...] = param(("chain",), "how the k servers are wired",
                                        choices=_topologies)
    message_bytes: int = param(64, "size of the messages alpha and the chain use", "bytes",
                               low=0)
    sched_batch: bool = param(False, "run the servers under SCHED_BATCH")


@dataclass(frozen=True)
class RingParams(Params):
    """A token around k processes (ring)."""

    transports: tuple[str, ...] = param(("call", "pipe", "mq", "shm", "uds"),
                                        "the transports measured", choices=known_transports)
    placements: tuple[str, ...] = param(("same-cpu",), "where the relays run",
                                        choices=_placements)
    k: tuple[int, ...] = param((1,), "processes in the ring", low=1)
    working_sets: tuple[int, ...] = param((0,), "private bytes each hop reads", "bytes",
                                          low=0)
    message_bytes: int = param(64, "the token's size", "bytes", low=0)
    sched_batch: bool = param(False, "run the relays under SCHED_BATCH")


@dataclass(frozen=True)
class ServiceParams(Params):
    """N services, as servers or as objects in one process (footprint, boot, deadlock)."""

    transports: tuple[str, ...] = param(("call", "pipe", "mq", "shm", "uds"),
                                        "what the services speak (call: N objects in one "
                                        "process)", choices=known_transports,
                                        applies=same_cpu_transports)
    servers: tuple[int, ...] = param((1,), "service counts N", low=1)
