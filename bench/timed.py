"""What the timed experiments share: their cases, and which of them this machine and
each transport can run."""

from __future__ import annotations

from dataclasses import dataclass

from bench.topologies import refuse
from harness.experiment import Params, Plan, param, triage
from harness.records import Case
from harness.topology import builders
from servers.transports import PLACEMENTS, TRANSPORTS, Placement
from servers.workloads import WORKLOADS


def known_transports() -> list[str]:
    return list(TRANSPORTS)


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


def check_sizes(experiment: str, params: EchoParams) -> None:
    """A size that no listed transport can carry is a mistake in the suite, not a skip."""
    largest = max(TRANSPORTS[name].max_payload() for name in params.transports)
    too_big = [size for size in params.payload_bytes if size > largest]
    if too_big:
        raise ValueError(
            f"experiments.{experiment}.payload_bytes: {too_big[0]} B is more than any listed "
            f"transport carries here (largest: {largest} B)"
        )


def refusal(case: Case, cpus: int) -> str | None:
    """Why this machine or this transport cannot run a case, or None."""
    transport = TRANSPORTS[case.transport]
    if transport.in_process and case.placement != "same-cpu":
        return "an in-process call has no placement: measured once, as same-cpu"
    if case.placement == "cross-cpu" and cpus < 2:
        return "cross-cpu needs two usable CPUs"
    links = case.k if case.topology in ("chain", "fanout", "ring") else 1
    return refuse(case, transport) or transport.refuse(
        case.payload_bytes, Placement(case.placement, cpus), links
    )


def plan(cases: list[Case]) -> Plan:
    """The timed cases this machine can run; the others skipped with the reason."""
    return triage(cases, refusal)


def echo_plan(experiment: str, params: EchoParams) -> Plan:
    """Client plus one echo server per case, over transports x placements x payloads."""
    check_sizes(experiment, params)
    return plan([
        Case(experiment, transport, placement, size, workload=params.workload,
             iterations=params.iterations)
        for transport in params.transports
        for placement in params.placements
        for size in params.payload_bytes
    ])
