"""The ``ipcbench`` command line: thin, everything else lives in the engine modules."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import pandas as pd
from rich.console import Console

from harness import (
    __version__,
    ab,
    baseline,
    cputopology,
    history,
    native,
    outfolder,
    reference,
    runfolder,
)
from harness.cleanup import cleanup, sweep
from harness.compare import (
    Comparison,
    compare,
    comparison_frame,
    load_samples,
    machine_differences,
)
from harness.console import (
    SERIES_SHOWN,
    print_comparison,
    print_findings,
    print_history,
    print_machine_comparison,
    print_topology,
    summary_console,
)
from harness.disturbance import LIMIT, run_disturbance
from harness.doctor import WARN, diagnose
from harness.errors import UsageError
from harness.export import export as export_runs
from harness.export import write_csv
from harness.metadata import (
    MACHINE_NAME_VARIABLE,
    describe_machine,
    git_commit,
    machine_name,
    nominal_mhz,
    pyperf_metadata,
)
from harness.model import analyze, draw
from harness.names import new_run_prefix
from harness.outfolder import free_name, staged_folder
from harness.records import Case, CaseResult
from harness.renderers import print_report, write_report
from harness.report import Report, build_report, model_report
from harness.results import RunData
from harness.runner import Runner
from harness.suite import Suite, load_suite

if TYPE_CHECKING:  # SQLAlchemy only for the commands that use the history
    from harness import historydb

COMMANDS_GROUP = "ipcbench.commands"  # subcommands that bench adds: register(commands)
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def command_plugins() -> list[Callable[[argparse._SubParsersAction], None]]:
    return [entry.load() for entry in entry_points(group=COMMANDS_GROUP)]


def build_parser() -> Parser:
    parser = Parser(prog="ipcbench", description="Real-process IPC microbenchmarks.")
    parser.add_argument("--version", action="version", version=f"ipcbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = commands.add_parser("run", help="run a suite and write a run folder")
    run.add_argument("--suite", default="default",
                     help="quick, default, full, or a TOML file (default: default)")
    run.add_argument("--out", type=Path,
                     help="run folder to create (default: results/<time>-<suite>)")
    run.add_argument("--only", help="comma-separated experiments of the suite to run")
    add_history_option(run, "the history the run is stored in")
    run.add_argument("--no-history", action="store_true", help="do not store the run")
    add_machine_name(run)
    run.add_argument("--native-reference", action="store_true",
                     help="also hold each transport's same-cpu 64 B round trip against C "
                          "doing the same (needs a C compiler; else skipped with the reason)")
    run.add_argument("--native-rounds", type=int, default=5, metavar="N",
                     help="alternating rounds of the native reference (default: 5)")
    add_keep_disturbed(run)
    run.set_defaults(func=cmd_run)

    trend = commands.add_parser("history", help="trend per case and machine over the stored "
                                "runs, with change points; or two machines side by side")
    add_history_option(trend, "the history to read")
    add_history_filters(trend)
    trend.add_argument("--threshold", type=float, default=5.0,
                       help="smallest change that counts, in percent (default: 5)")
    trend.add_argument("--plots", type=Path, metavar="DIR",
                       help="also draw a PNG per series with a change point, in DIR")
    trend.add_argument("--all", action="store_true", dest="every",
                       help="list every series, not only those with change points, when "
                            f"there are more than {SERIES_SHOWN}")
    trend.add_argument("--compare-machines", nargs=2, metavar=("A", "B"),
                       help="the latest runs of machines A and B side by side, as ratios B/A "
                            "(a description, not a regression gate)")
    trend.set_defaults(func=cmd_history)

    store = commands.add_parser("store", help="store run folders in the history (a fleet's "
                                "database, say); a run stored before is stored once")
    store.add_argument("runs", type=Path, nargs="+", metavar="RUN")
    add_history_option(store, "the history to store in")
    store.add_argument("--machine-name", help="name for the machine of a folder written "
                       "before runs recorded one (default: its fingerprint hash)")
    store.set_defaults(func=cmd_store)

    fleet = commands.add_parser("fleet-report", help="one offline HTML page of the fleet: per "
                                "case a line per machine over time, and the machines")
    fleet.add_argument("--out", type=Path, required=True,
                       help="folder to write index.html and its plots in")
    add_history_option(fleet, "the history to read")
    add_history_filters(fleet)
    fleet.add_argument("--threshold", type=float, default=5.0,
                       help="smallest change that counts, in percent (default: 5)")
    fleet.set_defaults(func=cmd_fleet_report)

    fit = commands.add_parser("fit", help="refit model.csv and the report from saved samples")
    fit.add_argument("folder", type=Path)
    add_keep_disturbed(fit)
    add_raw(fit)
    fit.set_defaults(func=cmd_fit)

    report = commands.add_parser("report", help="render a run folder's report again")
    report.add_argument("folder", type=Path)
    add_keep_disturbed(report)
    add_raw(report)
    report.set_defaults(func=cmd_report)

    paired = commands.add_parser(
        "ab", help="run a suite under two Python environments, workers paired; exit 1 on a "
                   "significant regression of NEW",
        description="Base and new workers of each case run back to back, so each pair sees "
                    "the same spell of the host, and a paired test judges them: how to gate a "
                    "change on a shared CI runner. Each PYTHON must be able to import "
                    "ipcbench (a venv with the code under test installed).")
    paired.add_argument("base_python", metavar="BASE_PYTHON")
    paired.add_argument("new_python", metavar="NEW_PYTHON")
    paired.add_argument("--suite", default="quick",
                        help="quick (default), default, full or a TOML file")
    paired.add_argument("--only", help="comma-separated experiments of the suite to run")
    paired.add_argument("--out", type=Path,
                        help="folder to create (default: results/<time>-ab-<suite>): base/ and "
                             "new/ run folders and comparison.csv")
    add_gate_options(paired)
    paired.set_defaults(func=cmd_ab)

    comp = commands.add_parser(
        "compare", help="compare two runs; exit 1 on a significant regression")
    comp.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                      help="BASE NEW (run folders or pyperf.json files), or NEW with --baseline")
    comp.add_argument("--baseline", action="store_true",
                      help="compare NEW against this machine's saved baseline")
    comp.add_argument("--force", action="store_true",
                      help="compare runs from different machines")
    add_gate_options(comp)
    comp.set_defaults(func=cmd_compare)

    base = commands.add_parser("baseline", help="manage this machine's baseline")
    base_commands = base.add_subparsers(dest="action", required=True, parser_class=Parser)
    save = base_commands.add_parser("save", help="store a run as its machine's baseline")
    save.add_argument("folder", type=Path)
    save.set_defaults(func=cmd_baseline_save)

    export = commands.add_parser("export", help="merge runs, or the history, into one tidy CSV")
    export.add_argument("runs", type=Path, nargs="*", metavar="RUN")
    export.add_argument("--out", type=Path, required=True, help="the CSV file to write")
    export.add_argument("--from-history", action="store_true",
                        help="export the history's cases (with run and machine columns) "
                             "instead of run folders")
    add_history_option(export, "the history --from-history reads")
    add_history_filters(export)
    export.set_defaults(func=cmd_export)

    doctor = commands.add_parser("doctor", help="check this machine for what makes numbers noisy")
    doctor.add_argument("--seconds", type=float, default=5.0,
                        help="how long to sample the machine's jitter (default: 5; 0 skips it)")
    doctor.set_defaults(func=cmd_doctor)

    topo = commands.add_parser("topology", help="this machine's CPUs by package, LLC, core "
                               "and NUMA node, and the CPU pairs each placement gives")
    source = topo.add_mutually_exclusive_group()
    source.add_argument("--record", type=Path, metavar="FILE",
                        help="write the sysfs files it reads to FILE, as text (a fixture, or "
                             "a machine to plan for elsewhere)")
    source.add_argument("--from", dest="recorded", type=Path, metavar="FILE",
                        help="read a recorded FILE instead of this machine")
    topo.set_defaults(func=cmd_topology)

    for register in command_plugins():  # bench adds its own (``ipcbench model``)
        register(commands)

    clean = commands.add_parser(
        "cleanup", help="remove IPC objects and processes that crashed or killed runs left"
    )
    clean.add_argument("--all", action="store_true",
                       help="also look at runs that are still running: listed, and removed "
                            "only with --force")
    clean.add_argument("--force", action="store_true",
                       help="with --all, remove live runs' objects and kill their processes")
    clean.add_argument("--dry-run", action="store_true",
                       help="only say what would be removed and killed")
    clean.set_defaults(func=cmd_cleanup)
    return parser


def add_history_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--history", metavar="FILE|URL",
                        help=f"{what}: a SQLite file or a postgresql:// URL (default: "
                             f"${history.HISTORY_VARIABLE}, else {history.DEFAULT_PATH})")


def add_history_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--machine", action="append", default=[], metavar="NAME",
                        help="a machine by name or fingerprint hash (again for more; "
                             "default: every machine)")
    parser.add_argument("--kernel", help="runs on this kernel only")
    parser.add_argument("--suite", help="runs of this suite only")
    parser.add_argument("--case", help="cases whose name contains this")


def history_filters(args: argparse.Namespace) -> historydb.Filters:
    from harness import historydb

    return historydb.Filters(tuple(args.machine), args.kernel, args.suite, args.case)


def add_machine_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--machine-name", help="the name the history knows this machine by "
                        f"(default: ${MACHINE_NAME_VARIABLE}, else the host name)")


def add_keep_disturbed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-disturbed", action="store_true",
                        help=f"keep batches that lost more than {LIMIT:.0%}% of their CPU time "
                             "to other work in the statistics (left out by default)")


def add_gate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float, default=5.0,
                        help="smallest change that counts, in percent (default: 5)")
    parser.add_argument("--normalize", action="store_true",
                        help="judge each worker relative to the machine reference timed beside "
                             "its batches")
    parser.add_argument("--require-power", action="store_true",
                        help="fail when a timed case could not have detected a change of the "
                             "threshold's size")
    add_keep_disturbed(parser)


def add_raw(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", action="store_true",
                        help="fit the model on the raw values (by default each worker's values "
                             "are scaled to the run's median machine reference)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as exc:
        print(f"ipcbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if outfolder.completed:  # the run itself was whole: only its summary is cut short
            print(f"ipcbench: stopped after the run was written whole to "
                  f"{outfolder.completed[-1]}", file=sys.stderr)
        else:
            print("ipcbench: interrupted; servers stopped and IPC objects removed",
                  file=sys.stderr)
        return EXIT_INTERRUPTED


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def default_out(kind: str) -> Path:
    """``results/<time>-<kind>``, or with the pid when another run took that second."""
    return free_name(Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}")


def measure(runner: Runner, prefix: str, cases: list[Case], pythons: list[str],
            ) -> list[list[CaseResult]]:
    """Every side's workers; whatever happens, no worker, server or IPC object stays."""
    try:
        return runner.run_sides(cases, pythons)
    finally:
        runner.abort()
        cleanup(prefix, include_live_runs=True)


def cmd_run(args: argparse.Namespace) -> int:
    if args.native_rounds < 1:
        raise UsageError("--native-rounds must be at least 1")
    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    suite = load_suite(args.suite, only)
    name = machine_name(args.machine_name)
    if not args.no_history:  # now, not after minutes of measuring
        from harness import historydb

        where = historydb.target(args.history)
        historydb.check(where, write=True)
    plan = suite.plan()
    console = Console(stderr=True)
    out = args.out or default_out(suite.name)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sweep()  # leftovers of runs that died before us
    prefix = new_run_prefix()
    runner = Runner(suite.settings, prefix, console)
    with staged_folder(out, prefix) as staging:
        stage = staging.path
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        console.print(f"ipcbench: suite [bold]{suite.name}[/]: {len(plan.runnable)} cases, "
                      f"{len(plan.skipped)} skipped, {suite.settings.workers} workers each")
        [measured] = measure(runner, prefix, plan.runnable, [sys.executable])
        run = RunData(run_metadata(suite, args, prefix, started, name),
                      measured + plan.skipped,
                      keep_disturbed=args.keep_disturbed)
        run.metadata["disturbance"] = asdict(run_disturbance(measured))
        run.save(stage)  # the measurements first: nothing after this may lose them
        if args.native_reference:  # then saved again, with what it found or why it failed
            run.native, run.metadata["native_reference"] = hold_against_native(
                suite, runner, prefix, args.native_rounds, console)
            run.save(stage)
        try:
            analyze(run)
            run.save_model(stage)
            draw(run, stage)
            built = build_report(run)
            write_report(built, stage)
            report: Report | None = built
        except Exception as exc:  # a bug in a fit must not cost the user a run
            analysis_error, report = f"{type(exc).__name__}: {exc}", None
        else:
            analysis_error = ""
    out = staging.out
    for note in staging.notes:
        console.print(f"ipcbench: {note}")
    stored = True
    if not args.no_history:
        try:
            saved = historydb.append(where, out.name, run.metadata, run.results_frame(),
                                     [c.case.name for c in run.cases], out)
        except UsageError as exc:  # changed since the check, or the server went away
            console.print(f"ipcbench: {exc}; the run is in {out} but not in the history "
                          f"(`ipcbench store {out}` stores it later)")
            stored = False
        else:
            if saved.run_id != out.name:
                console.print(f"ipcbench: the history holds another run named {out.name}: "
                              f"this one is stored as {saved.run_id}")
    print_report(report or build_report(run), summary_console())
    failed = [c for c in run.cases if c.status == "error"]
    console.print(f"ipcbench: wrote {out}" + (f" ({len(failed)} cases failed)" if failed else ""))
    print_notes(run)
    if analysis_error:
        console.print(f"ipcbench: the analysis failed ({analysis_error}); the samples are in "
                      f"{out}: `ipcbench fit {out}` retries it")
    return 1 if failed or analysis_error or run.notes or not stored else 0


def hold_against_native(suite: Suite, runner: Runner, prefix: str, rounds: int,
                        console: Console) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The native reference over the suite's transports, on the CPU its same-cpu cases
    ran on, their cases measured as the suite measures them: its rounds, and what
    metadata.json says (measured; unavailable, or failed, with the reason). Never raises
    but for an interrupt: the run's own measurements are saved already."""
    transports = [t for t in suite.transports() if t != "call"]
    if not any(t in native.MECHANISMS for t in transports):
        reason = "none of the suite's transports has a C equivalent"
        console.print(f"ipcbench: native reference skipped: {reason}")
        return None, {"status": "unavailable", "reason": reason}

    def suite_ns(case: Case) -> float:
        result = runner.run_case(case)
        values = [v for w in result.workers for v in w.kept()]
        if result.status != "ok" or not values:
            raise RuntimeError(f"the suite's side of {case.name} failed: {result.note}")
        return float(np.median(values))

    try:
        held = native.measure(suite_ns, transports, rounds, cpu=runner.cpus[0],
                              progress=lambda text: console.print(f"ipcbench: {text}"))
    except native.NativeUnavailable as exc:
        console.print(f"ipcbench: native reference skipped: {exc}")
        return None, {"status": "unavailable", "reason": str(exc)}
    except Exception as exc:  # the run is saved: say what failed, keep it
        reason = f"{type(exc).__name__}: {exc}"
        console.print(f"ipcbench: the native reference failed ({reason}); the run is kept")
        return None, {"status": "failed", "reason": reason}
    finally:
        runner.abort()
        cleanup(prefix, include_live_runs=True)
    return held.rounds, {"status": "measured", "rounds": rounds, "skipped": held.skipped,
                         "compiler": native.compiler()}


def cmd_ab(args: argparse.Namespace) -> int:
    threshold = _threshold(args.threshold)
    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    suite = load_suite(args.suite, only)
    plan = suite.plan()
    environments = [ab.environment(args.base_python), ab.environment(args.new_python)]
    name = machine_name()
    console = Console(stderr=True)
    out = args.out or default_out(f"ab-{suite.name}")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sweep()
    prefix = new_run_prefix()
    runner = Runner(suite.settings, prefix, console)
    with staged_folder(out, prefix) as staging:
        stage = staging.path
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        console.print(f"ipcbench ab: suite [bold]{suite.name}[/]: {len(plan.runnable)} cases, "
                      f"{suite.settings.workers} worker pairs each; base {args.base_python}, "
                      f"new {args.new_python}")
        sides = measure(runner, prefix, plan.runnable, [e.python for e in environments])
        for side, measured, env in zip(ab.SIDES, sides, environments, strict=True):
            meta = {**run_metadata(suite, args, prefix, started, name), "ab_side": side,
                    "environment": env.describe(), "git_commit": env.commit,
                    "disturbance": asdict(run_disturbance(measured))}
            (stage / side).mkdir()
            RunData(meta, measured + plan.skipped, keep_disturbed=args.keep_disturbed
                    ).save(stage / side)
        base, new = (load_samples(stage / name, args.keep_disturbed) for name in ab.SIDES)
        result = compare(base, new, threshold, normalize=args.normalize, pair=True)
        comparison_frame(result).to_csv(stage / "comparison.csv", index=False)
    out = staging.out
    for note in staging.notes:
        console.print(f"ipcbench: {note}")
    print_comparison(result, base.label, new.label, summary_console())
    console.print(f"ipcbench ab: wrote {out} (base/ and new/ hold the measurements: "
                  f"`ipcbench report {out}/new` draws one)")
    return gate_status(result, args.require_power)


def run_metadata(suite: Suite, args: argparse.Namespace, prefix: str, started: str,
                 name: str) -> dict:
    return {
        "run_uuid": str(uuid.uuid4()),  # the run's identity in a history a fleet shares
        "ipcbench_version": __version__,
        "suite": suite.name,
        "suite_description": suite.description,
        "settings": asdict(suite.settings),
        "keep_disturbed": args.keep_disturbed,
        "disturbance_limit": LIMIT,
        "reference": f"{reference.NAME}, {reference.LOOPS} x {reference.SIZE} B, before "
                     "and after every timed batch",
        "command": sys.argv,
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
        "ipc_prefix": prefix,
        "machine": describe_machine(name),
        "machine_extra": {"cpu_mhz_nominal": nominal_mhz()},
        "pyperf": pyperf_metadata(),
    }


def load_run(args: argparse.Namespace) -> RunData:
    """A saved run, its statistics over the batches it kept unless told otherwise."""
    run = RunData.load(args.folder)
    run.keep_disturbed = args.keep_disturbed or bool(run.metadata.get("keep_disturbed"))
    run.raw_model = args.raw
    return run


@contextlib.contextmanager
def staged_outputs(folder: Path) -> Iterator[Path]:
    """A hidden folder inside the run folder for what ``fit`` and ``report`` write; its
    files replace the run's only once every one of them is written, so a failure midway
    leaves the run folder as it was (never a model from one fit beside plots of another)."""
    try:
        stage = Path(tempfile.mkdtemp(prefix=".ipcbench-stage-", dir=folder))
    except OSError as exc:
        raise UsageError(f"{folder}: cannot write there ({exc.strerror})") from None
    try:
        yield stage
        for path in sorted(stage.iterdir()):
            os.replace(path, folder / path.name)  # same file system: each one atomic
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def refit(run: RunData, folder: Path, model: bool) -> Report:
    """Analyse ``run`` and write its outputs into ``folder``, all or nothing; an error
    in the analysis becomes ``AnalysisFailed`` with ``folder`` untouched. Returns the
    report it wrote."""
    with staged_outputs(folder) as stage:
        try:
            analyze(run)
            if model and not run.model:
                raise UsageError(f"{folder}: its samples hold nothing any experiment fits a "
                                 "model from")
            if model:
                run.save_model(stage)
            draw(run, stage)
            report = build_report(run)
            write_report(report, stage)
        except UsageError:
            raise
        except Exception as exc:  # a bug in a fit: say so in a line, keep the folder
            raise AnalysisFailed(f"the analysis failed ({type(exc).__name__}: {exc}); "
                                 f"{folder} is unchanged") from exc
    return report


class AnalysisFailed(Exception):
    """fit or report could not finish; nothing in the run folder was replaced."""


def print_notes(run: RunData) -> None:
    for note in run.notes:
        print(f"ipcbench: {note}", file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> int:
    run = load_run(args)
    if not run.measured():
        raise UsageError(f"{args.folder}: no samples to report (samples.csv has no measured "
                         "case)")
    try:
        report = refit(run, args.folder, model=False)
    except AnalysisFailed as exc:
        print(f"ipcbench: {exc}", file=sys.stderr)
        return 1
    print_report(report, summary_console())
    print_notes(run)
    return 1 if run.notes else 0


def cmd_fit(args: argparse.Namespace) -> int:
    run = load_run(args)
    if not run.measured():
        raise UsageError(f"{args.folder}: no measured samples to fit")
    try:
        refit(run, args.folder, model=True)
    except AnalysisFailed as exc:
        print(f"ipcbench: {exc}", file=sys.stderr)
        return 1
    print_report(model_report(run), summary_console())
    print_notes(run)
    return 1 if run.notes else 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    if args.force and not args.all:
        raise UsageError("cleanup --force acts on live runs: give --all with it")
    report = cleanup(include_live_runs=args.all, dry_run=args.dry_run, force=args.force)
    removed, killed = ("would remove", "would kill") if args.dry_run else ("removed", "killed")
    for item in report.removed:
        print(f"{removed} {item}")
    for pid in report.killed:
        print(f"{killed} process {pid}")
    for run in report.skipped:
        print(f"left run {run} alone: its runner is alive (--all --force removes it)")
    if not report:
        print("nothing to clean up")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if args.baseline:
        if len(args.runs) != 1:
            raise UsageError("compare --baseline takes one run: NEW")
        base_path, new_path = baseline.find(args.runs[0]), args.runs[0]
    elif len(args.runs) == 2:
        base_path, new_path = args.runs
    else:
        raise UsageError("compare takes two runs, BASE NEW (or NEW with --baseline)")
    threshold = _threshold(args.threshold)
    base = load_samples(base_path, args.keep_disturbed)
    new = load_samples(new_path, args.keep_disturbed)
    differences = machine_differences(base, new)
    if differences and not args.force:
        raise UsageError("runs come from different machines (" + "; ".join(differences)
                         + "); --force compares them anyway")
    result = compare(base, new, threshold, normalize=args.normalize)
    print_comparison(result, base.label, new.label, summary_console())
    return gate_status(result, args.require_power)


def _check_new_folder(path: Path, flag: str) -> None:
    """``path`` is a folder, or one can be made there (nothing is made yet)."""
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {path}: not a folder")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot make a folder in {parent}")


def _threshold(percent: float) -> float:
    if not 0 < percent < 100:  # NaN fails this too
        raise UsageError("--threshold is a percentage between 0 and 100")
    return percent / 100


def gate_status(result: Comparison, require_power: bool) -> int:
    """1 on a regression, or with ``require_power`` on a gate case that could not see one."""
    weak = result.underpowered_gate()
    if require_power and weak:
        print(f"ipcbench: --require-power: {len(weak)} timed cases could not have detected "
              f"a change of {result.threshold:.0%}, e.g. {weak[0].case} "
              f"(detectable {weak[0].detectable:.1%})")
        return 1
    return 1 if result.regressed else 0


def cmd_baseline_save(args: argparse.Namespace) -> int:
    target = baseline.save(args.folder)
    print(f"saved {args.folder} as the baseline of machine {target.name}: {target}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    filtered = any((args.machine, args.kernel, args.suite, args.case))
    if args.from_history:
        from harness import historydb

        if args.runs:
            raise UsageError("export: give run folders or --from-history, not both")
        where = historydb.target(args.history)
        historydb.check(where)
        table = historydb.export_table(where, history_filters(args))
        if table.empty:
            raise UsageError(f"history {where}: no runs to export{history_filters(args).said()}")
        write_csv(table, args.out)
        print(f"wrote {len(table)} rows from {table.run_id.nunique()} runs to {args.out}")
        return 0
    if not args.runs:
        raise UsageError("export: give run folders, or --from-history")
    if filtered or args.history:
        raise UsageError("export: --history, --machine, --kernel, --suite and --case go with "
                         "--from-history")
    rows = export_runs(args.runs, args.out)
    print(f"wrote {rows} rows from {len(args.runs)} runs to {args.out}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    if not 0 <= args.seconds <= 3600:  # NaN fails this too
        raise UsageError("--seconds is between 0 and 3600")
    findings = diagnose(args.seconds)
    print_findings(findings, summary_console())
    return 1 if any(f.level == WARN for f in findings) else 0


def cmd_topology(args: argparse.Namespace) -> int:
    if args.record:
        text = cputopology.record()
        try:
            args.record.write_text(text)
        except OSError as exc:
            raise UsageError(f"--record {args.record}: cannot write ({exc.strerror})") from None
        print(f"wrote {len(text.splitlines()) - 1} sysfs values to {args.record}")
        return 0
    if args.recorded:
        try:
            machine = cputopology.Topology.from_record(args.recorded.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"--from {args.recorded}: not a topology record ({exc})") from None
    else:
        machine = cputopology.this_machine()
    print_topology(machine, summary_console())
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from harness import historydb

    threshold = _threshold(args.threshold)
    if args.plots:
        _check_new_folder(args.plots, "--plots")
    where = historydb.target(args.history)
    historydb.check(where)
    filters = history_filters(args)
    if args.compare_machines:
        from harness.fleet import compare_machines

        mixed = [flag for flag, given in (("--machine", args.machine), ("--all", args.every),
                                           ("--plots", args.plots)) if given]
        if mixed:
            raise UsageError(f"--compare-machines names its two machines; {mixed[0]} does "
                             "not go with it")
        a, b = args.compare_machines
        print_machine_comparison(compare_machines(where, a, b, filters), summary_console())
        return 0
    table = historydb.series(where, filters)
    if table.empty:
        raise UsageError(f"history {where}: no runs{filters.said()}")
    rows = history.series_rows(table)
    points = history.detect(table, threshold, rows)
    try:
        plots = [history.plot_series(table, group, args.plots)
                 for group in history.by_series(points)] if args.plots else []
    except OSError as exc:
        raise UsageError(f"--plots {args.plots}: cannot write there ({exc.strerror})") from None
    print_history(table, points, summary_console(), args.every, rows)
    for path in plots:
        print(f"plot: {path}")
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    """Every folder is read and checked before the first is stored, so a bad one is found
    before anything is written; each run is then stored in a transaction of its own."""
    from harness import historydb

    if args.machine_name is not None:
        machine_name(args.machine_name)  # checked as run checks it
    where = historydb.target(args.history)
    historydb.check(where, write=True)
    read = [(folder, runfolder.read(folder, samples=False)) for folder in args.runs]
    for folder, files in read:
        runfolder.check_statistics(folder / "results.csv", files.results)
    for folder, files in read:  # results.csv as it is: what the run stored, or would have
        names = runfolder.case_names(files.results, files.parameters)
        saved = historydb.append(where, folder.resolve().name, files.metadata, files.results,
                                 list(names), folder, machine_name=args.machine_name)
        said = "stored as" if saved.new else "already stored as"
        print(f"{folder}: {said} {saved.run_id}")
    return 0


def cmd_fleet_report(args: argparse.Namespace) -> int:
    from harness import historydb

    threshold = _threshold(args.threshold)
    where = historydb.target(args.history)
    historydb.check(where)
    from harness.fleet import write_fleet_report

    machines, cases = write_fleet_report(where, args.out, history_filters(args), threshold)
    print(f"wrote {args.out / 'index.html'}: {machines} machine{'s' * (machines != 1)}, "
          f"{cases} case{'s' * (cases != 1)}")
    return 0
