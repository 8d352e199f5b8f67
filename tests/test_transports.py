"""The contract every transport passes: intact bytes, clean close, dead peers detected."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import psutil
import pytest

from harness.supervisor import Supervisor
from servers.transports import TRANSPORTS, PeerGone, PeerTimeout, Placement, Transport
from servers.workloads import echo

PROCESS_TRANSPORTS = [name for name, t in TRANSPORTS.items() if not t.in_process]
SIZES = [0, 1, 63, 64, 4095, 4096, 4097, 65536, 65537, 1 << 20]
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


def placement_for(name: str) -> str:
    return "cross-cpu" if name == "shm-spin" else "same-cpu"


def sizes_for(transport: Transport, placement: str) -> list[int]:
    where = Placement(placement, len(os.sched_getaffinity(0)))
    sizes = [s for s in SIZES if transport.refuse(s, where) is None]
    limit = transport.max_payload()
    if limit <= SIZES[-1] and transport.refuse(limit, where) is None:
        sizes.append(limit)
    return sorted(set(sizes))


def needs_cpus(name: str) -> None:
    if placement_for(name) == "cross-cpu" and not TWO_CPUS:
        pytest.skip("shm-spin needs two CPUs")


@pytest.mark.parametrize("name", list(TRANSPORTS))
def test_payloads_arrive_intact(name, names, no_child_left):
    needs_cpus(name)
    transport = TRANSPORTS[name]
    placement = placement_for(name)
    sizes = sizes_for(transport, placement)
    assert 0 in sizes and len(sizes) >= 5
    with Supervisor(names, placement=placement, timeout=5) as sup:
        for size in sizes:
            channel = sup.start(transport, size, lambda: echo)
            for _ in range(3):
                request = os.urandom(size)
                channel.send(request)
                reply = bytes(channel.recv())
                assert len(reply) == size
                assert hashlib.sha256(reply).digest() == hashlib.sha256(request).digest()


@pytest.mark.parametrize("size", [0, 64, 8192])
@pytest.mark.parametrize("name", list(TRANSPORTS))
def test_timed_ops_keep_frames_aligned(name, size, names, no_child_left):
    """The fast path a timed loop uses leaves the channel in step with the checked one."""
    needs_cpus(name)
    transport = TRANSPORTS[name]
    with Supervisor(names, placement=placement_for(name), timeout=5) as sup:
        channel = sup.start(transport, size, lambda: echo)
        send, recv = channel.timed_ops()
        message = channel.prepare(os.urandom(size))
        for _ in range(300):
            send(message)
            if recv is not None:
                recv()
        probe = os.urandom(size)
        channel.send(probe)
        assert bytes(channel.recv()) == probe


@pytest.mark.parametrize("name", PROCESS_TRANSPORTS)
def test_close_reaps_servers_and_fds(name, names, no_child_left):
    needs_cpus(name)
    fds_before = set(os.listdir("/proc/self/fd"))
    with Supervisor(names, placement=placement_for(name), timeout=5) as sup:
        for size in (0, 64):
            sup.start(TRANSPORTS[name], size, lambda: echo)
        pids = sup.pids
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
    assert not any(psutil.pid_exists(p) for p in pids)
    assert set(os.listdir("/proc/self/fd")) == fds_before


@pytest.mark.parametrize("name", PROCESS_TRANSPORTS)
def test_dead_peer_is_detected(name, names, no_child_left):
    needs_cpus(name)
    timeout = 1.0
    with Supervisor(names, placement=placement_for(name), timeout=timeout) as sup:
        channel = sup.start(TRANSPORTS[name], 64, lambda: echo)
        os.kill(sup.pids[0], signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises((PeerGone, PeerTimeout)):
            channel.send(b"x" * 64)
            channel.recv()
        assert time.monotonic() - started < timeout * 3


@pytest.mark.parametrize("name", PROCESS_TRANSPORTS)
def test_a_dead_server_is_named_on_every_transport(name, names, no_child_left):
    """Killed while the client waits: the watch ends the wait with the server's pid and
    signal. The timeout is long, so ending it by timeout would raise PeerTimeout."""
    needs_cpus(name)
    with Supervisor(names, placement=placement_for(name), timeout=60) as sup:
        channel = sup.start(TRANSPORTS[name], 64, lambda: lambda request: (
            time.sleep(0.2), request)[1])  # slow enough that the kill lands mid-wait
        pid = sup.pids[0]
        with pytest.raises(PeerGone, match=f"server pid {pid} died \\(SIGKILL\\)"), \
                sup.watch():
            killer = threading.Timer(0.05, os.kill, (pid, signal.SIGKILL))
            killer.start()
            try:
                channel.send(b"x" * 64)
                channel.recv()
            finally:
                killer.join()


def test_server_start_error_is_reported(names, no_child_left):
    from harness.supervisor import ServerStartError

    def broken():
        raise RuntimeError("handler factory failed")

    with Supervisor(names, timeout=5) as sup, pytest.raises(ServerStartError, match="factory"):
        sup.start(TRANSPORTS["pipe"], 64, broken)


def test_oversized_payload_is_refused():
    where = Placement("same-cpu", 2)
    mq = TRANSPORTS["mq"]
    assert mq.refuse(mq.max_payload(), where) is None
    assert "at most" in mq.refuse(mq.max_payload() + 1, where)
    assert TRANSPORTS["shm-spin"].refuse(64, where) is not None
