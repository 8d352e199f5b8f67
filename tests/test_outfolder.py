"""Run folders under concurrency: claimed up front, never lost, never half there."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from harness import historydb, outfolder
from harness.columns import HISTORY_STATS
from harness.errors import UsageError
from harness.ipcnames import stage_record
from harness.names import new_run_prefix


@pytest.fixture
def other_writer(tmp_path: Path) -> Iterator[Path]:
    """A live process's stage for ``tmp_path/out``, as another run leaves it while it runs."""
    child = subprocess.Popen(["sleep", "60"])
    stage = tmp_path / f".out.partial-{child.pid}"
    stage.mkdir()
    try:
        yield tmp_path / "out"
    finally:
        child.kill()
        child.wait()


def test_a_second_run_into_the_same_out_is_refused(other_writer):
    prefix = new_run_prefix()
    with pytest.raises(UsageError, match="is writing there"), \
            outfolder.staged_folder(other_writer, prefix):
        pytest.fail("the block must not run")
    assert not other_writer.exists()
    assert not list(other_writer.parent.glob(".out.partial-*[!0-9]*"))
    assert len(list(other_writer.parent.glob(".out.partial-*"))) == 1  # only the other's
    assert not stage_record(prefix).exists()


def test_a_default_name_in_use_gets_the_pid(other_writer, tmp_path):
    assert outfolder.free_name(other_writer) != other_writer
    assert outfolder.free_name(tmp_path / "free") == tmp_path / "free"


def test_a_finished_run_is_never_lost_to_a_filled_out(tmp_path):
    out = tmp_path / "out"
    with outfolder.staged_folder(out, new_run_prefix()) as staging:
        (staging.path / "results.csv").write_text("x\n")
        out.mkdir()
        (out / "someone-elses.txt").write_text("theirs")  # filled while we measured
    assert staging.out == tmp_path / "out-2"
    assert (staging.out / "results.csv").read_text() == "x\n"
    assert [p.name for p in out.iterdir()] == ["someone-elses.txt"]
    assert "the run is in" in staging.notes[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out-2"]


def test_an_empty_out_folder_is_filled_and_a_failed_block_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError), outfolder.staged_folder(out, new_run_prefix()) as staging:
        (staging.path / "half.csv").write_text("x")
        raise RuntimeError("a crash mid-run")
    assert list(tmp_path.iterdir()) == [out] and list(out.iterdir()) == []
    with outfolder.staged_folder(out, new_run_prefix()) as staging:
        (staging.path / "whole.csv").write_text("x")
    assert staging.out == out and [p.name for p in out.iterdir()] == ["whole.csv"]


def test_two_runs_of_one_basename_keep_their_own_history_rows(tmp_path):
    where = historydb.target(tmp_path / "h.sqlite")
    results = pd.DataFrame({"status": ["ok"], **{c: [1] for c in HISTORY_STATS}})
    first = historydb.append(where, "run", {"started": "1"}, results, ["a"],
                             tmp_path / "d1" / "run")
    second = historydb.append(where, "run", {"started": "2"}, results.assign(median=2), ["a"],
                              tmp_path / "d2" / "run")
    assert (first.run_id, second.run_id) == ("run", "run-2")
    table = historydb.series(where)
    assert list(table.run_id) == ["run", "run-2"] and list(table["median"]) == [1, 2]
