"""Lock graphs for the deadlock experiment: generation, the cycle walk, the server role.

A server holds some resources and may wait for one resource held by another
server (the single-request model: a server blocked in a synchronous call
waits for exactly one thing), so the wait-for graph has out-degree <= 1 and
its cycles are disjoint and simple: each is a deadlock. ``make_graph`` plants
a known set of cycles (``cyclic``) or none (``acyclic``); every other server
waits, if at all, only for a server placed before it, so no other cycle can
form. ``find_cycles`` is what both detectors run once they have the graph.

A deadlock server knows only its own state, encoded once as its reply to
``QUERY``: its id, the resource it waits for (-1: none), and what it holds.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from servers.transports.base import Buffer

VARIANTS = ("cyclic", "acyclic")
MAX_HELD = 4  # resources one server holds, at most
MAX_CYCLES = 3  # cycles planted in a cyclic graph, at most
WAIT_CHANCE = 0.7  # chance that a server off the cycles waits for someone
NONE = -1

# Wire format, fixed frames both ways: id, awaited resource, count, held ids (-1 padded).
REPLY = struct.Struct(f"<iii{MAX_HELD}i")
PAYLOAD = REPLY.size
QUERY = b"Q" + bytes(PAYLOAD - 1)

Cycles = frozenset[frozenset[int]]


@dataclass(frozen=True)
class LockGraph:
    """Who holds what and who waits for what: the in-process lock table."""

    holds: tuple[tuple[int, ...], ...]  # per server, the resources it holds
    waits: tuple[int, ...]  # per server, the resource it waits for, or NONE
    planted: Cycles  # the cycles the generator made, as sets of servers

    @property
    def servers(self) -> int:
        return len(self.holds)

    def holder(self) -> dict[int, int]:
        return {r: s for s, held in enumerate(self.holds) for r in held}

    def waiting(self) -> dict[int, int]:
        return {s: r for s, r in enumerate(self.waits) if r != NONE}

    def successors(self) -> dict[int, int]:
        """The wait-for graph: server -> the server holding what it waits for."""
        holder = self.holder()
        return {s: holder[r] for s, r in self.waiting().items()}

    def reply(self, server: int) -> bytes:
        held = self.holds[server]
        return REPLY.pack(server, self.waits[server], len(held),
                          *held, *[NONE] * (MAX_HELD - len(held)))


def make_graph(n: int, variant: str, seed: int) -> LockGraph:
    """A seeded random lock graph of ``n`` servers with planted cycles, or none."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"a wait-for graph needs at least 2 servers, not {n!r}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown deadlock variant {variant!r} (known: {', '.join(VARIANTS)})")
    rng = random.Random(f"deadlock:{n}:{variant}:{seed}")
    counts = [rng.randint(1, MAX_HELD) for _ in range(n)]
    ids = list(range(sum(counts)))
    rng.shuffle(ids)  # resource ids say nothing about their holder
    holds, start = [], 0
    for count in counts:
        holds.append(tuple(ids[start:start + count]))
        start += count
    order = list(range(n))
    rng.shuffle(order)
    succ: dict[int, int] = {}
    planted = []
    placed = 0
    if variant == "cyclic":
        cycles = rng.randint(1, min(MAX_CYCLES, n // 2))
        lengths = [2] * cycles
        for _ in range(rng.randint(0, max(2 * cycles, n // 2) - 2 * cycles)):
            lengths[rng.randrange(cycles)] += 1
        for length in lengths:
            ring = order[placed:placed + length]
            succ.update(zip(ring, ring[1:] + ring[:1], strict=True))
            planted.append(frozenset(ring))
            placed += length
    for i in range(placed, n):
        # Waiting only for someone placed earlier cannot close a new cycle.
        if i and rng.random() < WAIT_CHANCE:
            succ[order[i]] = order[rng.randrange(i)]
    waits = [rng.choice(holds[succ[s]]) if s in succ else NONE for s in range(n)]
    return LockGraph(tuple(holds), tuple(waits), frozenset(planted))


def find_cycles(waiting: Mapping[int, int], holder: Mapping[int, int]) -> Cycles:
    """Every cycle of the wait-for graph, walking server -> awaited resource -> holder.

    Out-degree <= 1, so one walk per unvisited server, marking each server with
    the walk that reached it: a walk that meets its own mark has closed a cycle;
    one that meets an older walk's mark joins a path already explored. O(N).
    """
    mark: dict[int, int] = {}
    found = []
    for start in waiting:
        if start in mark:
            continue
        path = []
        node: int | None = start
        while node is not None and node not in mark:
            mark[node] = start
            path.append(node)
            resource = waiting.get(node)
            # A resource no one is known to hold (a partial view) ends the path.
            node = None if resource is None else holder.get(resource)
        if node is not None and mark[node] == start:
            found.append(frozenset(path[path.index(node):]))
    return frozenset(found)


def decode(reply: Buffer) -> tuple[int, int, tuple[int, ...]]:
    """(server id, awaited resource or NONE, held resources) from a server's reply."""
    server, waits, count, *held = REPLY.unpack(reply)
    if not 0 <= count <= MAX_HELD:
        raise ValueError(f"server {server} claims to hold {count} resources")
    return server, waits, tuple(held[:count])


def state_handler(reply: bytes) -> Callable[[Buffer], Buffer]:
    """A server's request handler: its own state, and nothing else, for each QUERY."""
    if len(reply) != PAYLOAD:
        raise ValueError(f"a deadlock reply is {PAYLOAD} bytes, not {len(reply)}")

    def handle(request: Buffer) -> Buffer:
        if request[0] != QUERY[0]:
            raise ValueError(f"unknown deadlock request {bytes(request[:1])!r}")
        return reply

    return handle
