"""fnl_core.outputs: the shared check of a command's --out (issue #24, items 1-2)."""

from __future__ import annotations

import pytest

from fnl_core.outputs import OutputError, check_output_dir, check_output_file


def test_folder_is_created_and_other_files_survive_overwrite(tmp_path):
    out = tmp_path / "a" / "b"
    assert check_output_dir(out, outputs=("results.json",)) == out and not out.exists()
    out.mkdir(parents=True)
    (out / "results.json").write_text("old")
    (out / "x_iuv").mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="--overwrite"):
        check_output_dir(out, outputs=("results.json", "*_iuv"))
    check_output_dir(out, outputs=("results.json", "*_iuv"), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_bad_paths_are_one_line_errors(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    for call in (
        lambda: check_output_dir(blocker),
        lambda: check_output_dir(blocker / "x"),
        lambda: check_output_file(blocker / "x" / "m.json"),
        lambda: check_output_file(tmp_path),
    ):
        with pytest.raises(OutputError) as info:
            call()
        assert "\n" not in str(info.value)


def test_existing_file_policy(tmp_path):
    target = tmp_path / "m.json"
    target.write_text("{}")
    check_output_file(target)  # None: written over
    check_output_file(target, overwrite=True)
    with pytest.raises(OutputError, match="--overwrite"):
        check_output_file(target, overwrite=False)
