"""How soon a client learns that its server died, per transport.

Each trial starts one server whose handler takes 1 s, sends a request, and SIGKILLs the
server 50 ms into the client's wait; it times the kill to the client's PeerGone ("server
pid N died (SIGKILL)"). The client's wait ends through the supervisor's SIGCHLD watch,
so this is the time the harness needs to name a dead server, on every transport.

Usage: python scripts/dead_server_time.py [--trials N]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

from harness.cleanup import sweep
from harness.names import NameSource, new_run_prefix
from harness.supervisor import Supervisor
from servers.transports import TRANSPORTS, PeerGone, Transport


def one_kill(transport: Transport, placement: str, journal: Path) -> float:
    prefix = new_run_prefix()
    killed = 0.0
    try:
        with Supervisor(NameSource(prefix, journal), placement=placement, timeout=30) as sup:
            channel = sup.start(transport, 64, lambda: lambda r: (time.sleep(1.0), r)[1])
            pid = sup.pids[0]

            def kill() -> None:
                nonlocal killed
                killed = time.perf_counter()
                os.kill(pid, signal.SIGKILL)

            killer = threading.Timer(0.05, kill)
            try:
                with sup.watch():
                    killer.start()
                    channel.send(b"x" * 64)
                    channel.recv()
            except PeerGone:
                return time.perf_counter() - killed
            finally:
                killer.join()
        raise RuntimeError(f"{transport.name}: the request was answered; no kill landed")
    finally:
        sweep(prefix)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as scratch:
        for name, transport in TRANSPORTS.items():
            placement = "cross-cpu" if name == "shm-spin" else "same-cpu"
            if transport.in_process or (placement == "cross-cpu" and cpus < 2):
                continue
            times = [one_kill(transport, placement, Path(scratch) / "journal")
                     for _ in range(args.trials)]
            print(f"{name}: {len(times)} kills, median {1e3 * statistics.median(times):.2f} "
                  f"ms, max {1e3 * max(times):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
