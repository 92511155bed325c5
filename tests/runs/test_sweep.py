"""gancls sweep and gancls compare: the sweep file checked before anything is queued, the statistics over
seeds, and a real sweep (2 settings x 2 seeds, DVC's queue) on a clone with tiny params: stopped by
SIGTERM in its second experiment, continued by the Prefect flow (flows/sweep.py; its first run killed by
SIGKILL mid-experiment, the next one going through), compared, and run again for nothing."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from gancls.config import ConfigError
from gancls.runs.compare import Experiment, difference, group_by_setting, table
from gancls.runs.process import worker_pids
from gancls.runs.sweep import Watchdog, clear_queue, load_sweep, orphans, plan, queue_status, start_workers

from conftest import ROOT, dvc, env, sh


@pytest.fixture
def workers_ended(tmp_path):
    """After the test, DVC's queue workers still alive in its clone (``project_clone``: tmp_path/repo) are
    killed: DVC ends an idle worker itself, but one outlived a test (the flow's continuation, seen after a
    CI run) and idled on the machine."""
    yield
    repo = str(tmp_path / "repo")
    for proc in Path("/proc").iterdir():
        try:
            mine = proc.name.isdigit() and os.readlink(proc / "cwd").startswith(repo)
            if mine and b"queue-worker" in (proc / "cmdline").read_bytes():
                os.killpg(os.getpgid(int(proc.name)), signal.SIGKILL)
        except OSError:  # gone meanwhile, or not ours to read
            continue


GOOD = {
    "name": "lr",
    "baseline": "default",
    "seeds": [0, 1],
    "jobs": 1,
    "settings": {"default": [], "fast": ["train.lr=0.001"]},
}


def write(tmp_path, data) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    "change, says",
    [
        ({"baseline": "nope"}, "baseline 'nope' is not one of the settings"),
        ({"name": "my sweep"}, "name: String should match pattern"),
        ({"settings": {"default": [], "bad-name": []}}, "setting name 'bad-name'"),
        ({"settings": {"default": ["seed=3"]}}, "sets seed"),
        ({"seeds": [0, 0]}, "each seed once"),
        ({"jobs": 0}, "jobs: Input should be greater than or equal to 1"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_it(tmp_path, change, says):
    with pytest.raises(ConfigError, match=says) as info:
        load_sweep(write(tmp_path, {**GOOD, **change}))
    assert "\n" not in str(info.value) and "sweep.yaml" in str(info.value)


def test_every_setting_is_checked_against_the_schema_before_anything_runs(tmp_path):
    spec = load_sweep(write(tmp_path, GOOD))
    names = [p.name for p in plan(spec, ROOT / "params.yaml")]
    assert names == ["lr-default-s0", "lr-default-s1", "lr-fast-s0", "lr-fast-s1"]
    bad = load_sweep(write(tmp_path, {**GOOD, "settings": {"default": [], "typo": ["train.lrr=1"]}}))
    with pytest.raises(ConfigError, match="setting typo: .*train.lrr"):
        plan(bad, ROOT / "params.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "configs/sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_each_committed_sweep_file_plans_against_params_yaml(path):
    spec = load_sweep(path)
    planned = plan(spec, ROOT / "params.yaml")
    assert len(planned) == len(spec.settings) * len(spec.seeds)
    assert all(p.params["seed"] == p.seed for p in planned)


def test_the_interval_holds_zero_for_seed_noise_and_not_for_a_real_shift():
    noise = difference([0.50, 0.54, 0.49], [0.50, 0.55, 0.50])
    assert noise[1] < 0 < noise[2]
    shift = difference([0.70, 0.74, 0.69], [0.50, 0.55, 0.50])
    assert shift[1] > 0 and math.isclose(shift[0], 0.1933, abs_tol=1e-3)
    assert math.isnan(difference([0.7], [0.5, 0.6])[1])  # one seed: no interval


def test_queued_running_and_failed_experiments_are_not_read_as_finished(monkeypatch):
    """`dvc exp show` lists a queued experiment with its baseline's metrics: not its own."""
    from types import SimpleNamespace

    from gancls.runs import compare

    def rev(name):
        return {"name": name, "error": None, "data": {"params": {}, "metrics": {"m.json": {"data": {"fid": 1.0}}}}}

    shown = [
        {
            "experiments": [
                {"name": n, "executor": {"state": state} if state else None, "revs": [rev(n)]}
                for n, state in [
                    ("done", "success"),
                    ("saved", None),
                    ("q", "queued"),
                    ("r", "running"),
                    ("f", "failed"),
                ]
            ]
        }
    ]
    monkeypatch.setattr(compare, "dvc", lambda *a, **k: SimpleNamespace(stdout=json.dumps(shown)))
    assert sorted(compare.experiments(".")) == ["done", "saved"]


def test_settings_group_by_params_without_the_seed_and_are_compared_with_the_baseline():
    def exp(name, lr, seed, acc):
        return Experiment(name, {"seed": seed, "train": {"lr": lr}}, {"text_match.accuracy": acc})

    exps = [exp("a0", 1, 0, 0.5), exp("b0", 2, 0, 0.8), exp("a1", 1, 1, 0.52), exp("b1", 2, 1, 0.81)]
    groups = group_by_setting(exps)
    assert {k: [e.name for e in v] for k, v in groups.items()} == {"a0": ["a0", "a1"], "b0": ["b0", "b1"]}
    rows = {r["setting"]: r for r in table(groups, "a0")}
    assert rows["a0"]["n"] == 2 and "diff" not in rows["a0"]
    assert rows["b0"]["beyond_seed_noise"] == "yes" and math.isclose(rows["b0"]["diff"], 0.295)


@pytest.mark.slow
def test_sweep_stopped_continues_compares_and_reruns_nothing(project_clone, shared_dvc_cache, workers_ended):
    repo = project_clone(cache=shared_dvc_cache)
    dvc("repro", cwd=repo)  # the workspace's own run (it also fills the run cache the experiments restore from)
    sweep = repo / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump({**GOOD, "name": "t", "baseline": "a", "settings": {"a": [], "b": ["train.lr=0.001"]}})
    )
    kept = ("params.yaml", "dvc.lock", "metrics/scores.json", "build/model/generator.pt", "build/prepared/birds.h5")
    before = {f: (repo / f).read_bytes() for f in kept}
    tracked = sh(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout
    cmd = [sys.executable, "-m", "gancls.cli", "sweep", "sweep.yaml"]

    proc = subprocess.Popen(cmd, cwd=repo, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if queue_status(repo).get("t-a-s1") == "Running":  # jobs 1: the second experiment
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[0]
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "stopped" in out and "rerun to continue" in out, out
    assert not any(n.startswith("t-") for n in queue_status(repo)), "the stopped sweep left queue entries"
    assert "t-a-s0" in dvc("exp", "list", "--name-only", cwd=repo).stdout

    # continued by the Prefect flow (flows/sweep.py, the `sweep` deployment's; here on a temporary server of
    # its own), with jobs 2: how it runs, not what: nothing redone.  Its first run is killed (SIGKILL, its
    # process group: the flow and its Prefect server, as a crashed serving process) once an experiment
    # runs: DVC's workers go on with what it queued; the next run clears that and goes through.
    sweep.write_text(sweep.read_text().replace("jobs: 1", "jobs: 2"))
    flow_env = dict(env(), PREFECT_HOME=str(repo.parent / "prefect-home"))
    flow_env.pop("PREFECT_API_URL", None)
    flow = [sys.executable, "-m", "flows.sweep", "sweep.yaml"]
    with (repo.parent / "killed-flow.log").open("w") as log:
        first = subprocess.Popen(
            flow, cwd=repo, env=flow_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if "Running" in queue_status(repo).values():
            break
        time.sleep(0.5)
    assert first.poll() is None, (repo.parent / "killed-flow.log").read_text()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    left = {n: s for n, s in queue_status(repo).items() if n.startswith("t-")}
    assert "Running" in left.values(), left  # what the killed run left on DVC's queue
    try:  # within the test's own limit: its output, not pytest's timeout, says what it waited on
        cont = subprocess.run(flow, cwd=repo, env=flow_env, capture_output=True, text=True, timeout=540)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"the continued flow hung; DVC's queue: {queue_status(repo)}\n{exc.stdout}{exc.stderr}"
        ) from None
    said = cont.stdout + cont.stderr
    assert cont.returncode == 0, said
    assert "4 experiments, 1 already done, 3 to run" in said, said
    assert all(f"t-{n}: success" in said for n in ("a-s1", "b-s0", "b-s1")), said  # a task per experiment
    listed = dvc("exp", "list", "--name-only", cwd=repo).stdout.split()
    assert sorted(n for n in listed if n.startswith("t-")) == ["t-a-s0", "t-a-s1", "t-b-s0", "t-b-s1"]
    shown = dvc("exp", "show", "--csv", cwd=repo).stdout
    assert all(n in shown for n in ("t-a-s0", "t-a-s1", "t-b-s0", "t-b-s1"))
    out_dir = repo / "reports/sweeps/t"
    with (out_dir / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    fid = {r["setting"]: r for r in rows if r["metric"] == "fid"}
    assert fid["a"]["n"] == "2" and fid["b"]["n"] == "2" and fid["b"]["ci_low"] != ""
    md = (out_dir / "comparison.md").read_text()
    assert "| FID |" in md and "t-b-s1" in md and "FID floor" in md
    sheet = Image.open(out_dir / "sheet.png")
    assert sheet.width > 2 * 4 * 64 and Image.open(out_dir / "tradeoff.png").size[0] > 500
    assert {f: (repo / f).read_bytes() for f in before} == before
    assert sh(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout == tracked

    mine = sh(
        [
            sys.executable,
            "-m",
            "gancls.cli",
            "compare",
            "t-a-s0",
            "t-b-s0",
            "t-a-s1",
            "t-b-s1",
            "--out",
            "cmp",
            "--no-sheet",
        ],
        repo,
    )
    assert "cmp/comparison.md" in mine.stdout
    by_params = (repo / "cmp/comparison.md").read_text()  # settings found by their params: named by a first run
    assert "**t-a-s0**: t-a-s0, t-a-s1" in by_params and "**t-b-s0**: t-b-s0, t-b-s1" in by_params

    again = sh(cmd, repo)
    assert "4 experiments, 4 already done, 0 to run" in again.stdout, again.stdout
    assert not any(n.startswith("t-") for n in queue_status(repo))
    assert not [p for p in (repo / ".dvc/tmp/exps").glob("tmp*") if p.is_dir()], "DVC's temporary copies left"


@pytest.mark.slow
def test_an_entry_no_worker_will_finish_is_failed_and_queued_ones_get_workers(
    project_clone, shared_dvc_cache, workers_ended
):
    """What a sweep waits on when DVC's worker is gone (killed with its experiment's process group, as a
    forced `dvc queue kill` or a crashed machine does): DVC still lists the experiment as running, for
    ever; the watchdog marks it failed. One queued with no worker alive gets one."""
    repo = project_clone(cache=shared_dvc_cache)
    dvc("exp", "run", "--queue", "-n", "w-s0", cwd=repo)
    start_workers(repo, 1)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and queue_status(repo).get("w-s0") != "Running":
        time.sleep(0.5)
    assert queue_status(repo).get("w-s0") == "Running", queue_status(repo)
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        pids = worker_pids(r.experiments.celery_queue)
    assert pids and orphans(repo, ["w-s0"]) == {}  # a live worker: nothing to end
    for pid in pids:  # the worker, its experiment and the stages it runs: one process group
        assert os.getpgid(pid) != os.getpgrp()
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    time.sleep(3)
    assert queue_status(repo).get("w-s0") == "Running"  # DVC's view: running, with nobody to end it
    assert orphans(repo, ["w-s0"]) == {"w-s0": "Running"}

    watchdog = Watchdog(repo, jobs=1, every=0)
    assert watchdog(["w-s0"]) == []  # seen once: it may be a worker that is starting
    said = watchdog(["w-s0"])
    assert said and "w-s0" in said[0] and "marked failed" in said[0], said
    assert queue_status(repo).get("w-s0") == "Failed"
    assert not [p for p in (repo / ".dvc/tmp/exps").glob("tmp*") if p.is_dir()], "its temporary copy left"

    dvc("exp", "run", "--queue", "-n", "w-s1", cwd=repo)  # queued, no worker alive
    assert orphans(repo, ["w-s1"]) == {"w-s1": "Queued"}
    watchdog(["w-s1"])
    assert "workers started again" in " ".join(watchdog(["w-s1"]))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and orphans(repo, ["w-s1"]):  # until a worker answers
        time.sleep(0.5)
    assert not orphans(repo, ["w-s1"]) and queue_status(repo).get("w-s1") in ("Queued", "Running")
    clear_queue(repo, ["w-s0", "w-s1"])
    assert not any(n.startswith("w-") for n in queue_status(repo)), queue_status(repo)
