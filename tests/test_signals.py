"""Signals at any moment give one line and a documented status (130), never a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from .helpers import sigint_as_a_terminal_sends_it

# Sends the signal to itself while ``harness.cli`` is being imported: the moment a
# user's Ctrl-C lands in the first second of any command, made deterministic.
DURING_IMPORT = """
import builtins, os, sys
import harness.launch
real = builtins.__import__
def importing(name, *args, **kwargs):
    if name == "harness.cli":
        os.kill(os.getpid(), {sig})
    return real(name, *args, **kwargs)
builtins.__import__ = importing
sys.argv = ["ipcbench", "--help"]
raise SystemExit(harness.launch.main())
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_starting_is_one_line_and_130(sig):
    done = subprocess.run([sys.executable, "-c", DURING_IMPORT.format(sig=int(sig))],
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=sigint_as_a_terminal_sends_it)
    assert done.returncode == 130, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "interrupted while starting" in done.stderr
    assert done.stdout == ""
