"""compare, baseline, export and doctor on run folders built from known numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.compare import RunSamples, benjamini_hochberg, compare, welch
from harness.results import RunData

from .helpers import ipcbench

MACHINE = {"machine_id": "abc123def456", "cpu_model": "Test CPU", "cpu_count": 2,
           "kernel": "6.0", "virtualization": "none", "python": "3.11.7"}
CASES = [("latency", t, 64) for t in ("pipe", "mq", "shm", "uds")] + \
        [("payload", t, s) for t in ("pipe", "shm") for s in (0, 1024, 16384)]


def make_run(folder: Path, seed: int, slower: dict[str, float] | None = None,
             machine: dict | None = None, workers: int = 8, noise: float = 0.01,
             host: float = 1.0, host_noise: float = 0.0) -> Path:
    """A run folder whose samples come from known distributions, with some cases scaled.

    ``host`` scales every value and the reference beside it (a slower spell of the
    machine); ``host_noise`` makes each worker's spell differ, reference included."""
    rng = np.random.default_rng(seed)
    rows = []
    for experiment, transport, size in CASES:
        center = 6000 + 0.3 * size + 1000 * CASES.index((experiment, transport, size))
        center *= (slower or {}).get(transport, 1.0)
        for worker in range(workers):
            offset = rng.normal(0, noise)
            spell = host * (1 + rng.normal(0, host_noise))
            for batch in range(3):
                rows.append({"experiment": experiment, "transport": transport,
                             "placement": "same-cpu", "payload_bytes": size, "k": 1,
                             "metric": "round_trip", "topology": "echo", "working_set": 0,
                             "sched_batch": False, "workload": "echo", "iterations": 0,
                             "worker": worker, "batch": batch, "loops": 1000,
                             "value": spell * center * (1 + offset + rng.normal(0, noise / 3)),
                             "ref_ns": spell * 600 * (1 + rng.normal(0, noise / 3)),
                             "disturbed": False,
                             "ctx_switches_per_op": 2.0, "cpu_ns_per_op": center,
                             "ctx_voluntary_per_op": 1.0, "ctx_involuntary_per_op": 1.0,
                             "system_ctxt_per_op": 2.0, "messages_per_op": 2.0})
    folder.mkdir(parents=True)
    samples = pd.DataFrame(rows)
    samples.to_csv(folder / "samples.csv", index=False)
    (folder / "metadata.json").write_text(json.dumps({"machine": machine or MACHINE}))
    results = samples.groupby(["experiment", "transport", "placement", "payload_bytes", "k",
                               "metric", "topology", "working_set", "sched_batch", "workload",
                               "iterations"]).value.median().reset_index(name="median")
    results["status"], results["note"] = "ok", ""
    results.to_csv(folder / "results.csv", index=False)
    return folder


def test_benjamini_hochberg_adjusts_in_order():
    adjusted = benjamini_hochberg([0.01, 0.04, 0.03, float("nan")])
    assert adjusted[:3] == pytest.approx([0.03, 0.04, 0.04]) and np.isnan(adjusted[3])


def test_detectable_change_follows_the_noise():
    """Welch on log worker medians: the detectable change is (t_a + t_power) * SE."""
    from scipy import stats

    rng = np.random.default_rng(3)
    base, new = np.exp(rng.normal(0, 0.02, 8)), np.exp(rng.normal(0, 0.02, 8))
    diff = welch(base, new)
    se = np.sqrt(np.log(base).var(ddof=1) / 8 + np.log(new).var(ddof=1) / 8)
    assert diff.se == pytest.approx(se)
    expected = np.expm1((stats.t.ppf(1 - 0.025, diff.df) + stats.t.ppf(0.8, diff.df)) * se)
    assert diff.detectable(0.05) == pytest.approx(expected)
    assert welch(base * 4, new * 4).detectable(0.05) == pytest.approx(diff.detectable(0.05))


def test_false_alarms_stay_within_the_fdr():
    """A/A comparisons of 40 cases, 200 times: any case flagged in at most ~5% of them."""
    rng = np.random.default_rng(11)

    def run(label: str) -> RunSamples:
        return RunSamples(label, MACHINE, {f"c{i}": [rng.lognormal(0, 0.05, 3) for _ in range(8)]
                                           for i in range(40)})

    alarms = sum(compare(run("a"), run("b"), threshold=1e-9).regressed for _ in range(200))
    assert alarms <= 20


def test_a_real_change_is_caught_at_the_noise_it_can_see():
    rng = np.random.default_rng(12)

    def run(label: str, scale: float, noise: float) -> RunSamples:
        return RunSamples(label, MACHINE, {"quiet": [scale * rng.lognormal(0, 0.01, 3)
                                                     for _ in range(8)],
                                           "noisy": [scale * rng.lognormal(0, noise) *
                                                     rng.lognormal(0, 0.01, 3)
                                                     for _ in range(8)]})

    verdicts = {v.case: v for v in compare(run("a", 1.0, 0.3), run("b", 1.1, 0.3)).verdicts}
    assert verdicts["quiet"].verdict == "slower" and verdicts["quiet"].detectable < 0.05
    assert verdicts["noisy"].verdict == "underpowered" and verdicts["noisy"].detectable > 0.1


def test_same_code_compares_quietly(tmp_path):
    base, new = make_run(tmp_path / "a", 1), make_run(tmp_path / "b", 2)
    done = ipcbench("compare", str(base), str(new))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 slower" in done.stdout


@pytest.mark.parametrize("factor", [1.25, 1.10])
def test_slower_pipe_fails_and_is_named(tmp_path, factor):
    base = make_run(tmp_path / "a", 1)
    new = make_run(tmp_path / "b", 2, slower={"pipe": factor})
    done = ipcbench("compare", str(base), str(new))
    assert done.returncode == 1
    slower = [line for line in done.stdout.splitlines() if "slower" in line and "/" in line]
    assert len(slower) == 4 and all("/pipe/" in line for line in slower)


def test_faster_is_not_a_failure(tmp_path):
    base = make_run(tmp_path / "a", 1)
    new = make_run(tmp_path / "b", 2, slower={"shm": 0.8})
    done = ipcbench("compare", str(base), str(new))
    assert done.returncode == 0 and "4 faster" in done.stdout


def test_too_few_workers_is_underpowered(tmp_path):
    """Two noisy workers a side cannot see 5%: that is said, and not called "same"."""
    base = make_run(tmp_path / "a", 1, workers=2, noise=0.05)
    new = make_run(tmp_path / "b", 2, workers=2, noise=0.05)
    done = ipcbench("compare", str(base), str(new))
    assert done.returncode == 0 and "underpowered" in done.stdout
    assert "0 of 10 cases could have caught a change of 5%" in done.stdout
    strict = ipcbench("compare", "--require-power", str(base), str(new))
    assert strict.returncode == 1 and "--require-power" in strict.stdout


def test_normalize_sees_through_a_slower_host(tmp_path):
    """The whole machine 20% slower in the new run (reference included): a plain
    compare calls that a regression, a normalized one does not; a real 25% slowdown
    of pipes on the slower host is still caught, and only pipes."""
    base = make_run(tmp_path / "a", 1, host_noise=0.03)
    new = make_run(tmp_path / "b", 2, host=1.2, host_noise=0.03)
    assert ipcbench("compare", str(base), str(new)).returncode == 1
    done = ipcbench("compare", "--normalize", str(base), str(new))
    assert done.returncode == 0, done.stdout
    assert "reference moved +20" in done.stdout
    slowed = make_run(tmp_path / "c", 3, host=1.2, host_noise=0.03, slower={"pipe": 1.25})
    done = ipcbench("compare", "--normalize", str(base), str(slowed))
    slower = [line for line in done.stdout.splitlines() if "slower" in line and "/" in line]
    assert done.returncode == 1 and len(slower) == 4
    assert all("/pipe/" in line for line in slower)


def test_disturbed_batches_stay_out_unless_kept(tmp_path):
    base = make_run(tmp_path / "a", 1)
    new = make_run(tmp_path / "b", 2)
    samples = pd.read_csv(new / "samples.csv")
    hit = samples.transport == "uds"
    samples.loc[hit, "value"] *= 3
    samples.loc[hit, "disturbed"] = True
    samples.loc[hit & (samples.batch == 0), "disturbed"] = False  # one clean batch a worker
    samples.loc[hit & (samples.batch == 0), "value"] /= 3
    samples.to_csv(new / "samples.csv", index=False)
    assert ipcbench("compare", str(base), str(new)).returncode == 0
    kept = ipcbench("compare", "--keep-disturbed", str(base), str(new))
    assert kept.returncode == 1 and "/uds/" in kept.stdout


def test_pyperf_files_compare_too(tmp_path):
    base = make_run(tmp_path / "a", 1)
    new = make_run(tmp_path / "b", 2, slower={"pipe": 1.25})
    for run in (base, new):
        RunData.load(run).save(run)
    done = ipcbench("compare", str(base / "pyperf.json"), str(new / "pyperf.json"))
    assert done.returncode == 1 and "/pipe/" in done.stdout


def test_different_machines_need_force(tmp_path):
    other = {**MACHINE, "machine_id": "0123456789ab", "kernel": "6.18"}
    base, new = make_run(tmp_path / "a", 1), make_run(tmp_path / "b", 2, machine=other)
    done = ipcbench("compare", str(base), str(new))
    assert done.returncode == 2 and "kernel: 6.0 vs 6.18" in done.stderr
    assert done.stderr.count("\n") == 1
    assert ipcbench("compare", "--force", str(base), str(new)).returncode == 0


@pytest.mark.parametrize("damage", ["missing", "corrupt", "no-samples"])
def test_bad_inputs_exit_2(tmp_path, damage):
    base = make_run(tmp_path / "a", 1)
    new = tmp_path / "b"
    if damage != "missing":
        new = make_run(new, 2)
        if damage == "corrupt":
            (new / "metadata.json").write_text("{not json")
        else:
            (new / "samples.csv").unlink()
    done = ipcbench("compare", str(base), str(new))
    assert done.returncode == 2 and done.stderr.startswith("ipcbench: error:")


def test_baseline_save_and_compare_against_it(tmp_path):
    run = make_run(tmp_path / "run", 1)
    done = ipcbench("baseline", "save", str(run), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = tmp_path / "results" / "baselines" / MACHINE["machine_id"]
    assert (saved / "samples.csv").is_file()
    new = make_run(tmp_path / "new", 2, slower={"mq": 1.3})
    done = ipcbench("compare", "--baseline", str(new), cwd=tmp_path)
    assert done.returncode == 1 and "/mq/" in done.stdout


def test_compare_baseline_without_one(tmp_path):
    new = make_run(tmp_path / "new", 2)
    done = ipcbench("compare", "--baseline", str(new), cwd=tmp_path)
    assert done.returncode == 2 and "no baseline for machine" in done.stderr


def test_export_merges_runs(tmp_path):
    a, b = make_run(tmp_path / "a", 1), make_run(tmp_path / "b", 2)
    out = tmp_path / "all.csv"
    done = ipcbench("export", str(a), str(b), "--out", str(out))
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out)
    assert list(table.columns[:3]) == ["run_id", "started", "machine_id"]
    assert len(table) == 2 * len(CASES)
    assert set(table.run_id) == {"a", "b"} and set(table.machine_id) == {MACHINE["machine_id"]}


def test_export_to_an_unwritable_place(tmp_path):
    a = make_run(tmp_path / "a", 1)
    done = ipcbench("export", str(a), "--out", "/proc/ipcbench.csv")
    assert done.returncode == 2 and "cannot write there" in done.stderr


def test_doctor_flags_leftovers(dead_runs_object):
    done = ipcbench("doctor", "--seconds", "0")
    assert done.returncode == 1
    assert "leftovers" in done.stdout and "ipcbench cleanup" in done.stdout
    assert "message queues" in done.stdout


def test_a_case_that_fails_in_new_is_a_failure(tmp_path):
    base = make_run(tmp_path / "a", 1)
    new = make_run(tmp_path / "b", 2)
    samples = pd.read_csv(new / "samples.csv")
    samples[samples.transport != "mq"].to_csv(new / "samples.csv", index=False)
    results = pd.read_csv(new / "results.csv")
    results["note"] = results["note"].astype(object)
    results.loc[results.transport == "mq", ["status", "note"]] = ["error", "server died"]
    results.to_csv(new / "results.csv", index=False)
    done = ipcbench("compare", str(base), str(new))
    assert done.returncode == 1
    assert "failed" in done.stdout and "server died" in done.stdout


def test_many_unchanged_cases_do_not_hide_one_change():
    """400 unchanged 3-worker cases beside one slowed 8-worker case leave it significant,
    and none of them is called slower."""
    rng = np.random.default_rng(5)

    def run(label: str, scale: float) -> RunSamples:
        values = {"main": [rng.normal(1000 * scale, 5, 3) for _ in range(8)]}
        values |= {f"probe{i}": [rng.normal(500, 5, 1) for _ in range(3)] for i in range(400)}
        return RunSamples(label, MACHINE, values)

    verdicts = {v.case: v for v in compare(run("base", 1.0), run("new", 1.2)).verdicts}
    assert verdicts["main"].verdict == "slower"
    assert {verdicts[f"probe{i}"].verdict for i in range(400)} <= {"same", "underpowered"}


def test_doctor_measures_the_noise_floor():
    done = ipcbench("doctor", "--seconds", "1")
    assert done.returncode in (0, 1), done.stderr  # 1: something on this machine needs fixing
    for topic in ("noise: host", "noise: jitter", "noise: quick suite", "noise: default suite"):
        assert topic in done.stdout
    assert "detectable now" in done.stdout and "over the reference" in done.stdout


@pytest.mark.parametrize("seconds", ["-1", "nan", "4000", "soon"])
def test_doctor_refuses_a_bad_duration(seconds):
    done = ipcbench("doctor", "--seconds", seconds)
    assert done.returncode == 2 and done.stderr.count("\n") == 1


def test_values_without_spread_are_not_evidence():
    """Page tables come in whole pages: three workers a side all at 160 KiB against all at
    168 KiB is no test (the next worker may land either way); equal ones are the same."""
    base = RunSamples("a", MACHINE, {"pte": [np.array([163840.0])] * 3,
                                     "same": [np.array([4096.0])] * 3},
                      units={"pte": "bytes", "same": "bytes"})
    new = RunSamples("b", MACHINE, {"pte": [np.array([172032.0])] * 3,
                                    "same": [np.array([4096.0])] * 3})
    for pair in (False, True):
        verdicts = {v.case: v for v in compare(base, new, pair=pair).verdicts}
        assert verdicts["pte"].verdict == "underpowered" and "no spread" in verdicts["pte"].reason
        assert verdicts["same"].verdict == "same"


def transport_runs(rng: np.random.Generator, pipe_scale: float, spells: np.ndarray | None = None
                   ) -> RunSamples:
    """16 timed cases each of pipe, mq and shm: 8 workers of 3 batches, with 20% noise
    between workers that no single case can see through (and a host spell per pass)."""
    values = {}
    for transport, scale in (("pipe", pipe_scale), ("mq", 1.0), ("shm", 1.0)):
        for i in range(16):
            level = 1000.0 * (i + 1)
            values[f"payload/{transport}/same-cpu/{i}B/k1"] = [
                scale * level * (1 if spells is None else spells[w]) * rng.lognormal(0, 0.2)
                * rng.lognormal(0, 0.02, 3) for w in range(8)]
    return RunSamples("run", MACHINE, values, gate=frozenset(values))


def test_a_transport_wide_change_is_caught_where_no_case_alone_can():
    rng = np.random.default_rng(21)
    result = compare(transport_runs(rng, 1.0), transport_runs(rng, 1.10))
    families = {v.case.split(":")[0]: v for v in result.families}
    assert families["pipe"].verdict == "slower" and result.regressed
    assert families["pipe"].case == "pipe: 16 timed cases (geometric mean)"
    assert {families["mq"].verdict, families["shm"].verdict} <= {"same", "underpowered"}
    cases = [v for v in result.verdicts if "/pipe/" in v.case]
    assert sum(v.verdict == "underpowered" for v in cases) >= 12  # alone, most see nothing


def test_transport_families_keep_quiet_when_nothing_changed():
    """100 A/A comparisons: Benjamini-Hochberg over the transports keeps the chance of
    any false alarm near its 5%."""
    rng = np.random.default_rng(22)
    alarms = sum(any(v.verdict == "slower" for v in compare(
        transport_runs(rng, 1.0), transport_runs(rng, 1.0), threshold=1e-9).families)
        for _ in range(100))
    assert alarms <= 12


def test_paired_families_see_through_the_hosts_spells():
    """ab: each pass's pair shares a host spell of +-30%; paired, the family finds a 15%
    change that the same workers compared as two independent runs cannot see."""
    rng = np.random.default_rng(23)
    spells = rng.lognormal(0, 0.3, 8)
    base, new = transport_runs(rng, 1.0, spells), transport_runs(rng, 1.15, spells)
    paired_pipe = {v.case.split(":")[0]: v for v in compare(base, new, pair=True).families}
    apart = {v.case.split(":")[0]: v for v in compare(base, new).families}
    assert paired_pipe["pipe"].verdict == "slower"
    assert paired_pipe["pipe"].ratio == pytest.approx(1.15, abs=0.04)
    assert apart["pipe"].verdict == "underpowered"


def test_gate_check_counts_false_alarms_and_catches(tmp_path):
    runs = [make_run(tmp_path / f"r{i}", i) for i in range(3)]
    script = Path(__file__).parents[1] / "scripts" / "gate_check.py"
    done = subprocess.run([sys.executable, str(script), *map(str, runs), "--factor", "1.25"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "plain: A/A pairs with anything slower: 0 of 3" in done.stdout
    assert "plain: pipe x1.25 caught (its gate row slower): 3 of 3" in done.stdout
    assert "--normalize: pipe x1.25 caught (its gate row slower): 3 of 3" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r0", "r1", "r2"]  # copies gone


def test_a_hopeless_case_is_undetectable_not_a_crash():
    """Two workers a side, far apart, at a strict level: the t quantile explodes."""
    diff = welch(np.array([1.0, 1e6]), np.array([2.0, 3e6]))
    assert diff is not None and diff.detectable(1e-9) == float("inf")
