"""What the timed experiments share: their cases, and which of them this machine and
each transport can run."""

from __future__ import annotations

from bench.params import EchoParams
from bench.topologies import refuse
from harness.cputopology import Unavailable, this_machine
from harness.experiment import Plan, triage
from harness.records import Case
from servers.transports import TRANSPORTS, Placement


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
    if case.placement != "same-cpu":
        try:
            this_machine().plan(case.placement)
        except Unavailable as exc:
            return str(exc)
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
