"""Damaged and out-of-range input: one line naming what is wrong, exit 2, nothing changed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from harness import cli
from harness.runfolder import FORMAT_VERSION

from .helpers import TINY_SUITE, ipcbench, write_suite
from .test_compare import make_run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def replace_line(path: Path, line: int, old: str, new: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("".join(lines))


def with_value(path: Path, line: int, column: str, text: str) -> None:
    """Set one cell of a CSV file's ``line`` (the header is line 1) to ``text``."""
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    cells = lines[line - 1].rstrip("\n").split(",")
    cells[header.index(column)] = text
    lines[line - 1] = ",".join(cells) + "\n"
    path.write_text("".join(lines))


def with_metadata(folder: Path, **values: object) -> None:
    path = folder / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


# Each damage, and the words the one line must hold (the file, and where in it).
DAMAGES = {
    "nan value": (lambda f: with_value(f / "samples.csv", 5, "value", "nan"),
                  "samples.csv line 5: value is nan"),
    "inf value": (lambda f: with_value(f / "samples.csv", 3, "value", "inf"),
                  "samples.csv line 3: value is inf"),
    "text in a count": (lambda f: with_value(f / "samples.csv", 4, "payload_bytes", "abc"),
                        "samples.csv line 4: payload_bytes is 'abc', not a number"),
    "fraction in a count": (lambda f: with_value(f / "samples.csv", 6, "k", "1.5"),
                            "samples.csv line 6: k is 1.5, not a whole number >= 0"),
    "cut short": (lambda f: (f / "samples.csv").write_bytes(
        (f / "samples.csv").read_bytes()[:-7]), "samples.csv: cut short"),
    "binary": (lambda f: (f / "samples.csv").write_bytes(b"\xff\xfe\x00garbage\n"),
               "samples.csv: "),
    "no value column": (lambda f: (f / "samples.csv").write_text(
        "experiment,transport\nlatency,pipe\n"), "samples.csv: lacks column"),
    "metadata a list": (lambda f: (f / "metadata.json").write_text("[1, 2]"),
                        "metadata.json: not a JSON object"),
    "metadata without machine": (lambda f: (f / "metadata.json").write_text('{"x": 1}'),
                                 "metadata.json: needs a \"machine\""),
    "unknown status": (lambda f: with_value(f / "results.csv", 2, "status", "great"),
                       "results.csv line 2: status is 'great'"),
    "future format": (lambda f: with_metadata(f, format_version=FORMAT_VERSION + 1),
                      f"written in run folder format {FORMAT_VERSION + 1} by a newer ipcbench"),
    "format not a number": (lambda f: with_metadata(f, format_version="2"),
                            "\"format_version\" is '2', not a format number"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_compare_names_the_damaged_file_and_line(tmp_path, damage):
    base = make_run(tmp_path / "a", 1)
    new = make_run(tmp_path / "b", 2)
    spoil, words = DAMAGES[damage]
    spoil(new)
    before = snapshot(tmp_path / "b")
    done = ipcbench("compare", str(base), str(new))
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert snapshot(tmp_path / "b") == before


@pytest.mark.parametrize(("command", "damage"), [
    (["fit"], "nan value"), (["report"], "cut short"), (["baseline", "save"], "unknown status"),
    (["export", "--out", "merged.csv"], "metadata without machine"),
    (["export", "--out", "merged.csv"], "unknown status"),
])
def test_every_reader_refuses_a_damaged_run_and_writes_nothing(tmp_path, command, damage):
    run = make_run(tmp_path / "run", 1)
    spoil, words = DAMAGES[damage]
    spoil(run)
    before = snapshot(run)
    args = [*command[:2], str(run), *command[2:]] if command[0] == "baseline" else \
        [command[0], str(run), *command[1:]]
    done = ipcbench(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no merged.csv, no results/


def test_export_refuses_a_results_column_it_would_add(tmp_path):
    run = make_run(tmp_path / "run", 1)
    replace_line(run / "results.csv", 1, "experiment", "run_id")
    done = ipcbench("export", str(run), "--out", str(tmp_path / "x.csv"))
    assert done.returncode == 2
    # The renamed column is either missing from the case columns or taken: both are named.
    assert "results.csv" in done.stderr and not (tmp_path / "x.csv").exists()


def foreign_database(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(b"not a database at all, just text " * 10)
    return path


@pytest.mark.parametrize(("make", "words"), [
    (lambda p: foreign_database(p / "h.sqlite"), "not an ipcbench history (it holds table "
                                                 "'invoices')"),
    (lambda p: p, "is a folder, not a SQLite file"),
    (lambda p: garbage(p / "h.sqlite"), "not a readable SQLite database"),
    (lambda p: p / "absent.sqlite", "no such database"),
])
def test_history_refuses_what_is_not_a_history(tmp_path, make, words):
    path = make(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    done = ipcbench("history", "--history", str(path), "--plots", str(tmp_path / "plots"))
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1
    assert (path.read_bytes() if path.is_file() else None) == before
    assert not (tmp_path / "plots").exists()


def test_an_empty_history_file_has_no_runs_and_stays_empty(tmp_path):
    path = tmp_path / "h.sqlite"
    path.touch()
    done = ipcbench("history", "--history", str(path), "--plots", str(tmp_path / "plots"))
    assert done.returncode == 2 and "no runs" in done.stderr, done.stderr
    assert path.read_bytes() == b""


def test_run_refuses_a_bad_history_before_measuring(tmp_path):
    history = foreign_database(tmp_path / "h.sqlite")
    suite = write_suite(tmp_path, TINY_SUITE)
    done = ipcbench("run", "--suite", str(suite), "--out", str(tmp_path / "out"),
                    "--history", str(history), timeout=60)
    assert done.returncode == 2 and "not an ipcbench history" in done.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(("settings", "words"), [
    ("workers = 2000", "settings.workers must be between 1 and 1024"),
    ("batches = 0", "settings.batches must be between 1 and 10000"),
    ("timeout_s = 600.0\nbatches = 10000\nwarmups = 10000", "more than the limit"),
])
def test_suite_limits(tmp_path, settings, words):
    keys = {line.split(" =")[0] for line in settings.splitlines()}
    lines = [line for line in TINY_SUITE.splitlines() if line.split(" =")[0] not in keys]
    at = lines.index("[settings]") + 1
    lines[at:at] = settings.splitlines()
    suite = write_suite(tmp_path, "\n".join(lines) + "\n")
    done = ipcbench("run", "--suite", str(suite), "--out", str(tmp_path / "out"), "--no-history")
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["attack-surface", "--f", "0.5", "--servers", "10000000", "--delta", "1", "--size", "10"],
     "more than the limit"),
    (["attack-surface", "--f", "0.5", "--servers", "1", "--delta", "1", "--size", "10",
      "--seed", "-1"], "--seed"),
    (["drift", "--change-rate", "nan", "--update-rate", "1", "--window", "1"], "give 0 or"),
    (["drift", "--change-rate", "1", "--update-rate", "1e300", "--window", "1"], "give 0 or"),
    (["drift", "--change-rate", "1", "--update-rate", "1", "--window", "1",
      "--simulate", "10000000000000"], "trials"),
])
def test_model_calculators_refuse_what_would_overflow(args, words):
    done = ipcbench("model", *args)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 or done.stderr.startswith("usage:")
    assert "Traceback" not in done.stderr


def test_staged_outputs_replace_nothing_when_the_analysis_fails(tmp_path):
    (tmp_path / "report.md").write_text("the old report")
    with pytest.raises(RuntimeError), cli.staged_outputs(tmp_path) as stage:
        (stage / "report.md").write_text("half of a new one")
        raise RuntimeError("a fit broke")
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
    assert (tmp_path / "report.md").read_text() == "the old report"
    with cli.staged_outputs(tmp_path) as stage:
        (stage / "report.md").write_text("the new report")
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
    assert (tmp_path / "report.md").read_text() == "the new report"


def test_cleanup_dry_run_lists_and_keeps(dead_runs_object):
    done = ipcbench("cleanup", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"would remove {dead_runs_object}" in done.stdout and dead_runs_object.exists()
    done = ipcbench("cleanup")
    assert done.returncode == 0 and f"removed {dead_runs_object}" in done.stdout
    assert not dead_runs_object.exists()


def test_cleanup_force_needs_all():
    done = ipcbench("cleanup", "--force")
    assert done.returncode == 2 and "give --all with it" in done.stderr


@pytest.mark.parametrize("threshold", ["nan", "-5", "0", "100"])
def test_history_threshold_is_checked_like_compare(tmp_path, threshold):
    history_path = foreign_database(tmp_path / "h.sqlite")
    for command in (["history", "--history", str(history_path)],
                    ["compare", str(tmp_path / "a"), str(tmp_path / "b")]):
        done = ipcbench(*command, "--threshold", threshold)
        assert done.returncode == 2, done.stderr
        assert "--threshold is a percentage between 0 and 100" in done.stderr
