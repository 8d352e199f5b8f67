"""The layered storage stack on real files: write them all, sync, drop the cache, read back.

One measurement is one ordering (the case's ``order``) over one transport: ``call``
(the layers call each other in this process) or ``pipe`` (one forked server
per layer, each holding the pipe to the next). The input is the standard
library's ``*.py`` files, read once per worker; the device is a file in a
temporary directory that is removed whatever happens.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter_ns

from harness.names import NameSource
from harness.records import Case, Settings
from harness.supervisor import Supervisor
from harness.timing import watchdog
from servers.layers import (
    ORDERS,
    Compress,
    Encrypt,
    FramedChannel,
    FramedPipe,
    StackClient,
    Transform,
    in_process,
    make_layer,
    stack_layers,
)
from servers.workloads import Handler

MIB = 1 << 20
CALIBRATION_BYTES = 1 << 20  # input the isolated per-layer costs are measured on
TEMP_PREFIX = "ipcb-layers-"
FRAME_SLACK = 4096  # a record is a block plus a few dozen bytes; a header a few per block
SKIP_FOLDERS = frozenset(("site-packages", "__pycache__"))  # not the stdlib's own source
PHASE_S_PER_MIB = 1.0  # watchdog: a phase may take this long per MiB, beyond settings.timeout_s


def stdlib_files(limit: int = 0) -> list[tuple[str, bytes]]:
    """(relative name, bytes) of the stdlib's *.py files, whole files only, up to ``limit``
    bytes in all (0: every one). A sorted walk, files before subfolders: the same files
    in the same order every time, and it stops as soon as it has enough."""
    root = sysconfig.get_paths()["stdlib"]
    files: list[tuple[str, bytes]] = []
    total = 0
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIP_FOLDERS)
        for name in sorted(names):
            path = os.path.join(folder, name)
            if not name.endswith(".py") or not os.path.isfile(path):
                continue
            with open(path, "rb") as file:
                data = file.read()
            if limit and total + len(data) > limit:
                return files
            files.append((os.path.relpath(path, root), data))
            total += len(data)
    return files


def blocks_of(files: list[tuple[str, bytes]], block: int, limit: int) -> list[bytes]:
    """About ``limit`` bytes of pages, cut per file as the page cache cuts them, taken
    evenly over the whole input: text compresses unevenly from one package to the next."""
    pages = [data[at:at + block] for _, data in files for at in range(0, len(data), block)]
    total = sum(map(len, pages))
    return pages[::max(1, -(-total // limit))]


@contextmanager
def open_stack(order: str, block: int, path: str, transport: str,
               sup: Supervisor) -> Iterator[StackClient]:
    """The stack for ``order``, in process or as a chain of servers (started bottom up,
    each handed the pipe to the one below); closed, and every server reaped, on exit."""
    names = stack_layers(order)
    if transport == "call":
        top, layers = in_process(order, block, path)
        try:
            yield StackClient(top)
        finally:
            for layer in layers:
                layer.close()
        return
    if transport != "pipe":
        raise ValueError(f"layers: transport {transport!r} is not one of call, pipe")
    framed, below = FramedPipe(), None
    for name in reversed(names):
        def handler(name: str = name, below: FramedChannel | None = below) -> Handler:
            layer = make_layer(name, block, path)  # in the server: the key never leaves it
            handle = layer.bind(below.request).handle if below is not None else layer.handle
            return handle  # type: ignore[return-value]  # a framed channel hands it bytes
        channel = sup.start(framed, block + FRAME_SLACK, handler,
                            handoff=[below] if below is not None else [])
        assert isinstance(channel, FramedChannel)
        below = channel
    assert below is not None
    try:
        yield StackClient(below.request)
    finally:
        sup.stop()  # servers exit on EOF; the driver's file closes with its process


def calibrate(order: str, blocks: list[bytes], folder: str) -> dict[str, float]:
    """Each data layer alone on what it sees in this ordering: ns per byte entering it,
    forward (write) and inverse (read). The driver's records go to a file of their own."""
    transforms: list[Transform] = [Compress() if n == "zlib" else Encrypt()
                                   for n in ORDERS[order]]
    out: dict[str, float] = {}
    records = blocks
    stages = []
    for layer in transforms:
        size = sum(map(len, records))
        start = perf_counter_ns()
        produced = [layer.forward(r) for r in records]
        out[f"iso_{layer.name}_write_ns_per_byte"] = (perf_counter_ns() - start) / size
        stages.append((layer, size))
        records = produced
    size = sum(map(len, records))
    fd = os.open(os.path.join(folder, "calibration"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        start, offsets, end = perf_counter_ns(), [], 0
        for record in records:
            os.pwrite(fd, record, end)
            offsets.append(end)
            end += len(record)
        out["iso_driver_write_ns_per_byte"] = (perf_counter_ns() - start) / size
        start = perf_counter_ns()
        got = [os.pread(fd, len(r), at) for r, at in zip(records, offsets, strict=True)]
        out["iso_driver_read_ns_per_byte"] = (perf_counter_ns() - start) / size
    finally:
        os.close(fd)
    for layer, size in reversed(stages):
        start = perf_counter_ns()
        got = [layer.inverse(r) for r in got]
        out[f"iso_{layer.name}_read_ns_per_byte"] = (perf_counter_ns() - start) / size
    if got != blocks:
        raise RuntimeError(f"layers: calibration of {order} did not give the input back")
    return out


def run_stack(client: StackClient, files: list[tuple[str, bytes]],
              timeout: float) -> tuple[int, int, bool]:
    """(write ns, read ns, intact): write every file and sync; drop the cache, read all."""
    with watchdog(timeout):
        start = perf_counter_ns()
        for name, data in files:
            client.write(name, data)
        client.sync()
        written = perf_counter_ns() - start
    with watchdog(timeout):
        start = perf_counter_ns()
        client.drop()
        back = [client.read(name) for name, _ in files]
        read = perf_counter_ns() - start
    return written, read, all(got == data for got, (_, data) in zip(back, files, strict=True))


def measure(case: Case, settings: Settings, names: NameSource,
            files: list[tuple[str, bytes]]) -> dict[str, float]:
    """One pass of one ordering over one transport, with its isolated calibration."""
    order, block = str(case.param("order")), case.payload_bytes
    total = sum(len(data) for _, data in files)
    mib = total / MIB
    timeout = settings.timeout_s + PHASE_S_PER_MIB * mib
    with names.scratch("layers") as folder, \
            Supervisor(names, "same-cpu", timeout=settings.timeout_s) as sup:
        sup.pin_client()  # the servers share this CPU: no cross-CPU wake-ups
        device = os.path.join(folder, "device")
        with open_stack(order, block, device, case.transport, sup) as client:
            written, read, intact = run_stack(client, files, timeout)
            if not intact:  # a stack that corrupts data has no timing worth reporting
                raise RuntimeError(f"layers: {order} over {case.transport} read back "
                                   "other bytes than it wrote")
            with watchdog(timeout):
                stats = client.stats()
        device_bytes = os.path.getsize(device)
        iso = calibrate(order, blocks_of(files, block, CALIBRATION_BYTES), folder)
    values = {"write_ns_per_mib": written / mib, "read_ns_per_mib": read / mib,
              "total_ns_per_mib": (written + read) / mib, "bytes_ratio": device_bytes / total,
              "intact": float(intact),
              "requests_per_mib": sum(s[4] for s in stats.values()) / mib, **iso}
    pred = [0.0, 0.0]
    for layer, (ns_w, ns_r, bytes_w, bytes_r, _) in stats.items():
        values[f"{layer}_write_ns_per_mib"] = ns_w / mib
        values[f"{layer}_read_ns_per_mib"] = ns_r / mib
        values[f"{layer}_bytes_ratio"] = bytes_w / total
        # T = sum of cost per byte x bytes entering: the data layers' costs from their
        # isolated runs; cache and fs see the input whatever the order, so their own time.
        if f"iso_{layer}_write_ns_per_byte" in iso:
            pred[0] += iso[f"iso_{layer}_write_ns_per_byte"] * bytes_w / mib
            pred[1] += iso[f"iso_{layer}_read_ns_per_byte"] * bytes_r / mib
        else:
            pred[0] += ns_w / mib
            pred[1] += ns_r / mib
    values.update(pred_write_ns_per_mib=pred[0], pred_read_ns_per_mib=pred[1],
                  pred_ns_per_mib=sum(pred))
    return values


def probe(cases: list[Case], settings: Settings, names: NameSource) -> dict[str, list[float]]:
    case = cases[0]
    files = stdlib_files(int(case.param("file_bytes")))  # 0: all of them
    if not files:
        raise RuntimeError("layers: no standard-library *.py files found within the limit")
    values = measure(case, settings, names, files)
    return {c.metric: [values[c.metric]] for c in cases}
