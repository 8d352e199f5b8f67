"""The command line as a user runs it: real runs, real processes, real files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import posix_ipc
import psutil
import pytest
import sysv_ipc

from harness.cleanup import stray_processes
from harness.ipcnames import SHM_DIR, journal_path, scratch_root
from servers.transports import sysv
from servers.transports.base import Kind

from .conftest import sysv_objects
from .helpers import TINY_SUITE, ipcbench, sigint_as_a_terminal_sends_it, write_suite

DESIGN_RESULT_COLUMNS = [
    "experiment", "transport", "placement", "payload_bytes", "k", "metric", "unit", "n",
    "median", "mean", "stdev", "p5", "p95", "p99", "ci_low", "ci_high",
    "ctx_switches_per_op", "cpu_ns_per_op",
]
RUN_FILES = ["results.csv", "samples.csv", "model.csv", "metadata.json", "pyperf.json",
             "report.md", "report.html", "chain_predictions.csv", "ring_beta.csv", "chain.png",
             "ratio_over_k.png", "latency.png", "latency_distribution.png", "payload.png",
             "reference.png"]


def leftovers(prefix: str = "ipcb-") -> list[str]:
    return [p.name for p in SHM_DIR.iterdir() if prefix in p.name]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    suite = write_suite(folder)
    out = folder / "out"
    done = ipcbench("run", "--suite", str(suite), "--out", str(out),
                    "--history", str(folder / "history.sqlite"))
    assert done.returncode == 0, done.stderr
    return out


def test_run_folder_has_every_file_and_column(tiny_run):
    assert sorted(p.name for p in tiny_run.iterdir()) == sorted(RUN_FILES)
    results = pd.read_csv(tiny_run / "results.csv")
    assert list(results.columns[: len(DESIGN_RESULT_COLUMNS)]) == DESIGN_RESULT_COLUMNS
    ok = results[results.status == "ok"]
    assert set(ok.metric) == {"round_trip", "message", "hop", "compute"}
    assert set(ok.unit) == {"ns"}
    assert (ok.n + ok.batches_disturbed == 2 * 2).all()  # workers x batches
    assert (ok.ci_low <= ok["median"]).all() and (ok["median"] <= ok.ci_high).all()


def test_samples_add_up_to_the_results(tiny_run):
    results = pd.read_csv(tiny_run / "results.csv")
    samples = pd.read_csv(tiny_run / "samples.csv")
    ok = results[results.status == "ok"]
    assert len(samples) == ok.n.sum() + ok.batches_disturbed.sum()
    samples = samples[~samples.disturbed]  # the statistics leave disturbed batches out
    keys = ["experiment", "transport", "placement", "payload_bytes", "k", "topology",
            "working_set", "metric"]
    medians = samples.groupby(keys).value.median().reset_index()
    joined = ok.merge(medians, on=keys)
    assert len(joined) == len(ok)
    assert (joined["median"] - joined["value"]).abs().max() < 1e-6


def test_switch_counts_follow_placement(tiny_run):
    """On one CPU every round trip must switch to the server and back; a call never does.

    Other load only adds switches (a preempted process), so the bounds hold on a busy
    machine: at least two on one CPU, and a spinning peer never blocks (voluntary)."""
    results = pd.read_csv(tiny_run / "results.csv")
    results = results[results.experiment == "latency"].set_index(
        ["experiment", "transport", "placement", "payload_bytes"])
    for transport in ("pipe", "mq", "shm", "uds"):
        assert results.loc[("latency", transport, "same-cpu", 64), "ctx_switches_per_op"] >= 1.99
    assert results.loc[("latency", "call", "same-cpu", 64), "ctx_switches_per_op"] < 0.01
    if len(os.sched_getaffinity(0)) >= 2:
        assert results.loc[("latency", "shm-spin", "cross-cpu", 64),
                           "ctx_voluntary_per_op"] < 0.5


def test_skipped_cases_carry_their_reason(tiny_run):
    results = pd.read_csv(tiny_run / "results.csv")
    skipped = results[results.status == "skipped"]
    assert set(skipped.transport) >= {"call", "shm-spin", "mq"}
    assert skipped.note.str.len().min() > 10
    report = (tiny_run / "report.md").read_text()
    assert "Cases not run" in report and "msgsize_max" in report


def test_model_has_ratio_and_copy_slope(tiny_run):
    model = pd.read_csv(tiny_run / "model.csv")
    ratios = model[model.parameter == "latency_ratio"]
    assert set(ratios.transport) >= {"pipe", "mq", "shm", "uds"}
    assert (ratios.value > 1).all()
    assert {"pipe", "shm"} <= set(model[model.parameter == "copy_ns_per_byte"].transport)


def test_pyperf_reads_the_run(tiny_run):
    for command in (["stats"], ["compare_to", "--table"]):
        files = [str(tiny_run / "pyperf.json")] * (2 if command[0] == "compare_to" else 1)
        done = subprocess.run([sys.executable, "-m", "pyperf", *command, *files],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "latency/pipe/same-cpu/64B/k1" in done.stdout


def test_report_renders_again(tiny_run):
    (tiny_run / "report.md").unlink()
    done = ipcbench("report", str(tiny_run))
    assert done.returncode == 0, done.stderr
    assert "T_mu/T_m" in (tiny_run / "report.md").read_text()
    assert "pipe" in done.stdout


def test_run_leaves_nothing_behind(tiny_run):
    # its own prefix: another run may be live on this machine
    prefix = json.loads((tiny_run / "metadata.json").read_text())["ipc_prefix"]
    assert leftovers(prefix) == []
    assert stray_processes(prefix, include_live_runs=True) == []
    assert not list(tiny_run.parent.glob(".*partial*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--suite", "nonesuch"], "no such file"),
        (["run", "--suite", "quick", "--only", "latency,warp"], "unknown experiment 'warp'"),
        (["run", "--suite", "quick", "--out", "/proc/ipcbench-out"], "cannot write there"),
        (["run", "--bogus"], "unrecognized arguments"),
        (["frobnicate"], "invalid choice"),
        (["report", "/nonexistent/run"], "no such run folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    done = ipcbench(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    done = ipcbench("run", "--suite", "quick", "--out", str(out))
    assert done.returncode == 2 and "not an empty folder" in done.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_report_of_a_folder_without_samples(tmp_path):
    (tmp_path / "metadata.json").write_text("{}")
    done = ipcbench("report", str(tmp_path))
    assert done.returncode == 2 and "missing results.csv, samples.csv" in done.stderr


SLOW_SUITE = TINY_SUITE.replace("batch_ms = 1.0", "batch_ms = 200.0").replace(
    "batches = 2", "batches = 20")


@pytest.fixture
def slow_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, str]]:
    """A run whose first worker has forked a server; killed at teardown whatever happens,
    so a failing test leaves no run (and, through PR_SET_PDEATHSIG, no worker) behind."""
    suite = write_suite(tmp_path, SLOW_SUITE)
    out = tmp_path / "out"
    runner = subprocess.Popen([sys.executable, "-m", "harness", "run", "--suite", str(suite),
                               "--out", str(out), "--no-history"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=sigint_as_a_terminal_sends_it)
    try:
        yield runner, out, _first_worker_run(runner)
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.communicate()


def _first_worker_run(runner: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(runner.pid).children(recursive=True):
            try:
                cmdline = child.cmdline()
                if "--run" in cmdline and child.children():
                    return cmdline[cmdline.index("--run") + 1]
            except psutil.Error:  # a worker that ended (a zombie) between listing and asking
                continue
        time.sleep(0.05)
    pytest.fail("no worker with a server appeared within 60 s")


def wait_gone(prefix: str, seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while (strays := stray_processes(prefix, include_live_runs=True)) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    return strays


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_run_cleans_up(tmp_path, slow_run, sig):
    runner, out, prefix = slow_run
    runner.send_signal(sig)
    _, err = runner.communicate(timeout=120)  # a busy machine: a bound, not a goal
    assert runner.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert wait_gone(prefix) == []
    assert leftovers(prefix) == []
    assert not journal_path(prefix).exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "tiny.toml"], "no half-written run folder"
    assert not out.exists()


def test_kill_9_then_cleanup_leaves_nothing(tmp_path, slow_run):
    runner, _out, prefix = slow_run
    runner.kill()
    runner.communicate(timeout=30)
    [stage] = tmp_path.glob(".out.partial-*")
    # Workers and servers die with their parent (PR_SET_PDEATHSIG).
    assert wait_gone(prefix) == []
    # What a SIGKILL can strand between create and unlink, planted by hand:
    shm = posix_ipc.SharedMemory(f"/{prefix}0-0-shm", posix_ipc.O_CREX, mode=0o600, size=4096)
    shm.close_fd()
    sem = posix_ipc.Semaphore(f"/{prefix}0-1-sem-c2s", posix_ipc.O_CREX, mode=0o600)
    sem.close()
    queue_name = f"/{prefix}0-2-mq-c2s"
    posix_ipc.MessageQueue(queue_name, posix_ipc.O_CREX, mode=0o600, max_messages=2,
                           max_message_size=64).close()
    # SysV objects under keys of journaled names, as a SIGKILLed sysv-mq or sysv-sem
    # link leaves them (they cannot be removed early):
    sysv_names = {Kind.SYSV_MSG: f"/{prefix}0-3-c2s", Kind.SYSV_SEM: f"/{prefix}0-4-s2c"}
    sysv_ipc.MessageQueue(sysv.key_of(sysv_names[Kind.SYSV_MSG]), sysv_ipc.IPC_CREX, 0o600)
    sysv_ipc.Semaphore(sysv.key_of(sysv_names[Kind.SYSV_SEM]), sysv_ipc.IPC_CREX, 0o600)
    journal_path(prefix).write_text(f"mq {queue_name}\n" + "".join(
        f"{kind} {name}\n" for kind, name in sysv_names.items()))
    assert len(sysv_objects(journal_path(prefix))) == 2
    # A probe's scratch folder (NameSource.scratch), as a SIGKILLed worker leaves it:
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}0-layers-", dir=scratch_root()))
    (folder / "device").write_bytes(b"x" * 4096)
    assert len(leftovers(prefix)) == 2
    done = ipcbench("cleanup")
    assert done.returncode == 0, done.stderr
    assert leftovers(prefix) == []
    with pytest.raises(posix_ipc.ExistentialError):
        posix_ipc.MessageQueue(queue_name)
    assert queue_name.lstrip("/") in done.stdout
    for kind, name in sysv_names.items():
        key = sysv.key_of(name)
        assert all(found.key != key for found in sysv.listed(kind)), f"{kind} {name} left"
    assert not journal_path(prefix).exists()
    assert not stage.exists(), "the unfinished run folder is removed too"
    assert not folder.exists(), "and a probe's scratch folder"


def test_a_second_run_into_a_busy_out_is_refused(tmp_path, slow_run):
    runner, out, _prefix = slow_run
    done = ipcbench("run", "--suite", str(tmp_path / "tiny.toml"), "--out", str(out),
                    "--no-history")
    assert done.returncode == 2, done.stderr
    assert f"run pid {runner.pid} is writing there" in done.stderr
    assert done.stderr.count("\n") == 1
    assert runner.poll() is None, "the first run goes on"
    assert len(list(tmp_path.glob(".out.partial-*"))) == 1


def test_run_folder_loads_back_to_the_same_results(tiny_run):
    from harness.results import RunData

    saved = pd.read_csv(tiny_run / "results.csv")
    again = RunData.load(tiny_run).results_frame()
    assert list(again.columns) == list(saved.columns)
    assert np.allclose(again["median"].fillna(-1), saved["median"].fillna(-1))
    assert list(again.status) == list(saved.status)


def test_model_has_every_parameter_the_cost_model_needs(tiny_run):
    model = pd.read_csv(tiny_run / "model.csv")
    for transport in ("pipe", "shm"):
        names = set(model[model.transport == transport].parameter)
        assert {"alpha", "beta", "C0", "beta_ring", "latency_ratio", "chain_max_rel_error",
                "chain_max_rel_error_extended", "chain_per_hop_seed"} <= names
    chain = pd.read_csv(tiny_run / "chain_predictions.csv")
    assert set(chain.k) == {1, 2, 3}
    assert (chain.messages_per_op == 2 * chain.k).all()
    assert (chain.seed_switches == 4 * chain.k).all()


def test_fit_recomputes_the_model_from_samples(tiny_run):
    before = (tiny_run / "model.csv").read_text()
    (tiny_run / "model.csv").unlink()
    (tiny_run / "chain.png").unlink()
    done = ipcbench("fit", str(tiny_run))
    assert done.returncode == 0, done.stderr
    assert (tiny_run / "model.csv").read_text() == before  # seeded bootstraps: same numbers
    assert (tiny_run / "chain.png").stat().st_size > 10_000
    assert "chain.png" in (tiny_run / "report.md").read_text()


@pytest.mark.parametrize("files", [[], ["metadata.json"]])
def test_fit_refuses_a_folder_without_samples(tmp_path, files):
    for name in files:
        (tmp_path / name).write_text("{}")
    done = ipcbench("fit", str(tmp_path / "run" if not files else tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("ipcbench: error:") and done.stderr.count("\n") == 1


def test_fit_refuses_samples_without_a_model(tmp_path, tiny_run):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny_run, folder)
    samples = pd.read_csv(folder / "samples.csv")
    samples[samples.experiment == "nothing"].to_csv(folder / "samples.csv", index=False)
    done = ipcbench("fit", str(folder))
    assert done.returncode == 2 and "no measured samples" in done.stderr


def test_run_is_appended_to_the_history(tiny_run):
    from harness import historydb

    table = historydb.series(historydb.target(tiny_run.parent / "history.sqlite"))
    assert set(table.run_id) == {tiny_run.name}
    assert "latency/pipe/same-cpu/64B/k1" in set(table.name)


def test_html_report_is_self_contained(tiny_run):
    page = (tiny_run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(list(tiny_run.glob("*.png"))) == 6
    assert "src='http" not in page and "<link" not in page
    assert "T_mu/T_m" in page and "machine_id" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)")
def test_html_report_renders_in_a_headless_browser(tiny_run, tmp_path):
    shot = tmp_path / "page.png"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1280,4000", f"--screenshot={shot}", (tiny_run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile2'}",
         "--dump-dom", (tiny_run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<img") == 5 and "Cost model" in dom
    from PIL import Image  # matplotlib depends on Pillow

    image = Image.open(shot).convert("L")
    assert len(image.getcolors(256)) > 20, "the page rendered blank"


@pytest.mark.parametrize("command", ["run", "ab", "compare", "fit", "report", "doctor", "history",
                                     "export", "baseline", "cleanup", "model"])
def test_every_command_explains_itself(command):
    done = ipcbench(command, "--help")
    assert done.returncode == 0 and "usage: ipcbench" in done.stdout, done.stderr


def test_a_sysv_key_held_before_the_run_is_left_alone(tmp_path):
    """A journaled name whose key was taken already (its create failed and was retried
    under another name) must not cost the key's holder its object."""
    from harness.cleanup import sweep
    from harness.ipcnames import stage_record
    from harness.names import new_run_prefix

    prefix = new_run_prefix()
    name = f"/{prefix}0-00000000-c2s"
    key = sysv.key_of(name)
    holder = sysv_ipc.MessageQueue(key, sysv_ipc.IPC_CREX, 0o600)  # made before the run
    record = stage_record(prefix)
    try:
        journal_path(prefix).write_text(f"{Kind.SYSV_MSG} {name}\n")
        record.write_text(json.dumps({"stage": str(tmp_path / f".out.partial-{os.getpid()}"),
                                      "pid": os.getpid(), "started": time.time() + 30}))
        sweep(prefix)
        assert any(found.key == key for found in sysv.listed(Kind.SYSV_MSG))
    finally:
        holder.remove()
        record.unlink(missing_ok=True)
        journal_path(prefix).unlink(missing_ok=True)
