"""The machine fingerprint and run metadata written beside every result."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyperf

from harness.errors import UsageError

FINGERPRINT_KEYS = ("cpu_model", "cpu_count", "kernel", "virtualization", "python")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def virtualization() -> str:
    """Hypervisor and container, e.g. ``vm:kvm+container:docker``, or ``none``."""
    found = []
    tool = shutil.which("systemd-detect-virt")
    for kind in ("vm", "container"):
        if tool:
            out = subprocess.run([tool, f"--{kind}"], capture_output=True, text=True, check=False)
            name = out.stdout.strip()
            if name and name != "none":
                found.append(f"{kind}:{name}")
    if not any(f.startswith("vm:") for f in found):
        try:
            if " hypervisor" in Path("/proc/cpuinfo").read_text():
                found.insert(0, "vm:hypervisor-flag")
        except OSError:
            pass
    return "+".join(found) or "none"


def fingerprint() -> dict[str, Any]:
    """What makes two runs comparable; ``machine_id`` is a hash of it."""
    print_ = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "virtualization": virtualization(),
        "python": platform.python_version(),
    }
    digest = hashlib.sha256(repr(sorted(print_.items())).encode()).hexdigest()[:12]
    return {"machine_id": digest, **print_}


MACHINE_NAME_VARIABLE = "IPCBENCH_MACHINE_NAME"


def machine_name(given: str | None = None) -> str:
    """The name a fleet knows this machine by: ``--machine-name``, else
    ``$IPCBENCH_MACHINE_NAME``, else the host name. Cloud runners get a new host name per
    job, so they set one of the first two (as conbench's CONBENCH_MACHINE_INFO_NAME)."""
    name = given if given is not None else os.environ.get(MACHINE_NAME_VARIABLE) or None
    if name is None:  # an empty variable is an unset one, as $IPCBENCH_HISTORY is
        return platform.node() or "unnamed"
    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise UsageError(f"machine name {name!r}: give 1 to 100 printable characters")
    return name


def describe_machine(name: str) -> dict[str, Any]:
    """metadata.json's ``machine``: the fingerprint (``machine_id`` hashes only that), the
    CPU topology in one line and the machine's name, neither of which is hashed, so a
    baseline stays the same machine's when it is named or renamed."""
    from harness.cputopology import this_machine

    return {**fingerprint(), "topology": this_machine().summary(), "name": name}


def nominal_mhz() -> float | None:
    """The clock /proc/cpuinfo states; on a VM the nominal one, not what the core runs at."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def pyperf_metadata() -> dict[str, Any]:
    """pyperf's own system metadata (CPU config, frequency, load, ASLR...)."""
    probe = pyperf.Run([1.0], metadata={"name": "probe"}, collect_metadata=True)
    meta = dict(probe.get_metadata())
    meta.pop("name", None)
    return meta


def git_commit(here: Path | None = None) -> str | None:
    """The commit checked out where ``here`` is (default: this code's checkout)."""
    here = here or Path(__file__).resolve().parent.parent
    if not (here / ".git").exists() or not shutil.which("git"):
        return None
    out = subprocess.run(
        ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or None
