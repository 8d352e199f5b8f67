"""The one small interface every transport implements.

A transport opens a ``Link`` in the parent before fork; after fork each side
takes its ``Channel``. Channels carry fixed-size frames: both ends know the
payload size of the case, so no header is parsed inside timed loops, which is
what lmbench does too.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

TYPE_CHECKING = False  # True for the type checker (pyproject: always_true); no typing here
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

CREATE_ATTEMPTS = 4

Buffer = bytes | bytearray | memoryview
Send = Callable[[Buffer], object]
Recv = Callable[[], object]  # a timed loop's receive: what it returns is never read
Loop = Callable[[int], object]  # n round trips of one prepared message, timed as a whole
# Runs an iterator to its end in C (the itertools recipe's consume): a serving loop
# built of C callables then runs no bytecode per message.
consume: Callable[[Iterable[object]], None] = deque[object](maxlen=0).extend


class Kind:
    """What an IPC name is given to. The journal records each name with its kind, and
    ``harness.cleanup`` removes each kind its own way."""

    SHM = "shm"  # POSIX shared memory: /dev/shm/NAME
    SEM = "sem"  # POSIX named semaphore: /dev/shm/sem.NAME
    MQ = "mq"  # POSIX message queue: found again through the journal alone
    DIR = "dir"  # a private folder in the temp dir (fifos, zmq's ipc:// endpoints)
    # SysV objects have keys, not names: the key is derived from the journaled name
    # (servers.transports.sysv.key_of), and cleanup finds it in /proc/sysvipc.
    SYSV_MSG = "sysv-msg"
    SYSV_SEM = "sysv-sem"
    SYSV_SHM = "sysv-shm"


KINDS = (Kind.SHM, Kind.SEM, Kind.MQ, Kind.DIR, Kind.SYSV_MSG, Kind.SYSV_SEM, Kind.SYSV_SHM)
# names(kind, tag): a fresh name under the run prefix, journaled with its kind first.
Names = Callable[[str, str], str]


def replies_with_request(handler: Callable[[Buffer], Buffer]) -> bool:
    """Whether ``handler`` answers every request with the request itself (echo)."""
    return getattr(handler, "replies_with_request", False) is True


class PeerGone(ConnectionError):
    """The other end closed or died (EOF, EPIPE)."""


class PeerTimeout(TimeoutError):
    """No message arrived within the channel's timeout."""


@dataclass(frozen=True)
class Placement:
    """Where a transport would run: lets a transport refuse a placement."""

    name: str
    cpus_available: int


class Channel(ABC):
    """One end of a link. ``recv`` returns a buffer valid until the next ``recv``."""

    payload: int

    @abstractmethod
    def send(self, data: Buffer) -> None: ...

    @abstractmethod
    def recv(self) -> Buffer:
        """Return the next frame; raise PeerGone on EOF, PeerTimeout on timeout."""

    def prepare(self, data: Buffer) -> Buffer:
        """The buffer a timed loop should pass to ``send`` to send ``data`` each time.

        A transport that can build the message in place (shared memory), or
        that carries it in another form (a 0-byte frame's token), returns that.
        """
        return data

    def timed_ops(self) -> tuple[Send, Recv | None]:
        """The fastest (send, recv) for a timed loop.

        They may skip checks that ``send``/``recv`` make (a short read at EOF);
        the harness verifies the last reply of every batch instead. ``recv`` is
        None when ``send`` itself returns the reply (an in-process call).
        """
        return self.send, self.recv

    def timed_loop(self, message: Buffer) -> Loop | None:
        """``n`` round trips of ``message`` (from ``prepare``) run by C code alone, where
        the transport's calls compose (a send's result is what the receive takes): no
        bytecode runs per message, so less of the interpreter is brought back into the
        caches after each switch. None where they do not compose: the timed loop then
        calls ``timed_ops``."""
        return None

    def shared_memory(self) -> memoryview | None:
        """The memory both ends share, where the transport has one (shm): what a NUMA
        binding applies to. None for transports the kernel copies through."""
        return None

    def frames(self) -> Iterator[Buffer]:
        """Every frame received, until the peer goes (each valid until the next)."""
        recv = self.recv
        while True:
            yield recv()

    def serve(self, handler: Callable[[Buffer], Buffer]) -> None:
        """Answer every request with ``handler(request)`` until the peer goes."""
        recv, send = self.recv, self.send
        while True:
            send(handler(recv()))

    @abstractmethod
    def close(self) -> None: ...


class Link(ABC):
    """Both ends of one client-server connection, created before fork."""

    @abstractmethod
    def client(self) -> Channel:
        """Take the client end (in the parent, after fork); drops the server's."""

    @abstractmethod
    def server(self) -> Channel:
        """Take the server end (in the child, after fork); drops the client's."""

    @abstractmethod
    def loopback(self) -> tuple[Channel, Channel]:
        """Both ends in this process (client, server): one process sends to itself."""

    @abstractmethod
    def close(self) -> None:
        """Release whatever this process still holds of the link."""

    def destroy(self) -> None:
        """Remove kernel objects that no close removes (SysV keys outlive every handle).
        The creator calls it once every process that used the link is gone."""
        return None  # most transports: close released everything


class Transport(ABC):
    """A way for a client to reach a server. One subclass per file, one registry entry."""

    name: str  # set by each subclass
    in_process: bool = False

    def max_payload(self) -> int:
        """The largest frame this transport carries on this machine."""
        return 1 << 30

    def refuse(self, payload: int, placement: Placement, links: int = 1) -> str | None:
        """Why a case with ``links`` client-server links cannot run here, or None."""
        if payload < 0:
            return "payload must be >= 0"
        limit = self.max_payload()
        if payload > limit:
            return f"{self.name} carries at most {limit} bytes here"
        return None

    @abstractmethod
    def open(self, names: Names, payload: int, timeout: float) -> Link:
        """Create the kernel objects; ``names(kind, tag)`` gives a unique IPC name."""


def create_new(names: Names, kind: str, tag: str, make: Callable[[str], T],
               taken: type[Exception] | tuple[type[Exception], ...] = FileExistsError) -> T:
    """``make(name)`` for a fresh ``names(kind, tag)``, and again under another name (another
    random part) if that one is ``taken``: the run prefix is in argv, so another user
    may squat on names; a squatter costs a retry, not the case."""
    for _ in range(CREATE_ATTEMPTS - 1):
        try:
            return make(names(kind, tag))
        except taken:
            continue
    return make(names(kind, tag))


def private_folder(names: Names, tag: str) -> str:
    """A fresh 0700 folder in the temp dir named under the run prefix (the sweep removes
    it after a SIGKILL): where named objects live that no other user may open."""
    import tempfile  # only the transports that need a folder pay for it

    def make(name: str) -> str:
        path = os.path.join(tempfile.gettempdir(), name.lstrip("/"))
        os.mkdir(path, 0o700)
        return path

    return create_new(names, Kind.DIR, tag, make)


def remove_folder(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
