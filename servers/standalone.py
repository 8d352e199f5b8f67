"""An exec'd echo server: a program of its own, as a microkernel's servers are.

Forked servers share the parent's pages until they write them; a server
started by exec builds its own interpreter and heap. ``boot`` and
``footprint`` measure both. Requests arrive on one pipe, replies leave on
another; ``ready`` goes to the status pipe once the loop is about to run.
"""

from __future__ import annotations

import os
import sys
from functools import partial

from servers.lifeline import ServerSetup, die_with_parent, place

READ_CHUNK = 1 << 16
REQUIRED = ("request-fd", "reply-fd", "status-fd", "parent")  # also --cpu, --sched-batch, --run


def parse(argv: list[str]) -> dict[str, str]:
    """``--name value`` pairs and ``--flag``s; argparse alone would add ~5 ms to each start."""
    options: dict[str, str] = {}
    i = 0
    while i < len(argv):
        name = argv[i].removeprefix("--")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            options[name], i = argv[i + 1], i + 2
        else:
            options[name], i = "1", i + 1
    missing = [f"--{n}" for n in REQUIRED if n not in options]
    if missing:
        raise SystemExit(f"servers.standalone: missing {', '.join(missing)}")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    request_fd, reply_fd, status_fd = (int(options[n]) for n in REQUIRED[:3])
    parent = int(options["parent"])
    die_with_parent(parent)
    cpu = int(options["cpu"]) if "cpu" in options else None
    place(ServerSetup(cpu, "sched-batch" in options, parent))
    os.write(status_fd, b"ready\n")
    os.close(status_fd)
    write = partial(os.write, reply_fd)
    try:
        for request in iter(partial(os.read, request_fd, READ_CHUNK), b""):
            write(request)
    except BrokenPipeError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
