"""Outputs are written atomically, and only to a regular file or a new path (#28 item 3)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragd_train.errors import InputError
from ragd_train.jsonl_io import write_json, write_jsonl

RECORDS = [{"query": "q", "positive": "p"}]


def _targets(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    kept = tmp_path / "kept.json"
    kept.write_text("mine\n")
    link = tmp_path / "link.json"
    link.symlink_to(kept)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    # A device node of our own (the null device's numbers), never /dev/null itself: the code
    # before the fix replaced the target, and /dev/null replaced by a file breaks the machine.
    device = tmp_path / "null.json"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        device = None  # type: ignore[assignment]
    return {
        "symlink": (link, "a symlink"),
        "fifo": (fifo, "a named pipe"),
        "device": (device, "a device"),
        "folder": (folder, "a folder"),
    }


@pytest.mark.parametrize("kind", ["symlink", "fifo", "device", "folder"])
def test_an_output_that_is_not_a_regular_file_is_refused_and_left_alone(tmp_path: Path, kind: str) -> None:
    path, what = _targets(tmp_path)[kind]
    if path is None:
        pytest.skip("making a device node needs root")
    for write in (lambda: write_jsonl(path, RECORDS), lambda: write_json(path, {"x": 1})):
        with pytest.raises(InputError) as err:
            write()
        assert str(err.value) == (
            f"{path}: is {what}; outputs are written only to a regular file or a new path"
        )
    assert (tmp_path / "kept.json").read_text() == "mine\n"
    assert (tmp_path / "link.json").is_symlink() and (kind != "device" or path.is_char_device())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    write_jsonl(tmp_path / "kept.json", RECORDS)  # a regular file is replaced, as before
    assert json.loads((tmp_path / "kept.json").read_text()) == RECORDS


def test_generate_data_refuses_a_symlink_output_before_running(tmp_path: Path) -> None:
    from ragd_train.cli import main

    target = tmp_path / "target.json"
    target.write_text("mine\n")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    result = CliRunner().invoke(
        main, ["train", "generate-data", "--output", str(link), "--workspace", str(tmp_path / "ws")]
    )
    assert result.exit_code != 0
    assert f"{link}: is a symlink; outputs are written only to a regular file or a new path" in result.output
    assert link.is_symlink() and target.read_text() == "mine\n"
    assert not (tmp_path / "ws").exists(), "the workflow ran for an output that was then refused"
