"""Names for a run's IPC objects, and the journal of each before it is created.

Every name carries the run's prefix ``ipcb-<runner pid>-<random>-``, so that
``harness.ipcnames`` can tell whose an object is and ``harness.cleanup`` can remove
what a killed run left. The prefix is in every worker's argv, so each name also
carries a random part drawn in the process that creates it: another user cannot
guess a name to squat on it (``servers.transports.base.create_new`` retries if one
is taken anyway). Every worker imports this module, so it imports little:
no ``pathlib``, no ``tempfile`` until a probe asks for a scratch folder, no
``secrets`` (``os.urandom`` is the same source).
"""

from __future__ import annotations

import itertools
import os
import stat

from harness.errors import UsageError
from servers.transports.base import KINDS, Kind

TYPE_CHECKING = False  # True for the type checker (pyproject: always_true)
if TYPE_CHECKING:
    from tempfile import TemporaryDirectory

PREFIX = "ipcb-"


def new_run_prefix() -> str:
    return f"{PREFIX}{os.getpid()}-{os.urandom(3).hex()}-"


class NameSource:
    """Hands out unique names under a prefix and journals each before it is created."""

    def __init__(self, prefix: str, journal: str | os.PathLike[str] | None = None) -> None:
        self.prefix = prefix
        # os.devnull is how tests say "no journal"; it is no regular file of ours.
        self._journal = None if journal is None or os.fspath(journal) == os.devnull else journal
        self._counter = itertools.count()

    def __call__(self, kind: str, tag: str = "") -> str:
        """A fresh name for an object of ``kind`` (``servers.transports.base.Kind``),
        journaled with its kind before the caller creates it; ``tag`` only reads well."""
        if kind not in KINDS:
            raise ValueError(f"unknown IPC object kind {kind!r} (known: {', '.join(KINDS)})")
        # The random part stays out of argv: only this process knows it until it is used.
        name = f"/{self.prefix}{next(self._counter)}-{os.urandom(4).hex()}-{tag or kind}"
        if self._journal is not None:
            append_journal(self._journal, journal_line(kind, name))
        return name

    def scratch(self, tag: str) -> TemporaryDirectory[str]:
        """A temporary folder named under the run prefix: removed on exit, and by the
        sweep if the worker is SIGKILLed (Ctrl-C, a worker timeout) before it can."""
        from tempfile import TemporaryDirectory  # probes only: it pulls in random, hashlib

        return TemporaryDirectory(prefix=f"{self.prefix.lstrip('/')}{tag}-")


def journal_line(kind: str, name: str) -> str:
    """One journal entry: the object's kind, then its name (names hold no spaces)."""
    return f"{kind} {name}"


# Journals written before kinds were recorded hold a bare name per line; their naming
# scheme put a queue's kind in its tag (``...-mq-c2s``, ``...-mq-s2c``). A dead run of
# that version (or an ``ab`` base side that runs it) is still cleaned up by it.
LEGACY_QUEUE_TAGS = ("-mq-c2s", "-mq-s2c")


def read_journal(text: str) -> list[tuple[str, str]]:
    """The (kind, name) entries of a journal's text. A bare name is an older version's
    entry: a queue if its tag says so, else passed over (shm and semaphores are found
    in /dev/shm anyway)."""
    entries = []
    for line in text.splitlines():
        kind, _, name = line.partition(" ")
        if kind in KINDS and name.startswith("/") and " " not in name:
            entries.append((kind, name))
        elif not name and kind.startswith("/") and kind.endswith(LEGACY_QUEUE_TAGS):
            entries.append((Kind.MQ, kind))
    return entries


def append_journal(journal: str | os.PathLike[str], line: str) -> None:
    """Note ``line`` (``journal_line``) in the journal: never through a symlink, never
    into a file that is not a regular file of ours (cleanup trusts what the journal
    names)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(journal, flags, 0o600)
    except OSError as exc:  # ELOOP: a symlink in its place
        raise UsageError(f"journal {os.fspath(journal)}: cannot open it safely "
                         f"({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise UsageError(f"journal {os.fspath(journal)}: not a regular file owned by "
                             f"uid {os.geteuid()}; refusing to write to it")
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)
