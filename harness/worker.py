"""One worker process: run one case in a fresh interpreter and print its values as JSON.

The runner starts a new worker for every value set, as pyperf does, so one
case cannot warm the next. Workers import only what a timed case needs; the
servers they fork inherit that small image.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness.counters import ProcessCounters
from harness.ipcnames import NameSource
from harness.records import Case, Settings, WorkerResult
from harness.supervisor import Supervisor
from harness.timing import run_batches, warm_up
from servers.process import die_with_parent
from servers.transports import Channel, get_transport
from servers.workloads import Workload


class IntegrityError(RuntimeError):
    """A reply did not match its request byte for byte."""


def round_trip_intact(channel: Channel, payload: int) -> None:
    request = os.urandom(payload)
    channel.send(request)
    reply = channel.recv()
    if bytes(reply) != request:
        raise IntegrityError(f"reply of {len(reply)} bytes differs from the {payload}-byte request")


def run_case(case: Case, settings: Settings, names: NameSource) -> WorkerResult:
    transport = get_transport(case.transport)
    workload = Workload(case.workload, case.iterations)
    with Supervisor(names, case.placement, settings.sched_batch, settings.timeout_s) as sup:
        sup.pin_client()
        channel = sup.start(transport, case.payload_bytes, workload.handler)
        round_trip_intact(channel, case.payload_bytes)
        message = channel.prepare(os.urandom(case.payload_bytes))
        send, recv = channel.timed_ops()
        target_ns = int(settings.batch_ms * 1e6)
        loops, warmups = warm_up(
            send, recv, message, target_ns=target_ns, warmups=settings.warmups,
            timeout=settings.timeout_s,
        )
        counters = ProcessCounters([os.getpid(), *sup.pids])
        before = counters.read()
        values = run_batches(send, recv, message, loops, settings.batches, settings.timeout_s)
        spent = counters.read() - before
        round_trip_intact(channel, case.payload_bytes)
    return WorkerResult(loops, values, warmups, spent.per_op(loops * settings.batches))


def main() -> int:
    task = json.loads(sys.stdin.read())
    die_with_parent(task["runner_pid"])
    os.sched_setaffinity(0, task["cpus"])
    names = NameSource(f"{task['prefix']}{os.getpid()}-", Path(task["journal"]))
    try:
        result = run_case(Case.from_dict(task["case"]), Settings(**task["settings"]), names)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
