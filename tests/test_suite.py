"""Suite files: built-ins load, bad ones get one clear error naming the problem."""

from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.suite import builtin_suites, load_suite

from .helpers import TINY_SUITE, write_suite


@pytest.mark.parametrize("name", ["quick", "default", "full"])
def test_builtin_suites_load_and_plan(name):
    suite = load_suite(name)
    plan = suite.plan()
    assert plan.runnable
    names = [c.name for c in plan.runnable]
    assert len(names) == len(set(names)), "cases must be unique"
    transports = {c.transport for c in plan.runnable}
    assert {"call", "pipe", "mq", "shm", "uds"} <= transports


def test_builtins_are_listed():
    assert {"quick", "default", "full"} <= set(builtin_suites())


def test_mq_sizes_over_the_limit_are_skipped_with_reason(tmp_path):
    suite = load_suite(str(write_suite(tmp_path, TINY_SUITE.replace("16384]", "16384, 65536]"))))
    skipped = {c.case.name: c.note for c in suite.plan().skipped}
    assert "payload/mq/same-cpu/65536B/k1" in skipped
    assert "msgsize_max" in skipped["payload/mq/same-cpu/65536B/k1"]
    assert "payload/pipe/same-cpu/65536B/k1" not in skipped


def test_only_selects_experiments(tmp_path):
    suite = load_suite(str(write_suite(tmp_path)), only=["payload"])
    assert {e.name for e, _ in suite.experiments} == {"payload"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[settings\nworkers = 2", "not valid TOML"),
        ("bogus = 1\n[experiments.latency]\ntransports=['call']", "unknown key 'bogus'"),
        ("[experiments.nope]\ntransports = ['pipe']", "unknown experiment 'nope'"),
        ("[experiments.latency]\ntransports = ['call', 'carrier-pigeon']", "carrier-pigeon"),
        ("[experiments.latency]\nplacements = ['moon']", "unknown placement 'moon'"),
        ("[experiments.latency]\npayload_bytes = [-1]", "must be >= 0"),
        ("[experiments.latency]\npayload_bytes = '64'", "non-empty list"),
        ("[experiments.latency]\ncolour = 'red'", "unknown key 'colour'"),
        ("[settings]\nworkers = 0\n[experiments.latency]", "workers must be between 1 and 1024"),
        ("[settings]\nworkers = 'many'\n[experiments.latency]", "expected a int"),
        ("description = 'empty'", "at least one"),
        ("[experiments.latency]\ntransports = ['pipe']", "must include 'call'"),
        ("[experiments.payload]\ntransports = ['mq']\npayload_bytes = [1000000000000]",
         "more than any listed transport carries"),
        # A list equal to the shared default is still the user's: checked, not replaced.
        ("[experiments.contention]\ntransports = ['call', 'pipe', 'mq', 'shm', 'uds']",
         "'pipe' is not a lock here"),
        ("[experiments.faults]\ntransports = ['call', 'pipe', 'mq', 'shm', 'uds']",
         "'call' cannot carry this experiment"),
        ("[experiments.footprint]\nmodes = ['default']\nservers = [1, 2]",
         "unknown mode 'default'"),
        # Each experiment's declared keys, types and bounds.
        ("[experiments.faults]\ncrash_rate = 0.0", "faults.crash_rate: must be > 0"),
        ("[experiments.footprint]\nservers = [0, 2]", "footprint.servers: must be >= 1"),
        ("[experiments.latency]\nworkers = 0", "latency.workers: must be >= 1"),
        ("[experiments.layers]\nfile_bytes = 'big'", "layers.file_bytes: expected a int"),
        ("[experiments.latency]\ntransports = ['all', 'pipe']", 'latency.transports: "all" '
         "stands alone"),
        ("[experiments.ring]\nmodes = ['x']", "unknown key 'modes' \\(accepted: workers, "
         "transports, placements, k, working_sets, message_bytes, sched_batch\\)"),
    ],
)
def test_bad_suites_raise_one_clear_error(tmp_path, text, message):
    path = write_suite(tmp_path, text)
    with pytest.raises(UsageError, match=message) as info:
        load_suite(str(path)).plan()
    assert "\n" not in str(info.value)


def test_unknown_suite_name():
    with pytest.raises(UsageError, match="no such file and no built-in suite"):
        load_suite("no-such-suite")


def test_every_experiment_declares_what_each_key_means():
    from dataclasses import MISSING, fields

    from harness.experiment import load_experiments

    for experiment in load_experiments().values():
        declared = fields(experiment.params_type)
        assert declared[0].name == "workers"
        for f in declared:
            assert f.metadata.get("meaning"), (experiment.name, f.name)
            assert f.default is not MISSING, (experiment.name, f.name)


def test_all_means_every_transport_that_applies(tmp_path):
    """A suite that writes transports = ["all"] picks up a transport the registry gains."""
    from servers.transports import TRANSPORTS

    tables = "\n".join(f"[experiments.{name}]\ntransports = ['all']\n{extra}" for name, extra in (
        ("latency", ""), ("ring", "k = [2]"), ("faults", ""), ("contention", ""),
        ("layers", ""), ("footprint", "servers = [1, 2]")))
    plan = load_suite(str(write_suite(tmp_path, tables))).plan()
    planned: dict[str, set[str]] = {}
    for case in [*plan.runnable, *(result.case for result in plan.skipped)]:
        planned.setdefault(case.experiment, set()).add(case.transport)
    assert planned["latency"] == set(TRANSPORTS)  # shm-spin skipped on one CPU, with why
    assert planned["ring"] == set(TRANSPORTS)  # call skipped: nothing crosses a process
    assert planned["faults"] == {"pipe", "uds"}
    assert planned["contention"] == {"shm", "call"}
    assert planned["layers"] == {"call", "pipe"}
    assert planned["footprint"] == set(TRANSPORTS) - {"shm-spin"}  # it spins: not same-cpu


def test_cases_two_tables_share_run_once(tmp_path):
    """Each amplification table needs its own call baseline: a case two tables list is
    planned once (it used to run twice and fail both times)."""
    suite = tmp_path / "two.toml"
    table = ('[[experiments.amplification]]\ntransports = ["call", "{}"]\ntopologies = '
             '["chain"]\nk = [1, 2]\npayload_bytes = [64]\n')
    suite.write_text(table.format("pipe") + table.format("fifo"))
    names = [case.name for case in load_suite(str(suite)).plan().runnable]
    assert len(names) == len(set(names))
    assert {n.split("/")[1] for n in names} == {"call", "pipe", "fifo"}
    assert sum(n.startswith("amplification/call/") for n in names) == 3  # k1, k2, C0
