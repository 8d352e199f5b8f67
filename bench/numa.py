"""NUMA: the copy slope with shm's shared area on the client's or on the server's node.

The payload sweep over ``shm``, each case's shared area bound (mbind, through
``servers.transports.numa``) to the node of the client's CPU or of the server's, for
placements that put the two on different nodes. One node: every case is skipped with
the reason. The model is payload's, one slope per placement and memory side.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.params import EchoParams
from bench.payload import Payload
from bench.timed import check_sizes, refusal
from harness.cputopology import this_machine
from harness.experiment import Plan, param, triage
from harness.records import Case
from servers.transports import PLACEMENTS

SIDES = ("client", "server")


def _sides() -> tuple[str, ...]:
    return SIDES


@dataclass(frozen=True)
class NumaParams(EchoParams):
    """Its table in a suite file: the echo keys (transports shm, placements across nodes
    by default), and which node the shared area lives on."""

    transports: tuple[str, ...] = param(("shm",), "transports that share memory: shm",
                                        choices=lambda: ("shm",))
    placements: tuple[str, ...] = param(("cross-numa",), "where the server runs against "
                                        "the client", choices=lambda: PLACEMENTS)
    payload_bytes: tuple[int, ...] = param((64, 1024, 16384, 65536), "request and reply "
                                           "size (a 0-byte area has no page to place)",
                                           "bytes", low=1)
    memory: tuple[str, ...] = param(SIDES, "whose node the shared area is bound to",
                                    choices=_sides, column="memory")


class Numa(Payload):
    name = "numa"
    description = "copy cost per byte with shm's area on the client's or the server's node"
    params_type = NumaParams
    title = "NUMA: median round trip with the shared area on one side's node, microseconds"

    def plan(self, params: NumaParams) -> Plan:  # type: ignore[override]
        check_sizes(self.name, params)
        cases = [Case(self.name, transport, placement, size, params=(("memory", side),))
                 for transport in params.transports for placement in params.placements
                 for side in params.memory for size in params.payload_bytes]
        return triage(cases, numa_refusal)


def numa_refusal(case: Case, cpus: int) -> str | None:
    nodes = {cpu.node for cpu in this_machine().cpus.values()}
    if len(nodes) < 2:
        return "one NUMA node here: the client's node and the server's are the same memory"
    return refusal(case, cpus)


EXPERIMENT = Numa()
