"""The service code itself: the same functions run in process (``call``) and in servers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from servers.transports.base import Buffer

Handler = Callable[[Buffer], Buffer]
WORKLOADS = ("echo", "compute")


def echo(request: Buffer) -> Buffer:
    """Answer with the request itself: the cheapest possible service."""
    return request


# A channel may serve echo without calling it (the reply is the request): a server that
# runs no bytecode per message brings less of the interpreter back after each switch.
echo.replies_with_request = True  # type: ignore[attr-defined]


def compute(iterations: int) -> Handler:
    """A request handler that spends a fixed amount of pure computation, then echoes."""

    def handle(request: Buffer) -> Buffer:
        total = 0
        for i in range(iterations):
            total += i
        return request

    return handle


@dataclass(frozen=True)
class Workload:
    """What a server does per request: ``echo``, or ``compute`` for ``iterations`` steps."""

    name: str = "echo"
    iterations: int = 0

    def __post_init__(self) -> None:
        if self.name not in WORKLOADS:
            raise ValueError(f"unknown workload {self.name!r} (known: {', '.join(WORKLOADS)})")
        if self.iterations < 0:
            raise ValueError("workload iterations must be >= 0")

    def handler(self) -> Handler:
        return echo if self.name == "echo" else compute(self.iterations)
