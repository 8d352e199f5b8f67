"""Every registered transport passes the contract (harness.contract); a plugged-in one is
found through its entry point and gets the same tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.contract import TransportContract
from harness.supervisor import Supervisor
from servers.transports import TRANSPORTS, Placement


class TestEveryTransport(TransportContract):
    """The contract a user's own transport gets too (harness.contract), over every
    registered transport."""

    @pytest.fixture(params=list(TRANSPORTS))
    def transport_name(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)


def test_server_start_error_is_reported(names, no_child_left):
    from harness.supervisor import ServerStartError

    def broken():
        raise RuntimeError("handler factory failed")

    with Supervisor(names, timeout=5) as sup, pytest.raises(ServerStartError, match="factory"):
        sup.start(TRANSPORTS["pipe"], 64, broken)


def test_oversized_payload_is_refused():
    where = Placement("same-cpu", 2)
    mq = TRANSPORTS["mq"]
    assert mq.refuse(mq.max_payload(), where) is None
    assert "at most" in mq.refuse(mq.max_payload() + 1, where)
    assert TRANSPORTS["shm-spin"].refuse(64, where) is not None


# The README's example of a user's own transport, as a user would ship it: a module, an
# entry point in a distribution's metadata, and a test module that takes the contract.
PLUGIN_MODULE = """
import socket

from servers.transports.base import Link, Names, Transport
from servers.transports.sockets import SocketLink, wmem_max


class UnixDatagramTransport(Transport):
    \"\"\"Unix datagram sockets: one datagram per frame, boundaries kept.\"\"\"

    name = "uds-dgram"

    def max_payload(self) -> int:
        return wmem_max() - 4096  # a datagram and its bookkeeping fit the send buffer

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        return SocketLink(*pair, payload, timeout)
"""
PLUGIN_TEST = """
from harness.contract import TransportContract


class TestUnixDatagram(TransportContract):
    transport = "uds-dgram"
"""


def install_plugin(where: Path, entry: str = "my_transports:UnixDatagramTransport") -> None:
    """A distribution on ``where`` (a sys.path entry), as pip would lay it out."""
    (where / "my_transports.py").write_text(PLUGIN_MODULE)
    info = where / "my_transports-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-transports\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ipcbench.transports]\nuds-dgram = {entry}\n")


def plugin_env(where: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(where), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def test_a_plugged_in_transport_passes_the_contract(tmp_path):
    install_plugin(tmp_path)
    (tmp_path / "test_uds_dgram.py").write_text(PLUGIN_TEST)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), str(tmp_path / "test_uds_dgram.py")],
        capture_output=True, text=True, env=plugin_env(tmp_path), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and "error" not in summary, summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 8, summary


def test_a_plugged_in_transport_is_listed_beside_the_built_in_ones(tmp_path):
    install_plugin(tmp_path)
    listed = subprocess.run(
        [sys.executable, "-c",
         "from servers.transports import TRANSPORTS; print(list(TRANSPORTS))"],
        capture_output=True, text=True, env=plugin_env(tmp_path), timeout=60)
    assert "'uds-dgram'" in listed.stdout, listed.stderr
    assert "'pipe'" in listed.stdout


def test_a_broken_plugin_is_named(tmp_path):
    install_plugin(tmp_path, entry="my_transports:NoSuchClass")
    done = subprocess.run(
        [sys.executable, "-c",
         "from servers.transports import TRANSPORTS; TRANSPORTS['uds-dgram']"],
        capture_output=True, text=True, env=plugin_env(tmp_path), timeout=60)
    assert done.returncode != 0
    assert "transport 'uds-dgram' (my_transports:NoSuchClass) cannot be loaded" in done.stderr
