"""gancls.runs.worktree: what a killed run left in its worktree is stopped before the worktree goes; and a
stage run in another checkout (a worktree, a DVC experiment's folder) runs that checkout's code."""

import shutil
import subprocess
import sys

import yaml

from gancls.runs.worktree import kill_processes_in, processes_in

from conftest import ROOT, sh


def test_each_stage_runs_the_code_of_the_checkout_it_runs_in(tmp_path):
    """The scheduled flow's worktree and a queued DVC experiment (.dvc/tmp/exps/...) run the stages in
    another folder than the one the venv's editable install points at.  Each stage's command imports
    gancls from the src/ of the folder it runs in, so the code DVC hashed as the stage's dependency is the
    code that runs (without it, a sweep queued before an edit of src/ ran the edited code)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert {s["cmd"].partition("gancls ")[0] for s in stages.values()} == {"PYTHONPATH=src "}
    shutil.copytree(ROOT / "src/gancls", tmp_path / "src/gancls", ignore=shutil.ignore_patterns("__pycache__"))
    init = tmp_path / "src/gancls/__init__.py"
    init.write_text(init.read_text() + "\nprint('gancls from', __file__)\n")
    out = sh(["sh", "-c", stages["validate"]["cmd"].replace(" validate", " --help")], tmp_path).stdout
    assert f"gancls from {init}" in out, out
    assert "gancls from" not in sh(["sh", "-c", "gancls --help"], tmp_path).stdout  # the install's own code


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
