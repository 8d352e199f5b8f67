"""Runs a suite's cases, each in several fresh worker processes, with progress shown."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field, replace

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.cleanup import WORKER_MODULE
from harness.counters import LifeWindow
from harness.disturbance import mark
from harness.ipcnames import journal_path
from harness.protocol import Reply, Task
from harness.records import PROBE, Case, CaseResult, Settings, WorkerResult
from harness.topology import GROUP, builders

WORKER_STARTUP_S = 30.0


def worker_wait(settings: Settings, case: Case) -> float:
    """How long the runner waits for one worker of ``case``. A probe that runs for
    duration_s per batch (crash injection) gets that time too."""
    return WORKER_STARTUP_S + (settings.timeout_s + 2 * case.duration_s) * (
        settings.batches + settings.warmups + 2)


class WorkerError(RuntimeError):
    """A worker failed, timed out, or printed something that is not a result."""


@dataclass
class Runner:
    settings: Settings
    prefix: str
    console: Console
    _active: subprocess.Popen[str] | None = None
    _builders: dict[str, str] = field(default_factory=dict)

    def run(self, cases: list[Case]) -> list[CaseResult]:
        """Every case gets one worker per pass, passes one after another.

        On a VM the host drifts between fast and slow spells lasting about a
        second; interleaving spreads each case's workers over the whole run, so
        every case sees the same mix and ratios within a run stay fair.
        """
        [results] = self.run_sides(cases, [sys.executable])
        return results

    def run_sides(self, cases: list[Case], pythons: list[str]) -> list[list[CaseResult]]:
        """The same passes with a worker of each Python environment, back to back.

        Worker i of every side ran in pass i, next to the others' worker i: pairs
        that saw the same spell of the host (``ipcbench ab``). The side that goes
        first alternates from one case and pass to the next, so neither side is
        always the one that runs right after the other's."""
        columns = (TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        sides = [[CaseResult(case) for case in cases] for _ in pythons]
        groups = [_measurements(results) for results in sides]
        keys = list(groups[0])
        # No refresh thread: it would wake up beside the timed loop ten times a second.
        with Progress(*columns, console=self.console, transient=True,
                      auto_refresh=False) as progress:
            wanted = {key: key.workers or self.settings.workers for key in keys}
            passes = max(wanted.values(), default=0)
            bar = progress.add_task("workers", total=sum(wanted.values()) * len(pythons))
            for number in range(passes):
                for index, key in enumerate(keys):
                    if number >= wanted[key]:
                        continue
                    first = (number + index) % len(pythons)
                    for side in [*range(first, len(pythons)), *range(first)]:
                        group = groups[side][key]
                        progress.update(bar, refresh=True, description=f"pass {number + 1}/"
                                        f"{passes} {group[0].case.name}")
                        self._add_worker(group, pythons[side])
                        progress.advance(bar)
        for results in sides:
            for result in results:
                mark(result)
        return sides

    def _add_worker(self, group: list[CaseResult], python: str = sys.executable) -> None:
        if any(result.status != "ok" for result in group):
            return
        try:
            measured = self._worker([result.case for result in group], python)
        except WorkerError as exc:
            for result in group:
                result.status, result.note = "error", str(exc)
            return
        for result, worker in zip(group, measured, strict=True):
            result.workers.append(worker)

    def __post_init__(self) -> None:
        # Workers get every CPU the user gave us; the runner itself moves off the
        # CPU that same-cpu cases measure on, so its wake-ups land elsewhere.
        self.cpus = sorted(os.sched_getaffinity(0))
        if len(self.cpus) > 1:
            os.sched_setaffinity(0, set(self.cpus[1:]))

    def run_case(self, case: Case) -> CaseResult:
        """All workers of one case, back to back (for scripts measuring a single case)."""
        result = CaseResult(case)
        for _ in range(self.settings.workers):
            self._add_worker([result])
        mark(result)
        return result

    def _worker(self, cases: list[Case], python: str = sys.executable) -> list[WorkerResult]:
        timeout = worker_wait(self.settings, cases[0])
        task = Task(cases, self.settings, self.prefix, str(journal_path(self.prefix)),
                    os.getpid(), self.cpus, self._builder(cases[0]))
        # ``--run`` is for ``ipcbench cleanup``, which finds strays by command line.
        command = [python, "-I", "-m", WORKER_MODULE, "--run", self.prefix]
        # A probe times no batches of its own: its worker's whole life is its window.
        window = LifeWindow(self.cpus) if cases[0].topology == PROBE else None
        try:
            results = self._run_worker(command, task, timeout)
            if window is not None:
                share = window.foreign_share()
                results = [replace(r, foreign_share=share) for r in results]
            return results
        finally:
            if window is not None:
                window.close()

    def _builder(self, case: Case) -> str:
        """The ``module:function`` that wires a timed case (looked up once per run)."""
        if case.topology == PROBE:
            return ""
        if not self._builders:
            self._builders = builders()
        if case.topology not in self._builders:
            raise WorkerError(f"no topology {case.topology!r} is registered "
                              f"(entry point group {GROUP})")
        return self._builders[case.topology]

    def _run_worker(self, command: list[str], task: Task, timeout: float
                    ) -> list[WorkerResult]:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        except OSError as exc:  # EAGAIN under a pids limit, ENOENT for a bad python: this case
            raise WorkerError(f"cannot start a worker ({exc.strerror or exc})") from None
        self._active = proc
        try:
            out, err = proc.communicate(task.to_json(), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise WorkerError(f"worker exceeded {timeout:g} s") from None
        except BaseException:  # an interrupt: the worker goes now, its servers with it
            proc.kill()
            proc.wait()
            raise
        finally:
            self._active = None
        try:
            reply = Reply.from_json(out)
        except ValueError:  # JSONDecodeError too: a worker that died before its reply
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise WorkerError(f"worker exited {proc.returncode}: {last}") from None
        if reply.error:
            raise WorkerError(reply.error)
        return reply.results

    def abort(self) -> None:
        """Stop the worker in flight; its servers follow it (PR_SET_PDEATHSIG)."""
        proc = self._active
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _measurements(results: list[CaseResult]) -> dict[Case, list[CaseResult]]:
    """Cases grouped by what one worker measures: probe cases of one measurement share
    its workers; every other case has its own."""
    groups: dict[Case, list[CaseResult]] = {}
    for result in results:
        case = result.case
        groups.setdefault(case.measurement if case.topology == PROBE else case,
                          []).append(result)
    return groups
