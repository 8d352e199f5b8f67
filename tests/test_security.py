"""What another user on the machine can plant does not steer the harness (S1..S8).

The run prefix is public (every worker's argv, metadata.json), so names alone must
decide nothing. Planted records live in a state folder of the test's own
(XDG_RUNTIME_DIR); a second uid (65534, nobody) needs root and is skipped without.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import posix_ipc
import psutil
import pytest

from harness import baseline, cleanup
from harness.cleanup import kill_strays, runner_alive, stray_processes, sweep
from harness.errors import UsageError
from harness.ipcnames import (
    SHM_DIR,
    journal_path,
    read_stage_record,
    scratch_root,
    stage_record,
    state_dir,
    write_stage_record,
)
from harness.names import PREFIX, NameSource
from servers.transports.base import CREATE_ATTEMPTS, create_new
from servers.transports.mq import MqTransport
from servers.transports.shm import ShmTransport

from .helpers import ipcbench

NOBODY = 65534
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to make files and processes "
                                "of a second uid (65534)")


def dead_run() -> str:
    """A run prefix whose runner pid no process can have (above pid_max)."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return f"{PREFIX}{pid_max + 1}-{os.urandom(3).hex()}-"


def as_nobody(action: Callable[[], object]) -> None:
    """Run ``action`` in a forked child as uid and gid 65534; fail if it fails."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child as uid 65534 failed"


def one_line_usage_error(call: Callable[[], object]) -> str:
    with pytest.raises(UsageError) as caught:
        call()
    message = str(caught.value)
    assert message and "\n" not in message
    return message


def victim_file(folder: Path, text: str = "precious") -> Path:
    path = folder / "victim.txt"
    path.write_text(text)
    return path


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The state folder, private to this test."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return state_dir()


@pytest.fixture
def private_sweep(state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  ) -> tuple[Path, Path]:
    """Stand-ins for /dev/shm and the temp dir, so that sweeps of every gone run (no
    prefix) see only what the test planted, not other runs on this machine."""
    shm, scratch = tmp_path / "shm", tmp_path / "scratch"
    shm.mkdir()
    scratch.mkdir()
    monkeypatch.setattr(cleanup, "SHM_DIR", shm)
    monkeypatch.setattr(cleanup, "MQUEUE_DIR", tmp_path / "no-mqueue")
    monkeypatch.setattr(cleanup, "scratch_root", lambda: scratch)
    return shm, scratch


@pytest.fixture
def made() -> Iterator[list[Path]]:
    """Paths outside tmp_path that a test makes (in /dev/shm, /tmp): removed whatever
    happens."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@pytest.fixture
def queues() -> Iterator[list[str]]:
    """Message queue names a test makes: unlinked whatever happens."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            posix_ipc.unlink_message_queue(name)
        except posix_ipc.ExistentialError:
            pass


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts: killed and reaped whatever happens."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()
        if proc.stdin:
            proc.stdin.close()


def make_queue(name: str) -> None:
    posix_ipc.MessageQueue(name, posix_ipc.O_CREX, mode=0o600, max_messages=1,
                           max_message_size=8).close()


def queue_exists(name: str) -> bool:
    try:
        posix_ipc.MessageQueue(name).close()
    except posix_ipc.ExistentialError:
        return False
    return True


def shm_file(name: str, made: list[Path], owner: int | None = None) -> Path:
    path = SHM_DIR / name
    made.append(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    if owner is not None:
        os.chown(path, owner, owner)
    return path


# ---- S1: the state folder ----------------------------------------------------------


def test_state_dir_is_made_ours_alone(state):
    info = os.lstat(state)
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
    assert stat.S_IMODE(info.st_mode) & 0o077 == 0


def test_state_dir_symlink_is_refused(tmp_path, monkeypatch):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (runtime / "ipcbench").symlink_to(elsewhere)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert "state folder" in one_line_usage_error(state_dir)
    assert "state folder" in one_line_usage_error(lambda: journal_path(dead_run()))
    assert list(elsewhere.iterdir()) == []


def test_state_dir_writable_by_others_is_refused(tmp_path, monkeypatch):
    runtime = tmp_path / "runtime"
    (runtime / "ipcbench").mkdir(parents=True)
    (runtime / "ipcbench").chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    one_line_usage_error(state_dir)


@needs_root
def test_state_dir_of_another_user_is_refused(tmp_path, monkeypatch):
    runtime = tmp_path / "runtime"
    (runtime / "ipcbench").mkdir(parents=True, mode=0o700)
    os.chown(runtime / "ipcbench", NOBODY, NOBODY)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert f"owned by uid {os.geteuid()}" in one_line_usage_error(state_dir)


# ---- S2: the journal ---------------------------------------------------------------


def test_journal_is_a_private_regular_file(state):
    journal = state / "run-names"
    name = NameSource(dead_run(), journal)("shm")
    assert journal.read_text() == f"shm {name}\n"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600


def test_journal_symlink_is_not_followed(state, tmp_path):
    victim = victim_file(tmp_path)
    journal = state / "run-names"
    journal.symlink_to(victim)
    one_line_usage_error(lambda: NameSource(dead_run(), journal)("shm"))
    assert victim.read_text() == "precious"


@needs_root
def test_journal_of_another_user_is_refused(state):
    journal = state / "run-names"
    journal.write_text("")
    os.chown(journal, NOBODY, NOBODY)
    assert "not a regular file owned" in one_line_usage_error(
        lambda: NameSource(dead_run(), journal)("shm"))
    assert journal.read_text() == ""


# ---- S3: the stage record ----------------------------------------------------------


def test_stage_record_is_new_private_and_notes_the_runner(state, tmp_path):
    record = stage_record(dead_run())
    write_stage_record(record, tmp_path / ".out.partial-1")
    assert stat.S_IMODE(os.lstat(record).st_mode) == 0o600
    noted = read_stage_record(record)
    assert noted is not None and noted.stage == (tmp_path / ".out.partial-1").resolve()
    assert noted.pid == os.getpid()
    assert noted.started == pytest.approx(psutil.Process().create_time())


@pytest.mark.parametrize("planted", ["symlink", "file"])
def test_stage_record_never_overwrites(state, tmp_path, planted):
    victim = victim_file(tmp_path)
    record = stage_record(dead_run())
    if planted == "symlink":
        record.symlink_to(victim)
    else:
        record.write_text("precious")
    one_line_usage_error(lambda: write_stage_record(record, tmp_path / ".out.partial-1"))
    assert victim.read_text() == "precious"
    assert record.read_text() == "precious"


# ---- S4: records cannot steer deletions --------------------------------------------


def plant_record(record: Path, stage: Path) -> None:
    pid = int(record.name.removeprefix(PREFIX).split("-")[0])
    record.write_text(json.dumps({"stage": str(stage), "pid": pid, "started": 0.0}))


def stage_name(run: str) -> str:
    return f".out.partial-{run.removeprefix(PREFIX).split('-')[0]}"


def test_a_sound_stage_record_still_removes_its_folder(private_sweep, tmp_path):
    run = dead_run()
    stage = tmp_path / stage_name(run)
    (stage / "deep").mkdir(parents=True)
    record = stage_record(run)
    plant_record(record, stage)
    assert str(stage) in sweep(dry_run=True).removed and stage.exists()
    assert str(stage) in sweep().removed
    assert not stage.exists() and not record.exists()


def test_stage_record_symlink_is_ignored(private_sweep, tmp_path):
    run = dead_run()
    stage = tmp_path / stage_name(run)
    stage.mkdir()
    real = tmp_path / "record.json"
    real.write_text(json.dumps({"stage": str(stage)}))
    stage_record(run).symlink_to(real)
    assert str(stage) not in sweep().removed
    assert stage.is_dir() and real.exists()


@pytest.mark.parametrize("how", ["not-a-stage-name", "symlink-on-the-way", "dot-dot",
                                 "stage-is-symlink", "relative"])
def test_stage_record_cannot_name_other_folders(private_sweep, tmp_path, how):
    run = dead_run()
    victim = tmp_path / "victims" / stage_name(run)
    victim.mkdir(parents=True)
    (victim / "keep").write_text("precious")
    stage = {
        "not-a-stage-name": tmp_path / "victims",
        "symlink-on-the-way": tmp_path / "link" / stage_name(run),
        "dot-dot": tmp_path / "victims" / "x" / ".." / stage_name(run),
        "stage-is-symlink": tmp_path / "other" / stage_name(run),
        "relative": Path("victims") / stage_name(run),
    }[how]
    (tmp_path / "link").symlink_to(tmp_path / "victims")
    (tmp_path / "victims" / "x").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / stage_name(run)).symlink_to(victim)
    plant_record(stage_record(run), stage)
    report = sweep()
    assert (victim / "keep").read_text() == "precious"
    assert not any(str(tmp_path) in item for item in report.removed)


@needs_root
def test_stage_folder_of_another_user_is_kept(private_sweep, tmp_path):
    run = dead_run()
    stage = tmp_path / stage_name(run)
    stage.mkdir()
    os.chown(stage, NOBODY, NOBODY)
    plant_record(stage_record(run), stage)
    assert str(stage) not in sweep().removed
    assert stage.is_dir()


def test_journal_speaks_only_for_its_own_runs_queues(state, queues):
    run, other = dead_run(), dead_run()
    theirs = f"/{other}0-0-ab-mq-c2s"
    queues.append(theirs)
    make_queue(theirs)
    journal_path(run).write_text(f"mq {theirs}\n")
    report = sweep(run)
    assert queue_exists(theirs) and not journal_path(run).exists()
    assert f"mq:{theirs}" not in report.removed


def test_journal_names_only_what_it_declares(state, queues):
    """Cleanup acts on a journal entry's declared kind: a queue named in a line without
    a kind (other than an older version's queue tags) or with an unknown one stays."""
    run = dead_run()
    plain, unknown, declared = (f"/{run}0-{i}-ab-mq-other" for i in range(3))
    queues += [plain, unknown, declared]
    for name in (plain, unknown, declared):
        make_queue(name)
    journal_path(run).write_text(f"{plain}\nfifo {unknown}\nmq {declared}\n")
    report = sweep(run)
    assert queue_exists(plain) and queue_exists(unknown)
    assert not queue_exists(declared) and f"mq:{declared}" in report.removed


def test_an_older_versions_journal_still_cleans_its_queues(state, queues):
    """Journals from before kinds were recorded name a queue by its tag alone."""
    run = dead_run()
    queue = f"/{run}0-0-ab-mq-c2s"
    queues.append(queue)
    make_queue(queue)
    journal_path(run).write_text(f"{queue}\n")
    report = sweep(run)
    assert not queue_exists(queue) and f"mq:{queue}" in report.removed


def test_a_name_of_an_unknown_kind_is_refused(state):
    with pytest.raises(ValueError, match="unknown IPC object kind"):
        NameSource(dead_run())("fifo")


def test_journal_symlink_is_ignored(state, tmp_path, queues):
    run = dead_run()
    mine = f"/{run}0-0-ab-mq-c2s"
    queues.append(mine)
    make_queue(mine)
    target = tmp_path / "names.txt"
    target.write_text(f"mq {mine}\n")
    journal_path(run).symlink_to(target)
    sweep(run)
    assert queue_exists(mine) and target.exists()


@needs_root
def test_queue_of_another_user_is_kept(state, queues):
    run = dead_run()
    theirs, mine = f"/{run}0-0-ab-mq-c2s", f"/{run}0-1-cd-mq-c2s"
    queues += [theirs, mine]
    as_nobody(lambda: make_queue(theirs))
    make_queue(mine)
    journal_path(run).write_text(f"mq {theirs}\nmq {mine}\n")
    report = sweep(run)
    assert queue_exists(theirs), "another user's queue was unlinked"
    assert not queue_exists(mine) and f"mq:{mine}" in report.removed


# ---- S5: objects and scratch folders are checked, not just named ------------------


@needs_root
def test_shm_object_of_another_user_is_kept(state, made):
    run = dead_run()
    theirs = shm_file(f"{run}0-0-ab-shm", made, owner=NOBODY)
    mine = shm_file(f"{run}0-1-cd-shm", made)
    report = sweep(run)
    assert theirs.exists() and str(theirs) not in report.removed
    assert not mine.exists() and str(mine) in report.removed


def test_shm_symlink_is_not_followed(state, tmp_path, made):
    run = dead_run()
    victim = victim_file(tmp_path)
    link = SHM_DIR / f"{run}0-0-ab-shm"
    made.append(link)
    link.symlink_to(victim)
    sweep(run)
    assert victim.read_text() == "precious"


@needs_root
def test_scratch_folder_of_another_user_is_kept(state, made):
    run = dead_run()
    theirs = scratch_root() / f"{run}0-layers-theirs"
    made.append(theirs)
    theirs.mkdir()
    (theirs / "keep").write_text("precious")
    os.chown(theirs, NOBODY, NOBODY)
    mine = scratch_root() / f"{run}0-layers-mine"
    made.append(mine)
    mine.mkdir()
    report = sweep(run)
    assert (theirs / "keep").exists() and str(theirs) not in report.removed
    assert not mine.exists()


def test_scratch_symlink_is_not_followed(state, tmp_path, made):
    run = dead_run()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    link = scratch_root() / f"{run}0-layers-link"
    made.append(link)
    link.symlink_to(victim)
    sweep(run)
    assert (victim / "keep").read_text() == "precious"


# ---- S6: processes are killed only if they are ours and really workers -------------


def worker_argv(run: str) -> list[str]:
    return [sys.executable, "-I", "-m", "harness.worker", "--run", run]


def start(argv: list[str], procs: list[subprocess.Popen[bytes]], as_nobody: bool = False,
          ) -> psutil.Process:
    """A process blocked reading its stdin (a worker waits there for its task)."""
    # setpriv, not Popen(user=): this Python lives under /root, which uid 65534 cannot
    # read, and setpriv keeps the capabilities that let the exec through.
    setpriv = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
    proc = subprocess.Popen([*setpriv, *argv] if as_nobody else argv, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(proc)
    found = psutil.Process(proc.pid)
    # Popen returns once its own exec is done; setpriv's exec of Python follows it. A
    # bound for a busy machine, not a pace: the loop ends as soon as the exec is done.
    deadline = time.monotonic() + 60
    while found.cmdline() != argv and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert found.cmdline() == argv
    return found


def test_a_command_line_that_merely_mentions_the_worker_is_not_killed(state, procs):
    run = dead_run()
    argv = [sys.executable, "-c", "import sys; sys.stdin.read()", "harness.worker", "--run", run]
    proc = start(argv, procs)
    assert proc.pid not in stray_processes(run)
    assert kill_strays(run) == [] and proc.is_running()


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_worker_of_another_user_is_not_killed(state, procs):
    run = dead_run()
    theirs = start(worker_argv(run), procs, as_nobody=True)
    assert theirs.uids().real == NOBODY
    mine = start(worker_argv(run), procs)
    assert stray_processes(run) == [mine.pid]
    dry = cleanup.cleanup(run, dry_run=True)
    assert dry.killed == [mine.pid] and mine.is_running()
    assert kill_strays(run) == [mine.pid]
    assert theirs.is_running() and theirs.status() != psutil.STATUS_ZOMBIE
    assert not mine.is_running() or mine.status() == psutil.STATUS_ZOMBIE


# ---- S7: names cannot be guessed, and a squatted name is retried -------------------


def test_names_have_a_random_part_that_is_not_in_argv():
    run = dead_run()
    first, second = NameSource(run)("shm"), NameSource(run)("shm")
    assert first != second
    assert first.startswith(f"/{run}0-") and first.endswith("-shm")
    assert len(first.removeprefix(f"/{run}0-").removesuffix("-shm")) == 8  # 4 random bytes


def squatting(name: str, source: NameSource) -> Callable[[str, str], str]:
    """A name source whose first name is ``name`` (taken by someone else)."""
    handed = []

    def names(kind: str, tag: str) -> str:
        handed.append(tag)
        return name if len(handed) == 1 else source(kind, tag)

    return names


def test_squatted_shm_name_is_retried(made):
    run = dead_run()
    squatted = shm_file(f"{run}0-0-ab-shm", made, owner=NOBODY if ROOT else None)
    squatted.write_bytes(b"theirs")
    link = ShmTransport().open(squatting(f"/{squatted.name}", NameSource(run)), 64, 1.0)
    try:
        client, server = link.loopback()
        client.send(b"x" * 64)
        assert bytes(server.recv()) == b"x" * 64
    finally:
        link.close()
    assert squatted.read_bytes() == b"theirs"
    assert [p.name for p in SHM_DIR.iterdir() if run in p.name] == [squatted.name]


def test_squatted_queue_name_is_retried(queues):
    run = dead_run()
    squatted = f"/{run}0-0-ab-mq-c2s"
    queues.append(squatted)
    if ROOT:
        as_nobody(lambda: make_queue(squatted))
    else:
        make_queue(squatted)
    link = MqTransport().open(squatting(squatted, NameSource(run)), 8, 1.0)
    try:
        client, server = link.loopback()
        client.send(b"12345678")
        assert bytes(server.recv()) == b"12345678"
    finally:
        link.close()
    assert queue_exists(squatted)


def test_retries_give_up_after_a_few_names():
    tried = []

    def make(name: str) -> None:
        tried.append(name)
        raise FileExistsError(name)

    with pytest.raises(FileExistsError):
        create_new(NameSource(dead_run()), "shm", "area", make)
    assert len(set(tried)) == len(tried) == CREATE_ATTEMPTS


# ---- S8: a machine id is a folder name, nothing more --------------------------------


def run_folder(folder: Path, machine_id: object) -> Path:
    folder.mkdir()
    (folder / "samples.csv").write_text("x\n")
    (folder / "metadata.json").write_text(json.dumps({"machine": {"machine_id": machine_id}}))
    return folder


@pytest.mark.parametrize("machine_id", ["../../x", "/tmp/x/victim", ".", "..", "a/b", "",
                                        "x\ny", "a" * 129])
def test_baseline_refuses_unsafe_machine_ids(tmp_path, machine_id):
    root = tmp_path / "results" / "baselines"
    victim = tmp_path / "x"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    existed = Path("/tmp/x/victim").exists()
    run = run_folder(tmp_path / "run", machine_id)
    assert "machine_id" in one_line_usage_error(lambda: baseline.save(run, root))
    one_line_usage_error(lambda: baseline.find(run, root))
    assert (victim / "keep").read_text() == "precious"
    assert Path("/tmp/x/victim").exists() == existed
    assert not root.exists()


def test_baseline_refuses_a_symlinked_target(tmp_path):
    root = tmp_path / "results" / "baselines"
    root.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    (root / "m1").symlink_to(victim)
    one_line_usage_error(lambda: baseline.save(run_folder(tmp_path / "run", "m1"), root))
    assert (victim / "keep").read_text() == "precious"


def test_baseline_save_with_a_traversal_id_exits_2(tmp_path):
    run = run_folder(tmp_path / "run", "../../x")
    done = ipcbench("baseline", "save", str(run), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("ipcbench: error:") and done.stderr.count("\n") == 1
    assert not (tmp_path / "results").exists()


# ---- cleanup: dry runs, and live runs only with force -------------------------------


def test_dry_run_removes_nothing(private_sweep, tmp_path, queues):
    shm, scratch = private_sweep
    run = dead_run()
    (shm / f"{run}0-0-ab-shm").write_bytes(b"")
    (scratch / f"{run}0-layers-x").mkdir()
    queue = f"/{run}0-1-cd-mq-c2s"
    queues.append(queue)
    make_queue(queue)
    journal_path(run).write_text(f"mq {queue}\n")
    stage = tmp_path / stage_name(run)
    stage.mkdir()
    plant_record(stage_record(run), stage)
    before = sorted(p.name for p in (*shm.iterdir(), *scratch.iterdir(), *state_dir().iterdir()))
    dry = cleanup.cleanup(dry_run=True)
    assert dry.dry_run and len(dry.removed) == 4, dry.removed
    after = sorted(p.name for p in (*shm.iterdir(), *scratch.iterdir(), *state_dir().iterdir()))
    assert after == before and queue_exists(queue) and stage.exists()
    assert sorted(sweep().removed) == sorted(dry.removed)
    assert not queue_exists(queue) and not stage.exists()


def live_run(shm: Path) -> str:
    """A run of this very process (alive), with its stage record and an object."""
    run = f"{PREFIX}{os.getpid()}-{os.urandom(3).hex()}-"
    write_stage_record(stage_record(run), shm / "unused")
    (shm / f"{run}0-0-ab-shm").write_bytes(b"")
    return run


def test_all_spares_live_runs_unless_forced(private_sweep):
    shm, _ = private_sweep
    run = live_run(shm)
    assert runner_alive(run)
    spared = cleanup.cleanup(include_live_runs=True, dry_run=True)
    # Live runs elsewhere on this machine may be skipped too: only this one is ours to check.
    assert spared.removed == [] and run in spared.skipped
    assert sweep(include_live_runs=True).removed == []
    assert (shm / f"{run}0-0-ab-shm").exists()
    forced = cleanup.cleanup(include_live_runs=True, force=True, dry_run=True)
    assert str(shm / f"{run}0-0-ab-shm") in forced.removed


def test_a_reused_runner_pid_does_not_keep_a_run_alive(state):
    run = f"{PREFIX}{os.getpid()}-{os.urandom(3).hex()}-"
    # The record says the runner started long before this process did: the pid was reused.
    stage_record(run).write_text(json.dumps({"stage": "/nonexistent", "pid": os.getpid(),
                                             "started": psutil.Process().create_time() - 3600}))
    assert not runner_alive(run)
