"""Atomic outputs: all of a stage's outputs change together, or none does."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cifar10.atomic import atomic_outputs, json_text, remove_leftovers
from cifar10.errors import OutputError, PipelineError


def write_both(first: Path, second: Path, text: str) -> None:
    with atomic_outputs(first, second) as (first_temporary, second_temporary):
        first_temporary.write_text(text)
        second_temporary.mkdir()
        (second_temporary / "inside.txt").write_text(text)


def test_outputs_appear_together_and_replace_the_old_ones(tmp_path: Path) -> None:
    first, second = tmp_path / "reports" / "metrics.json", tmp_path / "figures"
    write_both(first, second, "old")
    write_both(first, second, "new")
    assert first.read_text() == "new"
    assert (second / "inside.txt").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["figures", "reports"]
    assert [path.name for path in first.parent.iterdir()] == ["metrics.json"]


def write_then_fail(first: Path, second: Path) -> None:
    with atomic_outputs(first, second) as (first_temporary, _):
        first_temporary.write_text("new")
        raise RuntimeError("disk full")


def test_an_error_while_writing_changes_nothing(tmp_path: Path) -> None:
    first, second = tmp_path / "metrics.json", tmp_path / "figures"
    write_both(first, second, "old")
    with pytest.raises(RuntimeError, match="disk full"):
        write_then_fail(first, second)
    assert first.read_text() == "old"
    assert (second / "inside.txt").read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["figures", "metrics.json"]


def interrupt_while_writing(target: Path) -> None:
    with atomic_outputs(target) as (temporary,):
        temporary.mkdir()
        raise KeyboardInterrupt


def test_ctrl_c_while_writing_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        interrupt_while_writing(tmp_path / "prepared")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_puts_every_old_output_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "metrics.json", tmp_path / "figures"
    write_both(first, second, "old")
    original_rename = Path.rename

    def failing_rename(self: Path, target: Path) -> Path:
        # The second output's new version cannot be moved in (after the first's was).
        if self.name.startswith(".figures.tmp-"):
            raise OSError(28, "No space left on device", str(target))
        return original_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="No space left"):
        write_both(first, second, "new")
    monkeypatch.undo()
    assert first.read_text() == "old"
    assert (second / "inside.txt").read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["figures", "metrics.json"]


def test_an_output_left_unwritten_is_an_error(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match=r"outputs were not written: .*second"),
        atomic_outputs(tmp_path / "first", tmp_path / "second") as (first, _),
    ):
        first.write_text("only one")
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_a_killed_run_are_removed_when_the_stage_runs_again(tmp_path: Path) -> None:
    target = tmp_path / "prepared"
    stale_folder = tmp_path / ".prepared.tmp-0a1b2c3d"
    stale_folder.mkdir()
    (stale_folder / "train_images.npy").write_bytes(b"half")
    stale_previous = tmp_path / ".prepared.old-9f8e7d6c"
    stale_previous.write_text("an old version moved aside")
    unrelated = tmp_path / ".prepared-notes"
    unrelated.write_text("not ours")
    assert sorted(path.name for path in remove_leftovers(target)) == sorted(
        [stale_folder.name, stale_previous.name]
    )
    assert [path.name for path in tmp_path.iterdir()] == [unrelated.name]


def test_an_output_named_twice_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="each output must be named once"),
        atomic_outputs(tmp_path / "same", tmp_path / "same"),
    ):
        pass


def test_a_failed_check_before_commit_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")

    def params_changed() -> None:
        raise PipelineError("params.yaml changed while the stage ran")

    with (
        pytest.raises(PipelineError, match="changed while the stage ran"),
        atomic_outputs(target, before_commit=params_changed) as (temporary,),
    ):
        temporary.write_text("new")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]


def test_a_run_still_writing_keeps_its_temporary_outputs(tmp_path: Path) -> None:
    target = tmp_path / "prepared"
    # Another run of the same stage, still going (this process): not a leftover. A
    # process id of pid_max or more is never given out: that run is over.
    in_progress = tmp_path / f".prepared.tmp-{os.getpid()}-0a1b2c3d"
    in_progress.mkdir()
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text())
    killed = tmp_path / f".prepared.tmp-{dead_pid}-4e5f6a7b"
    killed.mkdir()
    assert remove_leftovers(target) == [killed]
    with atomic_outputs(target) as (temporary,):
        temporary.mkdir()
    assert sorted(path.name for path in tmp_path.iterdir()) == [in_progress.name, "prepared"]


def test_reports_are_indented_json_ending_in_a_newline() -> None:
    assert json_text({"a": [1, 2]}) == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'


def test_a_full_disk_names_the_outputs_being_written_and_leaves_nothing(tmp_path: Path) -> None:
    first, second = tmp_path / "metrics.json", tmp_path / "figures"

    def full_disk() -> None:
        with atomic_outputs(first, second) as (staged, _):
            staged.write_text("{")
            # What write() or close() raises on a full disk: an errno, no file name.
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError) as caught:
        full_disk()
    assert str(caught.value) == (
        f"writing {first}, {second}: No space left on device; free space on that disk, "
        "then run again"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_naming_its_file_passes_through(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    with pytest.raises(OSError, match="Read-only") as caught, atomic_outputs(target):
        raise OSError(errno.EROFS, "Read-only file system", str(target))
    assert not isinstance(caught.value, OutputError)
