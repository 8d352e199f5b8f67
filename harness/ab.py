"""``ipcbench ab``: one suite under two Python environments, their workers in pairs.

Relative continuous benchmarking: on a shared runner the host's spells move every
number by more than the change to be gated, so base and new are never measured at
different times. For every case and pass, one worker of each environment runs,
back to back; each pair saw the same spell, and a paired test judges the ratios
(``harness.compare``). An environment is a Python interpreter that can run
ipcbench's worker: a virtual environment with another checkout of the code, another
version of a library such as posix_ipc, or another interpreter.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError
from harness.metadata import git_commit

SIDES = ("base", "new")
PROBE = "import harness, harness.worker; print(harness.__file__)"


@dataclass(frozen=True)
class Environment:
    """A Python interpreter that runs ipcbench's worker, and the code it runs."""

    python: str
    code: str  # the checkout its ``harness`` package comes from
    commit: str | None

    def describe(self) -> dict[str, str | None]:
        return {"python": self.python, "code": self.code, "git_commit": self.commit}


def environment(python: str) -> Environment:
    """Check that ``python`` can run the worker; UsageError (one line) if not."""
    try:
        done = subprocess.run([python, "-I", "-c", PROBE], capture_output=True, text=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{python}: cannot start it ({exc})") from None
    if done.returncode != 0 or not done.stdout.strip().endswith("__init__.py"):
        last = (done.stderr.strip().splitlines() or ["it did not say where ipcbench is"])[-1]
        raise UsageError(f"{python}: cannot run ipcbench's worker ({last}); install the "
                         "code under test there, e.g. `pip install -e CHECKOUT`")
    code = Path(done.stdout.strip()).resolve().parent.parent
    return Environment(python, str(code), git_commit(code))
