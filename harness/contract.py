"""The contract every transport passes, built in or a user's own, as a pytest class.

A transport registered under the ``ipcbench.transports`` entry-point group gets the
same tests as the built-in ones by subclassing::

    from harness.contract import TransportContract

    class TestMyTransport(TransportContract):
        transport = "my-transport"

The fixtures come from ipcbench's pytest plugin (``harness.pytest_plugin``, loaded
through the ``pytest11`` entry point): a journaled run prefix per test that fails the
test if anything is left behind, and a check that every server was reaped.

What is checked: bytes arrive intact from 0 B to the transport's limit; the fast ops a
timed loop uses keep frames in step; closing reaps every server and file descriptor;
a dead peer is detected within the timeout, and named when the supervisor watches; and
what a SIGKILL strands is found and removed by ``ipcbench cleanup``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial

import posix_ipc
import pytest

from harness.cleanup import sweep
from harness.ipcnames import journal_path
from harness.names import NameSource, new_run_prefix, read_journal
from harness.supervisor import Supervisor
from servers.transports import PeerGone, PeerTimeout, Placement, Transport, get_transport, sysv
from servers.transports.base import Buffer, Kind
from servers.workloads import echo

SIZES = (0, 1, 63, 64, 4095, 4096, 4097, 65536, 65537, 1 << 20)
SPINNING = ("shm-spin",)  # busy pollers refuse one CPU: they run on two


def placement_for(name: str) -> str:
    return "cross-cpu" if name in SPINNING else "same-cpu"


def sizes_for(transport: Transport, placement: str) -> list[int]:
    """Every size of SIZES it carries here, and its own limit where that is smaller."""
    where = Placement(placement, len(os.sched_getaffinity(0)))
    sizes = {s for s in SIZES if transport.refuse(s, where) is None}
    limit = transport.max_payload()
    if limit <= SIZES[-1] and transport.refuse(limit, where) is None:
        sizes.add(limit)
    return sorted(sizes)


def _reversed(request: Buffer) -> bytes:
    """A reply the server must read the request to make: over a shared area, echo's reply
    is the client's own bytes, which would pass even if nothing were shared."""
    return bytes(request)[::-1]


def _handler(handler: Callable[[Buffer], Buffer]) -> Callable[[Buffer], Buffer]:
    return handler


def _slow_echo(request: Buffer) -> Buffer:
    time.sleep(0.2)  # slow enough that a kill lands while the client waits
    return request


class TransportContract:
    """Subclass with ``transport = "<registered name>"``, or override the
    ``transport_name`` fixture (parametrized) to run it over several."""

    transport = ""

    @pytest.fixture
    def transport_name(self) -> str:
        if not self.transport:
            pytest.skip("set `transport` to the registered name of the transport under test")
        return self.transport

    @pytest.fixture
    def contract(self, transport_name: str) -> tuple[Transport, str]:
        """The transport and the placement its cases run at; skipped where it cannot."""
        transport = get_transport(transport_name)
        placement = placement_for(transport_name)
        why = transport.refuse(0, Placement(placement, len(os.sched_getaffinity(0))))
        if why is not None:
            pytest.skip(f"{transport_name}: {why}")
        if placement != "same-cpu" and len(os.sched_getaffinity(0)) < 2:
            pytest.skip(f"{transport_name} needs two CPUs")
        return transport, placement

    def test_payloads_arrive_intact(self, contract, ipcbench_names, ipcbench_no_child_left):
        transport, placement = contract
        sizes = sizes_for(transport, placement)
        assert 0 in sizes and len(sizes) >= 4, f"carries too few sizes here: {sizes}"
        with Supervisor(ipcbench_names, placement=placement, timeout=5) as sup:
            for size in sizes:  # echo's own path: test_timed_ops_keep_frames_aligned
                channel = sup.start(transport, size, partial(_handler, _reversed))
                for _ in range(3):
                    request = os.urandom(size)
                    channel.send(request)
                    reply = bytes(channel.recv())
                    assert len(reply) == size
                    assert hashlib.sha256(reply).digest() == \
                        hashlib.sha256(request[::-1]).digest()

    @pytest.mark.parametrize("size", [0, 64, 8192])
    def test_timed_ops_keep_frames_aligned(self, contract, size, ipcbench_names,
                                           ipcbench_no_child_left):
        """The fast path a timed loop uses leaves the channel in step with the checked one."""
        transport, placement = contract
        if transport.refuse(size, Placement(placement, 2)) is not None:
            pytest.skip(f"{transport.name} does not carry {size} B here")
        with Supervisor(ipcbench_names, placement=placement, timeout=5) as sup:
            channel = sup.start(transport, size, lambda: echo)
            send, recv = channel.timed_ops()
            message = channel.prepare(os.urandom(size))
            for _ in range(300):
                send(message)
                if recv is not None:
                    recv()
            loop = channel.timed_loop(message)
            if loop is not None:  # the round trips in C, where the channel has them
                loop(300)
            probe = os.urandom(size)
            channel.send(probe)
            assert bytes(channel.recv()) == probe

    def test_close_reaps_servers_and_fds(self, contract, ipcbench_names,
                                         ipcbench_no_child_left):
        transport, placement = contract
        if transport.in_process:
            pytest.skip("an in-process transport has no server")
        fds_before = set(os.listdir("/proc/self/fd"))
        with Supervisor(ipcbench_names, placement=placement, timeout=5) as sup:
            for size in (0, 64):
                sup.start(transport, size, lambda: echo)
            pids = sup.pids
            assert len(pids) == 2 and all(_alive(p) for p in pids)
        assert not any(_alive(p) for p in pids)
        assert set(os.listdir("/proc/self/fd")) == fds_before

    def test_dead_peer_is_detected(self, contract, ipcbench_names, ipcbench_no_child_left):
        transport, placement = contract
        if transport.in_process:
            pytest.skip("an in-process transport has no peer")
        timeout = 1.0
        with Supervisor(ipcbench_names, placement=placement, timeout=timeout) as sup:
            channel = sup.start(transport, 64, lambda: echo)
            os.kill(sup.pids[0], signal.SIGKILL)
            started = time.monotonic()
            with pytest.raises((PeerGone, PeerTimeout)):
                channel.send(b"x" * 64)
                channel.recv()
            assert time.monotonic() - started < timeout * 3

    def test_a_dead_server_is_named(self, contract, ipcbench_names, ipcbench_no_child_left):
        """Killed while the client waits: the watch ends the wait with the server's pid and
        signal. The timeout is long, so ending it by timeout would raise PeerTimeout."""
        transport, placement = contract
        if transport.in_process:
            pytest.skip("an in-process transport has no server")
        with Supervisor(ipcbench_names, placement=placement, timeout=60) as sup:
            channel = sup.start(transport, 64, lambda: _slow_echo)
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

    def test_kill_9_leaves_nothing_cleanup_cannot_remove(self, contract):
        """A process that opened a link is SIGKILLed: the sweep of its run (what
        ``ipcbench cleanup`` does for a dead run) leaves none of its objects behind."""
        transport, _placement = contract
        if transport.in_process:
            pytest.skip("an in-process transport makes no kernel object")
        prefix = new_run_prefix()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child is SIGKILLed
            try:
                os.close(ready_r)
                link = transport.open(NameSource(prefix, journal_path(prefix)), 64, 5)
                link.loopback()
                os.write(ready_w, b"ready")
                signal.pause()
            except BaseException as exc:
                os.write(ready_w, repr(exc).encode()[:4000])
            finally:
                os._exit(1)
        os.close(ready_w)
        try:
            said = os.read(ready_r, 4096)
            assert said == b"ready", f"the child could not open a link: {said.decode()}"
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(ready_r)
        journal = journal_path(prefix)
        entries = read_journal(journal.read_text()) if journal.exists() else []
        try:
            sweep(prefix)
            left = leftovers(prefix, entries)
            assert left == [], f"the sweep left {left}"
        finally:
            if leftovers(prefix, entries):  # a failed sweep's objects go anyway
                journal.write_text("".join(f"{kind} {name}\n" for kind, name in entries))
                sweep(prefix)
            journal.unlink(missing_ok=True)


def leftovers(prefix: str, entries: list[tuple[str, str]]) -> list[str]:
    """What is left of a run, looked for where each kind of object lives (not through
    the sweep, which would only find what it knows how to find): /dev/shm, the temp
    dir, POSIX queues and SysV keys of the journal's names."""
    found = [f"/dev/shm/{name}" for name in os.listdir("/dev/shm") if prefix in name]
    found += [f"{tempfile.gettempdir()}/{name}" for name in os.listdir(tempfile.gettempdir())
              if name.startswith(prefix)]
    for kind, name in entries:
        if kind == Kind.MQ:
            try:
                posix_ipc.MessageQueue(name).close()
                found.append(f"mq {name}")
            except posix_ipc.ExistentialError:
                pass
        elif kind in sysv.PROC_TABLES:
            key = sysv.key_of(name)
            found += [f"{kind} {key:#x}" for found in sysv.listed(kind) if found.key == key]
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
