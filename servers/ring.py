"""The ring role (lmbench's lat_ctx): pass the token on, touching a private working set."""

from __future__ import annotations

from collections.abc import Callable

from servers.transports.base import Channel


def working_set_toucher(size: int) -> Callable[[int], int]:
    """A function that reads ``size`` private bytes (memchr over zeros, none found).

    ``b"\0" * size`` writes its pages; ``bytes(size)`` would be calloc's untouched
    pages, all mapped to the kernel's one zero page: 4 KiB of cache, whatever the size.
    """
    return (b"\0" * size).find


def relay(inbound: Channel, outbound: Channel, working_set: int) -> None:
    """Receive the token, read ``working_set`` private bytes, send it on, until the
    peer goes. Uses the same fast calls as the client's timed loop."""
    send, _ = outbound.timed_ops()
    if not working_set:
        for token in inbound.frames():
            send(token)
        return
    touch = working_set_toucher(working_set)
    for token in inbound.frames():
        touch(1)
        send(token)
