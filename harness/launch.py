"""The ``ipcbench`` command's first lines: signals are answered before the imports.

Importing the CLI (pandas, matplotlib, rich) takes about a second. Without this, an
interrupt in that second ends in a KeyboardInterrupt traceback, and SIGTERM in
silence with status 143; here both give one line and status 130, as they do later."""

from __future__ import annotations

import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from harness.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:  # the CLI answers its own; this is before it could
        print("ipcbench: interrupted while starting; nothing was measured or written",
              file=sys.stderr)
        return EXIT_INTERRUPTED
