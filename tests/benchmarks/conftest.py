"""pytest-benchmark runs of the transports, through the harness's own code.

Not part of ``scripts/test``: run them with ``tox -e bench-ci``, which saves
each run and fails on a median 10% slower than the last one saved.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness.metadata import fingerprint
from harness.names import NameSource, new_run_prefix
from harness.supervisor import Supervisor
from servers.transports import TRANSPORTS, Channel
from servers.workloads import echo

PAYLOAD = 64
CASES = [("call", "same-cpu"), ("pipe", "same-cpu"), ("mq", "same-cpu"), ("shm", "same-cpu"),
         ("uds", "same-cpu"), ("shm-spin", "cross-cpu")]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    # the fingerprint ipcbench's own compare uses, so saved runs say where they ran
    machine_info["ipcbench"] = fingerprint()


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param


@pytest.fixture(scope="module")
def transport(case: tuple[str, str]) -> str:
    return case[0]


@pytest.fixture(scope="module")
def channel(case: tuple[str, str]) -> Iterator[Channel]:
    """One server per transport for the whole module, the client pinned as the suite pins it."""
    name, placement = case
    if placement == "cross-cpu" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("cross-cpu needs two CPUs")
    affinity = os.sched_getaffinity(0)
    with Supervisor(NameSource(new_run_prefix()), placement=placement, timeout=10) as sup:
        sup.pin_client()
        try:
            yield sup.start(TRANSPORTS[name], PAYLOAD, lambda: echo)
        finally:
            os.sched_setaffinity(0, affinity)
