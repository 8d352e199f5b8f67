"""Names for a run's IPC objects, and the journal of each before it is created.

Every name carries the run's prefix ``ipcb-<runner pid>-<random>-``, so that
``harness.ipcnames`` can tell whose an object is and ``harness.cleanup`` can remove
what a killed run left. Every worker imports this module, so it imports little:
no ``pathlib``, no ``tempfile`` until a probe asks for a scratch folder.
"""

from __future__ import annotations

import itertools
import os

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
        self._journal = journal
        self._counter = itertools.count()

    def __call__(self, tag: str) -> str:
        name = f"/{self.prefix}{next(self._counter)}-{tag}"
        if self._journal is not None:
            fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{name}\n".encode())
            finally:
                os.close(fd)
        return name

    def scratch(self, tag: str) -> TemporaryDirectory[str]:
        """A temporary folder named under the run prefix: removed on exit, and by the
        sweep if the worker is SIGKILLed (Ctrl-C, a worker timeout) before it can."""
        from tempfile import TemporaryDirectory  # probes only: it pulls in random, hashlib

        return TemporaryDirectory(prefix=f"{self.prefix.lstrip('/')}{tag}-")
