"""The topologies of the timed experiments: how a case's processes are wired.

Each builder starts the servers a topology needs through the supervisor and returns a
``harness.topology.Setup``. They are registered in ``pyproject.toml`` under
``ipcbench.topologies``; a worker imports this module, so it stays light (no pandas).

``echo`` is one server; ``chain`` and ``fanout`` k servers; ``ring`` a token around k
processes, ``working_set`` bytes touched per hop; ``self`` one process that sends and
receives (alpha); ``compute`` the handler in process, an empty call subtracted (C0).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from harness.records import Case
from harness.supervisor import Supervisor
from harness.topology import Setup, expect_same, round_trip_check
from servers.chain import forwarder
from servers.ring import relay, working_set_toucher
from servers.transports import Buffer, Channel, Link, Transport, get_transport
from servers.transports.base import Recv
from servers.workloads import Workload


def _messages(case: Case, count: int) -> int:
    """Messages per request; function calls in process send none."""
    return 0 if get_transport(case.transport).in_process else count


def echo(case: Case, sup: Supervisor) -> Setup:
    transport, workload = get_transport(case.transport), Workload(case.workload, case.iterations)
    channel = sup.start(transport, case.payload_bytes, workload.handler)
    memory = dict(case.params).get("memory")
    if memory:  # the shared area on the client's or the server's NUMA node
        bind_memory(channel, sup, str(memory))
    return _through(channel, case, messages=_messages(case, 2))


def bind_memory(channel: Channel, sup: Supervisor, side: str) -> None:
    from harness.cputopology import this_machine
    from servers.transports.numa import bind

    area = channel.shared_memory()
    if area is None:
        raise ValueError(f"{side}: this transport shares no memory to place")
    cpu = sup.client_cpu if side == "client" else sup.server_cpus[0]
    bind(area, this_machine().cpus[cpu].node)


def chain(case: Case, sup: Supervisor) -> Setup:
    """client -> S1 -> ... -> Sk: started from the far end, each hop handed to its caller."""
    transport, workload = get_transport(case.transport), Workload(case.workload, case.iterations)
    nearest = sup.start(transport, case.payload_bytes, workload.handler)
    for _ in range(case.k - 1):
        downstream = nearest
        nearest = sup.start(transport, case.payload_bytes,
                            partial(forwarder, downstream), handoff=[downstream])
    return _through(nearest, case, messages=_messages(case, 2 * case.k))


def fanout(case: Case, sup: Supervisor) -> Setup:
    """The client asks k services in turn."""
    transport, workload = get_transport(case.transport), Workload(case.workload, case.iterations)
    channels = [sup.start(transport, case.payload_bytes, workload.handler) for _ in range(case.k)]
    request = os.urandom(case.payload_bytes)
    # each service's own fast calls and message, as a single-server loop would use them
    calls = [(*channel.timed_ops(), channel.prepare(request)) for channel in channels]

    def ask_all(_message: Buffer) -> None:
        for send, recv, message in calls:
            send(message)
            if recv is not None:
                recv()

    checks = [round_trip_check(channel, case.payload_bytes) for channel in channels]

    def check_all() -> None:
        for check in checks:
            check()

    return Setup(ask_all, None, request, check_all,
                 messages=_messages(case, 2 * case.k))


def ring(case: Case, sup: Supervisor) -> Setup:
    """A token around k processes (the client and k-1 relays), one link per hop."""
    transport = get_transport(case.transport)
    links = [sup.open(transport, case.payload_bytes) for _ in range(case.k)]
    for i in range(1, case.k):
        sup.spawn(partial(_relay_body, links, i, case.working_set),
                  keep_links=(links[i - 1], links[i]))
    first, last = _ring_ends(sup, links)
    send, _ = first.timed_ops()
    _, recv = last.timed_ops()

    def check() -> None:
        request = os.urandom(case.payload_bytes)
        first.send(request)
        expect_same(last.recv(), request)

    return Setup(send, recv, first.prepare(os.urandom(case.payload_bytes)), check,
                 hops=case.k, messages=case.k)


def _relay_body(links: list[Link], i: int, working_set: int) -> Callable[[], None]:
    inbound, outbound = links[i - 1].server(), links[i].client()
    return lambda: relay(inbound, outbound, working_set)


def _ring_ends(sup: Supervisor, links: list[Link]) -> tuple[Channel, Channel]:
    first, last = links[0].client(), links[-1].server()
    for link in links[1:-1]:
        link.close()
    sup.forget(links)
    return sup.take(first), sup.take(last)


def loopback(case: Case, sup: Supervisor) -> Setup:
    """One process sends to itself and receives: one message, no switch (alpha)."""
    link = sup.open(get_transport(case.transport), case.payload_bytes)
    sender, receiver = link.loopback()
    sup.forget([link])
    sup.take(sender)
    sup.take(receiver)
    send, _ = sender.timed_ops()
    _, receive = receiver.timed_ops()
    if receive is None:  # every transport that forms a loopback receives in the loop
        raise RuntimeError(f"{case.transport}: a loopback's receiving end has no receive")
    recv = receive
    if case.working_set:  # the same-process overhead of a ring hop that touches W bytes
        recv = _touching(receive, working_set_toucher(case.working_set))

    def check() -> None:
        request = os.urandom(case.payload_bytes)
        sender.send(request)
        expect_same(receiver.recv(), request)

    return Setup(send, recv, sender.prepare(os.urandom(case.payload_bytes)), check, messages=1)


def _touching(receive: Recv, touch: Callable[[int], object]) -> Recv:
    def recv() -> object:
        token = receive()
        touch(1)
        return token

    return recv


def compute(case: Case, sup: Supervisor) -> Setup:
    """The handler called in process, with an empty call timed beside it (C0)."""
    handler = Workload(case.workload, case.iterations).handler()

    def check() -> None:
        request = os.urandom(case.payload_bytes)
        expect_same(handler(request), request)

    return Setup(handler, None, os.urandom(case.payload_bytes), check, messages=0, baseline=id)


def _through(channel: Channel, case: Case, messages: int) -> Setup:
    send, recv = channel.timed_ops()
    message = channel.prepare(os.urandom(case.payload_bytes))
    return Setup(send, recv, message, round_trip_check(channel, case.payload_bytes),
                 messages=messages, loop=channel.timed_loop(message))


def refuse(case: Case, transport: Transport) -> str | None:
    """Why a topology cannot run over a transport, or None."""
    if transport.in_process and case.topology in ("ring", "self"):
        return f"an in-process call has no {case.topology}: nothing crosses a process"
    if case.topology == "ring" and case.k < 2:
        return "a ring needs at least two processes"
    if case.topology == "compute" and not transport.in_process:
        return "C0 is measured in process only"
    return None
