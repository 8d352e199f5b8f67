"""The planner against recorded sysfs trees: each placement class gets the CPU pair the
machine's shape gives, or the reason it has none."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import timed
from harness import cputopology
from harness.cputopology import Topology, Unavailable, parse_cpulist
from harness.records import Case

from .helpers import ipcbench

SHAPES = Path(__file__).parent / "data" / "topology"
FIRST_THREADS_THEN_SECOND = [*range(1, 8), *range(8, 16)]

# Per shape: what each class resolves to, (client, servers) or words of the reason.
EXPECTED = {
    "intel-2s-smt": {
        "same-cpu": (0, [0]), "smt-sibling": (0, [8]), "same-llc": (0, [1, 2, 3, 9, 10, 11]),
        "cross-llc": "one last-level cache", "cross-package": (0, [4, 5, 6, 7, 12, 13, 14, 15]),
        "cross-numa": (0, [4, 5, 6, 7, 12, 13, 14, 15]),
        "cross-cpu": (0, FIRST_THREADS_THEN_SECOND)},
    "amd-epyc-4ccx": {
        "same-cpu": (0, [0]), "smt-sibling": (0, [16]), "same-llc": (0, [1, 2, 3, 17, 18, 19]),
        "cross-llc": (0, [*range(4, 16), *range(20, 32)]), "cross-package": "one package",
        "cross-numa": "one NUMA node", "cross-cpu": (0, [*range(1, 16), *range(16, 32)])},
    "desktop-1llc": {
        "same-cpu": (0, [0]), "smt-sibling": (0, [4]), "same-llc": (0, [1, 2, 3, 5, 6, 7]),
        "cross-llc": "one last-level cache", "cross-package": "one package",
        "cross-numa": "one NUMA node", "cross-cpu": (0, [1, 2, 3, 4, 5, 6, 7])},
    "xeon-4s-interleaved": {  # CPUs numbered round-robin over the sockets
        "same-cpu": (0, [0]), "smt-sibling": (0, [8]), "same-llc": (0, [4, 12]),
        "cross-llc": "one last-level cache", "cross-package": (0, [1, 2, 3, 5, 6, 7, 9, 10,
                                                                   11, 13, 14, 15]),
        "cross-numa": "one NUMA node", "cross-cpu": (0, [*range(1, 8), *range(8, 16)])},
    "kvm-2vcpu": {
        "same-cpu": (0, [0]), "smt-sibling": "no usable CPU has an SMT sibling",
        "same-llc": (0, [1]), "cross-llc": "one last-level cache",
        "cross-package": "one package", "cross-numa": "one NUMA node", "cross-cpu": (0, [1])},
}


def shape(name: str) -> Topology:
    return Topology.from_record((SHAPES / f"{name}.txt").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_class_resolves_to_the_shape_s_cpus_or_says_why_not(name):
    plans = shape(name).plans()
    assert set(plans) == set(cputopology.CLASSES)
    for placement, expected in EXPECTED[name].items():
        if isinstance(expected, str):
            assert isinstance(plans[placement], str) and expected in plans[placement], placement
        else:
            assert plans[placement] == expected, placement


def test_the_shapes_read_as_their_machines_are_built():
    intel, epyc = shape("intel-2s-smt"), shape("amd-epyc-4ccx")
    assert {c.package for c in intel.cpus.values()} == {0, 1}
    assert {c.node for c in intel.cpus.values()} == {0, 1}
    assert intel.cpus[12].threads == (4, 12) and intel.cpus[12].llc == 4
    assert len({c.llc for c in epyc.cpus.values()}) == 4
    assert all(c.llc_level == 3 for c in epyc.cpus.values())
    assert len(epyc.layout()) == 16  # cores, each with its two threads


def test_only_usable_cpus_are_planned():
    files = dict(line.split("\t", 1) for line in (SHAPES / "intel-2s-smt.txt").read_text()
                 .splitlines() if line and not line.startswith("#"))
    second_socket = Topology.read(files.get, usable=[4, 5, 6, 7, 12, 13, 14, 15])
    assert second_socket.plan("same-cpu") == (4, [4])
    assert second_socket.plan("smt-sibling") == (4, [12])
    with pytest.raises(Unavailable, match="one package"):
        second_socket.plan("cross-package")
    alone = Topology.read(files.get, usable=[3])
    with pytest.raises(Unavailable, match="needs two usable CPUs"):
        alone.plan("cross-cpu")


def test_this_machine_reads_and_records_alike():
    live = cputopology.this_machine()
    again = Topology.from_record(cputopology.record())
    assert again.cpus == live.cpus
    assert live.plan("same-cpu")[0] in live.usable


def test_cpu_lists_parse_as_the_kernel_writes_them():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("") == []
    with pytest.raises(ValueError):
        parse_cpulist("5-2")
    with pytest.raises(ValueError):
        parse_cpulist("zero")


def test_a_class_the_machine_lacks_is_a_skipped_case_with_its_reason(monkeypatch):
    monkeypatch.setattr(timed, "this_machine", lambda: shape("kvm-2vcpu"))
    case = Case("latency", "pipe", "cross-package", 64)
    assert "one package (socket) here" in (timed.refusal(case, 2) or "")
    assert timed.refusal(Case("latency", "pipe", "same-llc", 64), 2) is None
    monkeypatch.setattr(timed, "this_machine", lambda: shape("desktop-1llc"))
    assert timed.refusal(Case("latency", "pipe", "smt-sibling", 64), 8) is None


def test_the_command_prints_a_recorded_shape_and_refuses_a_bad_file(tmp_path):
    done = ipcbench("topology", "--from", str(SHAPES / "amd-epyc-4ccx.txt"))
    assert done.returncode == 0, done.stderr
    assert "cross-llc" in done.stdout and "4, 5, 6, 7" in done.stdout
    bad = tmp_path / "bad.txt"
    bad.write_text("cpu/online\tzero\n")
    done = ipcbench("topology", "--from", str(bad))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "not a topology record" in done.stderr
    record = tmp_path / "here.txt"
    done = ipcbench("topology", "--record", str(record))
    assert done.returncode == 0, done.stderr
    assert Topology.from_record(record.read_text()).cpus == cputopology.this_machine().cpus


def test_without_sysfs_only_same_cpu_and_cross_cpu_are_placed(monkeypatch, tmp_path):
    real = cputopology.sysfs_files
    monkeypatch.setattr(cputopology, "sysfs_files", lambda: real(tmp_path))  # an empty tree
    cputopology._sysfs.cache_clear()
    try:
        machine = cputopology.this_machine()
        assert not machine.known and machine.plan("same-cpu")[0] in machine.usable
        if len(machine.usable) > 1:
            assert machine.plan("cross-cpu")[1]
        with pytest.raises(Unavailable, match="no readable CPU topology"):
            machine.plan("same-llc")
    finally:
        cputopology._sysfs.cache_clear()
