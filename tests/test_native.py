"""The native reference: the C side runs every mechanism and cleans up, the table is the
median of per-round ratios, and a run without a compiler says why it skipped it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness import native
from harness.errors import UsageError
from harness.runfolder import read_native

HAVE_CC = native.compiler() is not None
needs_cc = pytest.mark.skipif(not HAVE_CC, reason="no C compiler here")
CPU = min(os.sched_getaffinity(0))


def sysv_objects() -> list[str]:
    found = []
    for table in ("msg", "sem", "shm"):
        with open(f"/proc/sysvipc/{table}") as lines:
            found += [f"{table} {line.split()[1]}" for line in list(lines)[1:]]
    return found


@needs_cc
@pytest.mark.parametrize("mechanism", sorted(set(native.MECHANISMS.values())))
def test_every_mechanism_runs_and_leaves_nothing(mechanism):
    # SysV objects are what pingpong could strand (IPC_PRIVATE: no name, no journal);
    # everything else it makes is unlinked before fork.
    before = set(sysv_objects())
    binary = native.build()
    for payload in (0, 64, 4096):
        found = native.round_trip(binary, mechanism, CPU, payload, 500)
        assert isinstance(found, float) and found > 0, found
    assert not set(sysv_objects()) - before
    assert not [p for p in os.listdir("/tmp") if p.startswith("ipcbench-native-")]


@needs_cc
def test_a_frame_over_the_limit_is_a_reason_not_a_failure():
    why = native.round_trip(native.build(), "udp", CPU, 70_000, 100)
    assert isinstance(why, str) and why


def test_a_missing_compiler_is_a_reason(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(native.NativeUnavailable, match="cannot run"):
        native.build()


def test_the_ratio_is_the_median_of_each_rounds_ratio():
    rounds = pd.DataFrame({
        "round": [1, 2, 3], "transport": ["pipe"] * 3, "mechanism": ["pipe"] * 3,
        "payload_bytes": [64] * 3, "cpu": [0] * 3,
        "native_ns": [1000.0, 2000.0, 1000.0], "suite_ns": [1500.0, 2000.0, 1200.0]})
    [row] = native.summary(rounds).to_dict("records")
    assert row["ratio"] == pytest.approx(1.2)  # of 1.5, 1.0, 1.2; not 1500 / 1000
    assert (row["ratio_low"], row["ratio_high"]) == (1.0, 1.5)
    header, body = native.report_rows(rounds, {"zmq": "no C equivalent"})
    assert body[0][header.index("suite / C")] == "1.20"
    assert body[0][header.index("goal")] == "<= 1.10"
    assert body[1][:1] == ["zmq"] and "skipped" in body[1]


def test_a_bad_native_file_is_named(tmp_path):
    (tmp_path / "native.csv").write_text(
        "round,transport,mechanism,payload_bytes,cpu,native_ns,suite_ns\n1,pipe,pipe,64,0,-5,9\n")
    with pytest.raises(UsageError, match=r"native\.csv: native_ns must be positive"):
        read_native(tmp_path)


SUITE = """
[settings]
workers = 2
batches = 2
warmups = 0
batch_ms = 2.0

[experiments.latency]
transports = ["call", "pipe", "fifo"]
payload_bytes = [64]
"""


def run_with_reference(tmp_path: Path, env: dict[str, str]) -> tuple[Path, str]:
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--suite", str(suite), "--out", str(out),
         "--no-history", "--native-reference", "--native-rounds", "2"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200", **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


@needs_cc
def test_a_run_holds_its_transports_against_c(tmp_path):
    out, printed = run_with_reference(tmp_path, {})
    rounds = read_native(out)
    assert rounds is not None
    assert sorted(rounds.transport.unique()) == ["fifo", "pipe"]  # call has no C side
    assert list(rounds.groupby("transport").size()) == [2, 2]
    assert "Suite / native" in (out / "report.md").read_text()
    assert "Suite / native" in printed


def test_without_a_compiler_the_run_says_why(tmp_path):
    out, _ = run_with_reference(tmp_path, {"CC": "/nonexistent/cc"})
    assert not (out / "native.csv").exists()
    report = (out / "report.md").read_text()
    assert "Suite / native" in report and "cannot run" in report


def test_native_rounds_below_one_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--suite", "quick", "--native-reference",
         "--native-rounds", "0", "--out", str(tmp_path / "out"), "--no-history"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "ipcbench: error: --native-rounds must be at least 1"
    assert not (tmp_path / "out").exists()
