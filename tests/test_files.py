"""Atomic writes: the temporary sibling a killed writer leaves is removed by the next writer of the same target."""

import os
import socket
import subprocess
import sys

import pytest

from gancls.files import atomic_path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "killed-before-the-marker"])
def test_next_writer_removes_a_dead_writers_temporary(tmp_path, marked):
    target = tmp_path / "birds.h5"
    left = tmp_path / f".birds.h5.{dead_pid()}@{socket.gethostname()}.abc123"
    left.mkdir()
    if marked:
        (left / ".gitignore").write_text("*\n")
        (left / "birds.h5").write_bytes(b"half")
    with atomic_path(target) as work:
        work.write_text("whole")
    assert target.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds.h5"]


def test_live_writers_and_other_files_are_left_alone(tmp_path):
    target = tmp_path / "birds.h5"
    live = tmp_path / f".birds.h5.{os.getpid()}@{socket.gethostname()}.abc123"
    other_host = tmp_path / f".birds.h5.{dead_pid()}@another-host.abc123"
    unmarked_full = tmp_path / f".birds.h5.{dead_pid()}@{socket.gethostname()}.def456"
    for d in (live, other_host, unmarked_full):
        d.mkdir()
        (d / "birds.h5").write_bytes(b"half")
    (live / ".gitignore").write_text("*\n")
    (other_host / ".gitignore").write_text("*\n")
    with atomic_path(target) as work:
        work.write_text("whole")
    assert live.is_dir() and other_host.is_dir() and unmarked_full.is_dir()  # not provably ours and dead: kept
    assert target.read_text() == "whole"
