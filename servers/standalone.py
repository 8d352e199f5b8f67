"""An exec'd echo server: a program of its own, as a microkernel's servers are.

Forked servers share the parent's pages until they write them; a server
started by exec builds its own interpreter and heap. ``boot`` and
``footprint`` measure both. Requests arrive on one pipe, replies leave on
another; ``ready`` goes to the status pipe once the loop is about to run.
"""

from __future__ import annotations

import argparse
import os
from functools import partial

from servers.process import ServerSetup, die_with_parent, place

READ_CHUNK = 1 << 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="servers.standalone")
    for name in ("request-fd", "reply-fd", "status-fd", "parent"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--sched-batch", action="store_true")
    parser.add_argument("--run", default="", help="the run prefix, for ipcbench cleanup")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    place(ServerSetup(args.cpu, args.sched_batch, args.parent))
    os.write(args.status_fd, b"ready\n")
    os.close(args.status_fd)
    write = partial(os.write, args.reply_fd)
    try:
        for request in iter(partial(os.read, args.request_fd, READ_CHUNK), b""):
            write(request)
    except BrokenPipeError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
