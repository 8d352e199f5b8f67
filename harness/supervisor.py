"""Starts and stops server processes: fork from the lean worker, pin, ready handshake.

Each server is forked (not spawned) so that starting it costs about a
millisecond and it runs nothing but its role; it dies with its parent
(PR_SET_PDEATHSIG), and ``stop`` reaps every one of them.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from harness.names import NameSource
from servers.echo import serve
from servers.process import ServerSetup, run_server
from servers.transports import Channel, Link, PeerGone, Transport
from servers.transports.base import close_fds
from servers.transports.call import CallLink
from servers.transports.stream import StreamChannel
from servers.workloads import Handler

# Every worker imports this module: ``typing`` and ``subprocess`` cost each of them milliseconds.
TYPE_CHECKING = False  # True for the type checker (pyproject: always_true)
if TYPE_CHECKING:
    import subprocess

STOP_GRACE_S = 1.0
DEATH_GRACE_S = 0.1  # how long a failed wait looks for a server that is dying
STANDALONE_MODULE = "servers.standalone"


class ServerStartError(RuntimeError):
    """A server failed before it answered the ready handshake."""


def cpu_plan(placement: str) -> tuple[int, list[int]]:
    """(client CPU, server CPUs) for a placement class, from the CPUs we may use; its
    servers take those in turn (``harness.cputopology``). ValueError when there are none."""
    if placement == "same-cpu":  # most cases: no topology to import or read from sysfs
        cpu = min(os.sched_getaffinity(0))
        return cpu, [cpu]
    from harness.cputopology import this_machine  # what the other classes need

    return this_machine().plan(placement)


@dataclass
class Server:
    pid: int
    cpu: int


@dataclass
class Supervisor:
    """Owns the servers of one worker and the client ends that reach them."""

    names: NameSource
    placement: str = "same-cpu"
    sched_batch: bool = False
    timeout: float = 10.0
    cpus: tuple[int, int] | None = None  # an explicit (client, server) pair: no placement
    servers: list[Server] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    _links: list[Link] = field(default_factory=list)
    _created: list[Link] = field(default_factory=list)  # destroyed once the servers are gone
    _execed: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.cpus is not None:
            self.client_cpu, self.server_cpus = self.cpus[0], [self.cpus[1]]
        else:
            self.client_cpu, self.server_cpus = cpu_plan(self.placement)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pin_client(self) -> None:
        os.sched_setaffinity(0, {self.client_cpu})
        if self.sched_batch:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.servers]

    def open(self, transport: Transport, payload: int) -> Link:
        """A link whose ends are handed out later (rings); closed by ``stop``."""
        link = transport.open(self.names, payload, self.timeout)
        self._links.append(link)
        self._created.append(link)
        return link

    def start(
        self, transport: Transport, payload: int, make_handler: Callable[[], Handler],
        handoff: Sequence[Channel] = (),
    ) -> Channel:
        """Start one server answering with ``make_handler()``; return the client end.

        ``handoff`` are client ends the new server takes over (the next hop of a
        chain): it keeps them, this process closes its copies.
        """
        link = transport.open(self.names, payload, self.timeout)
        if transport.in_process:
            assert isinstance(link, CallLink)
            link.attach(make_handler())
            return self._keep(link.client())
        self._links.append(link)
        self._created.append(link)

        def body() -> Callable[[], None]:
            channel, handler = link.server(), make_handler()
            return lambda: serve(channel, handler)

        self.spawn(body, handoff, keep_links=(link,))
        self._links.remove(link)
        return self._keep(link.client())

    def spawn(self, body: Callable[[], Callable[[], None]], handoff: Sequence[Channel] = (),
              keep_links: Sequence[Link] = ()) -> int:
        """Fork a server that runs ``body()``'s loop once it has answered ``ready``.

        The child keeps the ``handoff`` channels and the ``keep_links`` it takes ends
        of; it closes every other end it inherited, so that a death anywhere shows
        up as EOF or EPIPE rather than as silence."""
        cpu = self.server_cpus[len(self.servers) % len(self.server_cpus)]
        setup = ServerSetup(cpu=cpu, sched_batch=self.sched_batch, parent_pid=os.getpid())
        status_r, status_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(status_r)
            run_server(setup, status_w, lambda: self._in_child(body, handoff, keep_links))
        os.close(status_w)
        self.servers.append(Server(pid, cpu))
        try:
            self._await_ready(pid, status_r)
        finally:
            os.close(status_r)
        for channel in handoff:
            channel.close()
            self.channels.remove(channel)
        return pid

    def _in_child(self, body: Callable[[], Callable[[], None]], handoff: Sequence[Channel],
                  keep_links: Sequence[Link]) -> Callable[[], None]:
        self._created = []  # the parent destroys them, once this server is gone
        for channel in self.channels:
            if channel not in handoff:
                channel.close()
        for link in self._links:
            if link not in keep_links:
                link.close()
        return body()

    def exec_echo(self, payload: int = 0, run: str = "") -> Channel:
        """Start an echo server by exec (``servers.standalone``): its own interpreter,
        nothing shared with this process but the pipes. Returns the client end."""
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        status_r, status_w = os.pipe()
        cpu = self.server_cpus[len(self.servers) % len(self.server_cpus)]
        command = [sys.executable, "-I", "-m", STANDALONE_MODULE, "--request-fd", str(request_r),
                   "--reply-fd", str(reply_w), "--status-fd", str(status_w),
                   "--parent", str(os.getpid()), "--cpu", str(cpu),
                   "--run", run or self.names.prefix, *(["--sched-batch"] * self.sched_batch)]
        import subprocess  # only here: every worker imports this module

        try:  # no preexec_fn: it would cost subprocess its fast vfork path
            proc = subprocess.Popen(command, pass_fds=(request_r, reply_w, status_w))
        except OSError:
            close_fds(request_w, reply_r, status_r)
            raise
        finally:
            close_fds(request_r, reply_w, status_w)
        self._execed.append(proc)  # kept so the Popen is not collected while it runs
        self.servers.append(Server(proc.pid, cpu))
        try:
            self._await_ready(proc.pid, status_r)
        except ServerStartError:
            close_fds(request_w, reply_r)
            raise
        finally:
            os.close(status_r)
        return self._keep(StreamChannel(reply_r, request_w, payload))

    def dead(self) -> str | None:
        """How the first supervised server that ended did ("server pid N died (SIGKILL)"),
        or None; the server is left unreaped for ``stop``."""
        for server in self.servers:
            try:
                info = os.waitid(os.P_PID, server.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                continue
            if info is not None:
                return f"server pid {server.pid} {_ending(info)}"
        return None

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Raise PeerGone, naming the server and its signal, the moment a server dies.

        Pipes and sockets see EOF, but a semaphore, a queue or a spinning flag gives no
        sign of a dead peer until the timeout. A SIGCHLD handler interrupts the wait;
        posix_ipc turns that into its SignalError, which is renamed here."""

        def died(_signum: int, _frame: FrameType | None) -> None:
            gone = self.dead()
            if gone:
                raise PeerGone(gone)

        previous = signal.signal(signal.SIGCHLD, died)
        try:
            died(signal.SIGCHLD, None)  # a death before the handler was in place
            yield
        except Exception as exc:
            # A killed server's pipes close before it is a zombie: EOF can come first.
            deadline = time.monotonic() + DEATH_GRACE_S
            while (gone := self.dead()) is None and time.monotonic() < deadline:
                time.sleep(0.001)
            if gone and not (isinstance(exc, PeerGone) and str(exc) == gone):
                raise PeerGone(gone) from exc
            raise
        finally:
            signal.signal(signal.SIGCHLD, previous)

    def discard(self, pid: int, channel: Channel) -> None:
        """A server that died and was reaped by the caller (a crash experiment): drop
        it, and close the client end that reached it, so ``stop`` has nothing to do."""
        self.servers = [s for s in self.servers if s.pid != pid]
        channel.close()
        self.channels.remove(channel)

    def forget(self, links: Sequence[Link]) -> None:
        """Links whose ends were taken (or closed) here: ``stop`` must not close them again."""
        for link in links:
            self._links.remove(link)

    def take(self, channel: Channel) -> Channel:
        """Register an end taken from an ``open`` link, so ``stop`` closes it."""
        return self._keep(channel)

    def _keep(self, channel: Channel) -> Channel:
        self.channels.append(channel)
        return channel

    def _await_ready(self, pid: int, status_fd: int) -> None:
        ready, _, _ = select.select([status_fd], [], [], self.timeout)
        line = os.read(status_fd, 4096).decode(errors="replace").strip() if ready else ""
        if line != "ready":
            self._kill([pid])
            self.servers = [s for s in self.servers if s.pid != pid]
            reason = line.removeprefix("error: ") or f"no ready handshake within {self.timeout:g} s"
            raise ServerStartError(f"server {pid} failed to start: {reason}")

    def stop(self) -> None:
        """Close client ends, terminate and reap every server; idempotent."""
        for channel in self.channels:
            channel.close()
        self.channels.clear()
        for link in self._links:
            link.close()
        self._links.clear()
        self._kill(self.pids)
        self.servers.clear()
        for link in self._created:  # SysV objects outlive every handle: removed by id
            link.destroy()
        self._created.clear()
        for proc in self._execed:
            proc.returncode = proc.returncode if proc.returncode is not None else -9  # reaped
        self._execed.clear()

    def _kill(self, pids: list[int]) -> None:
        # Queues and semaphores give no EOF, so servers are told to go, not waited on.
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        pending = set(pids)
        while pending:
            for pid in list(pending):
                if _reaped(pid):
                    pending.discard(pid)
            if pending and time.monotonic() > deadline:
                for pid in pending:
                    _signal(pid, signal.SIGKILL)
                    _reaped(pid, block=True)
                break
            if pending:
                time.sleep(0.001)


def _ending(info: os.waitid_result) -> str:
    if info.si_code == os.CLD_EXITED:
        return f"exited with status {info.si_status}"
    try:
        name = signal.Signals(info.si_status).name
    except ValueError:
        name = f"signal {info.si_status}"
    return f"died ({name})"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reaped(pid: int, block: bool = False) -> bool:
    try:
        return os.waitpid(pid, 0 if block else os.WNOHANG) != (0, 0)
    except ChildProcessError:
        return True
