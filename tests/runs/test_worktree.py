"""gancls.runs.worktree: what a killed run left in its worktree is stopped before the worktree goes."""

import subprocess
import sys

from gancls.runs.worktree import kill_processes_in, processes_in


def test_processes_working_in_a_folder_are_killed_and_others_left(tmp_path):
    inside, outside = tmp_path / "runs" / "nightly-killed", tmp_path / "other"
    (inside / "sub").mkdir(parents=True)
    outside.mkdir()
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    # in their own session, as a run's stages are: they outlive the run that started them
    orphans = [subprocess.Popen(sleep, cwd=d, start_new_session=True) for d in (inside, inside / "sub")]
    bystander = subprocess.Popen(sleep, cwd=outside, start_new_session=True)
    try:
        assert sorted(processes_in(tmp_path / "runs")) == sorted(p.pid for p in orphans)
        assert sorted(kill_processes_in(tmp_path / "runs")) == sorted(p.pid for p in orphans)
        assert [p.wait(timeout=10) for p in orphans] == [-9, -9]
        assert processes_in(tmp_path / "runs") == [] and bystander.poll() is None
        assert kill_processes_in(tmp_path / "runs") == []
    finally:
        for p in [*orphans, bystander]:
            p.kill()
            p.wait()
