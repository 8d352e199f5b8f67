"""How a case's processes are wired, as the engine sees it: a ``Setup``.

A topology is a builder, ``build(case, supervisor) -> Setup``, that starts the servers
a case needs and returns the two callables of its timed loop, the message, how many
hops one loop makes, and a byte-for-byte check. Experiments register their builders
in the ``ipcbench.topologies`` entry-point group; the runner resolves a case's builder
once and hands its ``module:function`` to the worker, which imports just that (an
entry-point lookup would cost every worker tens of milliseconds).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

from harness.records import Case
from harness.supervisor import Supervisor
from servers.transports import Buffer, Channel
from servers.transports.base import Loop, Recv, Send

GROUP = "ipcbench.topologies"


@dataclass
class Setup:
    send: Send
    recv: Recv | None
    message: Buffer
    check: Callable[[], None]
    hops: int = 1  # values are per hop: a ring lap is k hops
    messages: int = 2  # messages per loop iteration
    baseline: Send | None = None  # an empty call to subtract (C0)
    loop: Loop | None = None  # the round trips in C, where the channel composes them


Builder = Callable[[Case, Supervisor], Setup]


class IntegrityError(RuntimeError):
    """A reply did not match its request byte for byte."""


def expect_same(reply: Buffer, request: bytes) -> None:
    if bytes(reply) != request:
        raise IntegrityError(
            f"reply of {len(reply)} bytes differs from the {len(request)}-byte request"
        )


def round_trip_check(channel: Channel, payload: int) -> Callable[[], None]:
    def check() -> None:
        request = os.urandom(payload)
        channel.send(request)
        expect_same(channel.recv(), request)

    return check


def builders() -> dict[str, str]:
    """Every registered topology: name -> ``module:function`` of its builder."""
    from importlib.metadata import entry_points  # the runner's, never a worker's

    return {entry.name: entry.value for entry in entry_points(group=GROUP)}


def builder_path(name: str) -> str:
    found = builders()
    if name not in found:
        raise ValueError(f"unknown topology {name!r} (known: {', '.join(sorted(found))})")
    return found[name]


def load_builder(path: str) -> Builder:
    """The builder at ``module:function``."""
    module, _, name = path.partition(":")
    builder: Builder = getattr(import_module(module), name)
    return builder
