"""gancls.runs.scheduling: DVC status and metrics diff read into plain data, the regression rule, the run lock."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from gancls.config import RegressionRule
from gancls.runs import scheduling

from conftest import sh

STEPS = {
    "validate": ["make-sample", "validate"],
    "prepare": ["prepare"],
    "references": ["train-scorer", "real-features"],
    "train": ["train"],
    "generate": ["generate"],
    "evaluate": ["evaluate"],
}


def test_stale_stages_and_the_steps_they_rerun():
    status = {
        "train": [{"changed deps": {"params.yaml": "modified"}}, {"changed outs": {"build/model": "deleted"}}],
        "dvc.yaml:evaluate": ["always changed"],
    }
    stale = scheduling.stale_stages(status)
    assert stale == {"train": ["params.yaml (modified)", "build/model (deleted)"], "evaluate": ["always changed"]}
    assert scheduling.steps_to_run(stale, STEPS) == ["train", "generate", "evaluate"]
    assert scheduling.steps_to_run({"evaluate": ["x"]}, STEPS) == ["evaluate"]
    assert scheduling.steps_to_run({}, STEPS) == []
    assert scheduling.steps_to_run({"data.dvc": ["data (modified)"], "evaluate": ["x"]}, STEPS) == list(STEPS)


def test_tracked_data_names_the_missing_outputs_of_each_dvc_file(tmp_path):
    (tmp_path / ".dvc").mkdir()  # DVC's own folder is no .dvc file
    (tmp_path / "data.dvc").write_text("outs:\n- path: data\n  md5:\n")
    (tmp_path / "extra.dvc").write_text("outs:\n- path: extra.txt\n  md5: 0123\n")
    (tmp_path / "extra.txt").write_text("here")
    assert scheduling.tracked_data(tmp_path) == {
        "data.dvc": {"missing": ["data"], "hashed": False},
        "extra.dvc": {"missing": [], "hashed": True},
    }
    (tmp_path / "data").mkdir()
    assert scheduling.tracked_data(tmp_path)["data.dvc"] == {"missing": [], "hashed": False}


def test_regression_rules_judge_the_metrics_diff():
    diff = {
        "metrics/scores.json": {
            "fid": {"old": 50.0, "new": 80.0, "diff": 30.0},
            "text_match.accuracy": {"old": 0.40, "new": 0.37, "diff": -0.03},
            "kid_mean": {"old": None, "new": 0.1},
            "feature_extractor.name": {"old": "a", "new": "a"},
        }
    }
    rows = scheduling.diff_rows(diff)
    assert [r["metric"] for r in rows] == ["fid", "kid_mean", "text_match.accuracy"]
    rules = {
        "fid": RegressionRule(max_rise=25.0),
        "text_match.accuracy": RegressionRule(max_drop=0.05),
        "kid_mean": RegressionRule(max_rise=0.0),
    }
    found = scheduling.regressions(rows, rules)
    assert len(found) == 1 and found[0].startswith("fid: 50 -> 80, rose by 30")
    assert scheduling.regressions(rows, {"text_match.accuracy": RegressionRule(max_drop=0.01)})[0].startswith(
        "text_match.accuracy: 0.4 -> 0.37"
    )
    md = scheduling.summary_markdown(
        experiment="nightly-1",
        baseline="HEAD",
        rows=rows,
        failed=found,
        ran=["evaluate"],
        changes={"evaluate": ["params.yaml (modified)"]},
        validation=None,
        grids={"g": "a.png"},
    )
    assert "**REGRESSION** against `HEAD`" in md and "| metrics/scores.json | fid | 50 | 80 | 30 |" in md


def test_run_lock_refuses_a_second_holder_with_one_line(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from gancls.runs.scheduling import run_lock\n"
                f"with run_lock({str(tmp_path)!r}, owner='flow run first'):\n"
                "    print('held', flush=True); time.sleep(30)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            scheduling.RunRefused, match=r"another gancls scheduled run \(pid \d+, flow run first\) holds "
        ):
            with scheduling.run_lock(tmp_path, wait=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    with scheduling.run_lock(tmp_path) as path:  # released when its holder died
        assert path.is_file()


def test_a_worktree_left_locked_by_an_interrupted_add_is_removed(tmp_path):
    """A timeout that stops `git worktree add` half-way leaves the worktree locked ("initializing"):
    the flow's clean-up still removes it, with or without its folder."""
    from gancls.runs.worktree import remove

    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (
        ["init", "-q"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
    ):
        sh(["git", *cmd], repo)
    for keep_folder in (True, False):
        worktree = tmp_path / "run"
        sh(
            ["git", "worktree", "add", "-q", "--detach", "--lock", "--reason", "initializing", str(worktree), "HEAD"],
            repo,
        )
        if not keep_folder:
            shutil.rmtree(worktree)
        remove(str(repo), str(worktree))
        assert sh(["git", "worktree", "list", "--porcelain"], repo).stdout.count("worktree ") == 1
        assert not worktree.exists()


def test_live_epoch_is_the_epoch_dvclive_last_wrote(tmp_path):
    """The training progress artifact's epoch: DVCLive's summary as `gancls train` writes it (the step set
    to the 1-based epoch, then next_step) holds the epoch just completed; an older summary is not read."""
    from dvclive import Live

    started = time.time() - 1
    live = Live(str(tmp_path / "live"), save_dvc_exp=False, dvcyaml=False)
    summary = tmp_path / "live" / "metrics.json"
    assert scheduling.live_epoch(summary, started) is None  # nothing written yet
    for epoch in (1, 2, 3):
        live.step = epoch  # as gancls.training.run_record.RunRecord.epoch
        live.log_metric("d_loss", 1.0 / epoch)
        live.next_step()
        assert scheduling.live_epoch(summary, started) == epoch
    live.end()
    assert scheduling.live_epoch(summary, started) == 3
    assert scheduling.live_epoch(summary, time.time() + 60) is None  # written before this run started


def test_stream_passes_lines_as_they_come_and_stops_the_group_when_interrupted(tmp_path):
    """``gancls.runs.process.stream``: each non-blank line (``\\r`` ends one too) in order, ticks while it runs, the
    exit status; an exception in the caller stops the command and the processes it started."""
    from gancls.runs import process

    script = (
        "import sys, time\n"
        "print('first', flush=True)\n"
        "sys.stdout.write('50%\\r100%\\n\\n'); sys.stdout.flush()\n"
        "time.sleep(0.6)\n"
        "print('last (no newline)', end='')\n"
        "sys.exit(3)\n"
    )
    lines, ticks = [], []
    code = process.stream([sys.executable, "-c", script], tmp_path, lines.append, lambda: ticks.append(1), 0.1)
    assert code == 3 and lines == ["first", "50%", "100%", "last (no newline)"] and ticks

    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(300)\n"
    )

    def interrupt(line: str) -> None:
        raise TimeoutError("task timed out")  # as a Prefect task timeout raises into the task's thread

    with pytest.raises(TimeoutError):
        process.stream([sys.executable, "-c", script], tmp_path, interrupt, stop_wait=5)
    child = int(pid_file.read_text())
    for _ in range(50):  # reaped by init once its parent is gone
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the command's child outlived the interruption")
