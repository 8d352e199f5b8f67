"""Native references: each transport's same-cpu round trip held against C doing the same
per message (``harness/native/pingpong.c``), so the harness's own cost is measured.

Both sides run on the same CPU, pinned as the suite's cases are, in alternating rounds
(C, then the suite, transport by transport, round after round), so both see the same
spells of a drifting machine; a ratio is the median over rounds of suite / C.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.records import Case, Settings
from harness.runfolder import NATIVE_COLUMNS

SOURCE = Path(__file__).with_name("native") / "pingpong.c"
# The suite's transport -> the C mechanism that does the same per round trip.
MECHANISMS = {
    "pipe": "pipe", "fifo": "fifo", "uds": "uds", "socketpair": "socketpair", "tcp": "tcp",
    "udp": "udp", "eventfd": "eventfd", "futex": "futex", "mq": "posix-mq",
    "sysv-mq": "sysv-mq", "shm": "shm-posix-sem", "sysv-sem": "shm-sysv-sem",
    "signal": "signal",
}
GOALS = {"pipe": 1.10, "fifo": 1.2, "uds": 1.2, "socketpair": 1.2, "tcp": 1.2, "eventfd": 1.2}
EXPLAIN_OVER = 1.3  # past this, the README says why for the transports without a goal
COLUMNS = NATIVE_COLUMNS
# The suite's side of each round: a few workers and batches, as scripts/compare-c used.
SUITE_SIDE = Settings(workers=3, batches=5, warmups=1, batch_ms=20.0)
UNSUPPORTED = 3  # pingpong's exit status for "cannot run here"
RUN_TIMEOUT_S = 120


class NativeUnavailable(Exception):
    """No native reference here: no C compiler, or the build failed (the reason)."""


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ipcbench"


def build() -> Path:
    """The compiled reference, built once per source version into the user's cache."""
    cc = compiler()
    if cc is None:
        raise NativeUnavailable("no C compiler (cc or gcc, or $CC) is installed")
    digest = hashlib.sha256(SOURCE.read_bytes() + cc.encode()).hexdigest()[:12]
    binary = cache_dir() / f"pingpong-{digest}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f".{binary.name}.{os.getpid()}")
    try:  # $CC may carry arguments ("ccache gcc")
        done = subprocess.run([*shlex.split(cc), "-O2", "-o", str(partial), str(SOURCE), "-lrt"],
                              capture_output=True, text=True)
    except OSError as exc:
        raise NativeUnavailable(f"the C compiler {cc} cannot run ({exc.strerror})") from None
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise NativeUnavailable(f"{cc} could not build {SOURCE.name}: {first}")
    os.replace(partial, binary)  # atomic: another run never sees half a binary
    return binary


def round_trip(binary: Path, mechanism: str, cpu: int, payload: int,
               iterations: int) -> float | str:
    """One native run's round trip in ns, or why it cannot run here."""
    command = [str(binary), mechanism, str(cpu), str(cpu), str(payload), str(iterations)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        except BaseException:  # a timeout, an interrupt: SIGTERM, so it removes its
            proc.terminate()   # SysV objects (IPC_PRIVATE: nothing could find them later)
            try:
                proc.wait(timeout=5)
            finally:
                proc.kill()
            raise
    if proc.returncode == UNSUPPORTED:
        return err.strip().removeprefix("unsupported: ") or "unsupported here"
    if proc.returncode != 0:
        raise RuntimeError(f"native {mechanism} failed: {err.strip()}")
    return float(json.loads(out)["round_trip_ns"])


@dataclass
class NativeReference:
    """Every round's pair per transport, and the transports that could not be held."""

    rounds: pd.DataFrame
    skipped: dict[str, str]


def summary(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per transport: median native and suite ns, the median ratio and its range."""
    rows = []
    for transport, sub in rounds.groupby("transport", sort=False):
        ratios = sub.suite_ns / sub.native_ns
        rows.append({"transport": transport, "mechanism": sub.mechanism.iloc[0],
                     "rounds": len(sub), "native_ns": sub.native_ns.median(),
                     "suite_ns": sub.suite_ns.median(), "ratio": ratios.median(),
                     "ratio_low": ratios.min(), "ratio_high": ratios.max(),
                     "goal": GOALS.get(str(transport))})
    return pd.DataFrame(rows)


def report_rows(rounds: pd.DataFrame | None, skipped: dict[str, str]
                ) -> tuple[list[str], list[list[str]]]:
    """The report's "suite / native" table: a row per transport held, or skipped."""
    header = ["transport", "C mechanism", "C us", "suite us", "suite / C", "range", "goal"]
    body = []
    if rounds is not None and len(rounds):
        for row in summary(rounds).itertuples():
            goal = GOALS.get(str(row.transport))
            goal_text = f"<= {goal:.2f}" if goal else ""
            body.append([str(row.transport), str(row.mechanism), f"{row.native_ns / 1e3:.3f}",
                         f"{row.suite_ns / 1e3:.3f}", f"{row.ratio:.2f}",
                         f"{row.ratio_low:.2f}-{row.ratio_high:.2f}", goal_text])
    body += [[t, MECHANISMS.get(t, ""), "", "", "skipped", why, ""] for t, why in skipped.items()]
    return header, body


def measure(suite_ns: Callable[[Case], float], transports: list[str], rounds: int, *,
            payload: int = 64, iterations: int = 20_000, cpu: int | None = None,
            progress: Callable[[str], None] = lambda _: None) -> NativeReference:
    """``rounds`` alternating rounds over ``transports`` (those with a C equivalent);
    ``suite_ns(case)`` measures the suite's side of one case, in ns per round trip."""
    binary = build()
    cpu = min(os.sched_getaffinity(0)) if cpu is None else cpu
    skipped = {t: "no C equivalent in the native reference" for t in transports
               if t not in MECHANISMS}
    held = [t for t in transports if t in MECHANISMS]
    rows = []
    for number in range(1, rounds + 1):
        progress(f"native reference: round {number} of {rounds}")
        for transport in held:
            if transport in skipped:
                continue
            native = round_trip(binary, MECHANISMS[transport], cpu, payload, iterations)
            if isinstance(native, str):
                skipped[transport] = f"the C side cannot run here: {native}"
                continue
            suite = suite_ns(Case("latency", transport, "same-cpu", payload))
            rows.append({"round": number, "transport": transport,
                         "mechanism": MECHANISMS[transport], "payload_bytes": payload,
                         "cpu": cpu, "native_ns": native, "suite_ns": suite})
    return NativeReference(pd.DataFrame(rows, columns=COLUMNS), skipped)


