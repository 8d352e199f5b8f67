"""The ring role (lmbench's lat_ctx): pass the token on, touching a private working set."""

from __future__ import annotations

from servers.transports.base import Channel


def relay(inbound: Channel, outbound: Channel, working_set: int) -> None:
    """Receive the token, read ``working_set`` private bytes, send it on; never returns."""
    recv, send = inbound.recv, outbound.send
    if not working_set:
        while True:
            send(recv())
    # memchr over zeros reads every byte once: the hop's cache footprint is W bytes.
    touch = bytes(working_set).find
    while True:
        token = recv()
        touch(1)
        send(token)
