"""Runs a suite's cases, each in several fresh worker processes, with progress shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.cleanup import WORKER_MODULE
from harness.ipcnames import journal_path
from harness.records import Case, CaseResult, Settings, WorkerResult

WORKER_STARTUP_S = 30.0


class WorkerError(RuntimeError):
    """A worker failed, timed out, or printed something that is not a result."""


@dataclass
class Runner:
    settings: Settings
    prefix: str
    console: Console
    _active: subprocess.Popen[str] | None = None

    def run(self, cases: list[Case]) -> list[CaseResult]:
        columns = (TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        results = []
        with Progress(*columns, console=self.console, transient=True) as progress:
            overall = progress.add_task("cases", total=len(cases))
            for case in cases:
                progress.update(overall, description=case.name)
                results.append(self.run_case(case))
                progress.advance(overall)
        return results

    def run_case(self, case: Case) -> CaseResult:
        workers = []
        for _ in range(self.settings.workers):
            try:
                workers.append(self._worker(case))
            except WorkerError as exc:
                return CaseResult(case, "error", str(exc), workers)
        return CaseResult(case, "ok", "", workers)

    def _worker_timeout(self) -> float:
        s = self.settings
        return WORKER_STARTUP_S + s.timeout_s * (s.batches + s.warmups + 2)

    def _worker(self, case: Case) -> WorkerResult:
        task = {"case": asdict(case), "settings": asdict(self.settings), "prefix": self.prefix,
                "journal": str(journal_path(self.prefix)), "runner_pid": os.getpid()}
        # ``--run`` is for ``ipcbench cleanup``, which finds strays by command line.
        command = [sys.executable, "-I", "-m", WORKER_MODULE, "--run", self.prefix]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self._active = proc
        try:
            out, err = proc.communicate(json.dumps(task), timeout=self._worker_timeout())
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise WorkerError(f"worker exceeded {self._worker_timeout():g} s") from None
        finally:
            self._active = None
        try:
            data = json.loads(out)
        except json.JSONDecodeError:
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise WorkerError(f"worker exited {proc.returncode}: {last}") from None
        if "error" in data:
            raise WorkerError(data["error"])
        return WorkerResult(**data)

    def abort(self) -> None:
        """Stop the worker in flight; its servers follow it (PR_SET_PDEATHSIG)."""
        proc = self._active
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
