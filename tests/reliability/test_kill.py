"""SIGKILL of `gancls prepare`, `gancls train` and `gancls evaluate` at seeded random moments and mid-write,
then two `dvc repro` at once, then a search for a secret of the environment in everything the runs left.

One tiny git + DVC repository serves the whole module (the tests run in file order and build on each
other): each stage is first run once to completion and timed, its outputs then removed as `dvc repro`
would; then it is killed 3 times (twice at seeded random fractions of that measured duration, so that as
many kills land on a fast machine as on a slow one, and once as soon as the temporary sibling of an output
appears, with the move into place held back by tests/reliability/hooks), and after every kill the
stage's final outputs must be absent or complete and `dvc status` must not call the stage up to date;
then `dvc repro` completes it.  The subprocesses carry a fake secret in their environment.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from dvc.repo import Repo as DvcRepo
from PIL import Image

from gancls.data.prepared import read_prepared
from gancls.models.generator_file import load_generator
from gancls.training.checkpoint import clear_checkpoints, load_checkpoint

from conftest import TINY, clone_project, env

pytestmark = pytest.mark.slow  # the tiny pipeline, killed and reproduced

HOOKS = Path(__file__).parent / "hooks"
SECRET = "sk-test-123-do-not-log"
KILLS = {"tried": 0, "survived": 0, "finished first": 0}
# The two random moments of a stage: seeded fractions of its measured clean run, one from each half of this
# window.  It starts near 0 rather than after the interpreter's start-up: nothing is written while the
# stage imports its libraries, and a kill there is still a valid kill, but that start-up is a different
# share of the run on every machine (prepare writes its HDF5 file from about a tenth of its run on, evaluate
# computes for most of its run and writes only at its end), so the window covers start-up and working time
# alike.  It ends at 0.85 of the clean run, short of the final moves into place (the mid-write kill's
# moment), so that a run somewhat quicker than the measured one (cores shared with other work) is still
# killed rather than finishing first.
WINDOW = (0.05, 0.85)


def run_env(pause: float | None = None, names: list[str] | None = None) -> dict:
    e = env()
    e["AWS_SECRET_ACCESS_KEY"] = SECRET
    # One torch (OpenMP) thread, as in the unit tests' one_thread fixtures: on cores shared with other work,
    # two threads wait on each other at every parallel step and the same run takes 5 s or 60 s; the random
    # moments are fractions of a measured run, so a run must take about as long each time.
    e["OMP_NUM_THREADS"] = "1"
    if pause:
        e["PYTHONPATH"] = os.pathsep.join([str(HOOKS), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        e["GANCLS_TEST_WRITE_PAUSE"] = str(pause)
        e["GANCLS_TEST_WRITE_PAUSE_NAMES"] = ",".join(names or ["*"])
    return e


class Repo:
    def __init__(self, root: Path):
        self.root, self.logs = root, []

    def run(self, *cmd, check=True, timeout=600) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), cwd=self.root, env=run_env(), capture_output=True, text=True, timeout=timeout)
        self.logs += [proc.stdout, proc.stderr]
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args, check=True):
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def not_up_to_date(self, stage: str) -> bool:
        return stage in json.loads(self.dvc("status", "--json", stage).stdout or "{}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """clone_project() of tests/conftest.py, module-wide, with make-sample and validate reproduced."""
    r = Repo(clone_project(tmp_path_factory.mktemp("kill") / "repo"))
    r.dvc("repro", "validate")
    return r


def clean_run(r: Repo, stage: str, check) -> float:
    """Run `gancls <stage>` once to completion and return its wall-clock duration; then remove what
    `dvc repro` removes before it runs the stage (its outputs but the persistent ones), so that the kills
    start from the state they would otherwise find.  dvc.lock is not written by `gancls`, so the stage is
    still not up to date (asserted)."""
    with (r.root.parent / f"{stage}-clean.log").open("w") as log:
        t0 = time.monotonic()
        proc = subprocess.run(
            ["gancls", stage], cwd=r.root, stdout=log, stderr=subprocess.STDOUT, env=run_env(), timeout=600
        )
        duration = time.monotonic() - t0
    r.logs.append(Path(log.name).read_text())
    assert proc.returncode == 0, f"gancls {stage} failed ({proc.returncode}):\n{r.logs[-1]}"
    check()  # the checks accept a complete set of outputs
    with DvcRepo(str(r.root)) as dvc_repo:  # a target relative to the test's cwd would be this repository's
        (dvc_stage,) = dvc_repo.stage.collect(f"{r.root / 'dvc.yaml'}:{stage}")
        outs = [Path(o.fs_path) for o in dvc_stage.outs if not o.persist]
    assert outs and all(out.is_relative_to(r.root) for out in outs), outs
    for out in outs:
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink(missing_ok=True)
    assert r.not_up_to_date(stage), f"dvc status calls {stage} up to date after its outputs were removed"
    return duration


def kill_runs(r: Repo, stage: str, targets: list[str], check, fresh: Callable[[], None] | None = None) -> None:
    """Time a clean run of `gancls <stage>` (``clean_run``), then kill `gancls <stage>` 3 times: at two
    seeded random fractions of that duration (one from each half of WINDOW), then when a temporary sibling
    of one of ``targets`` (``.<target>.*``, made by files.atomic_path) appears.  ``check`` inspects the
    outputs; ``fresh``, if given, runs before the clean run and before each timed run, so that each does the
    work the measured run did (train: no resume from a checkpoint that an earlier kill left)."""
    temp_globs = [str(Path(t).parent / f".{Path(t).name}.*") for t in targets]
    if fresh:
        fresh()
    duration = clean_run(r, stage, check)
    rng = random.Random(f"kill-{stage}")
    lo, hi = WINDOW
    mid = (lo + hi) / 2  # one early, one late moment
    fractions = [rng.uniform(lo, mid), rng.uniform(mid, hi)]
    print(
        f"\n{stage}: clean run {duration:.1f}s; random moments at "
        + ", ".join(f"{f:.2f} of it ({f * duration:.1f}s)" for f in fractions)
    )
    moments = [("random", f * duration) for f in fractions] + [("mid-write", None)]
    for i, (what, delay) in enumerate(moments):
        if fresh and delay is not None:
            fresh()
        log = (r.root.parent / f"{stage}-{i}.log").open("w")
        stale = {p for g in temp_globs for p in r.root.glob(g)}  # left by earlier kills: not this writer's
        proc = subprocess.Popen(
            ["gancls", stage],
            cwd=r.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=run_env(pause=3.0 if what == "mid-write" else None, names=[Path(t).name for t in targets]),
            start_new_session=True,
        )
        t0, seen = time.monotonic(), None
        while proc.poll() is None and time.monotonic() - t0 < 300:
            if delay is not None and time.monotonic() - t0 >= delay:
                break
            if delay is None:
                seen = next((p for g in temp_globs for p in r.root.glob(g) if p not in stale), None)
                if seen:
                    break
            time.sleep(0.02)
        if proc.poll() is not None:  # it finished before the moment came: not a kill
            log.close()
            r.logs.append(Path(log.name).read_text())
            KILLS["finished first"] += 1
            took = f"{time.monotonic() - t0:.1f}s"
            print(f"{stage}: finished in {took}, before the {what} moment" + (f" ({delay:.1f}s)" if delay else ""))
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        KILLS["tried"] += 1
        r.logs.append(Path(log.name).read_text())
        at = f"{time.monotonic() - t0:.1f}s" + (f", {seen.relative_to(r.root)} present" if seen else "")
        check()  # raises if a final output is partial
        # a killed writer's temporary sibling is invisible to git (no accidental `git add` of a partial file)
        status = r.run("git", "status", "--porcelain", "--untracked-files=all").stdout
        seen_by_git = [str(p) for g in temp_globs for p in r.root.glob(g) if str(p.relative_to(r.root)) in status]
        assert not seen_by_git, seen_by_git
        assert r.not_up_to_date(stage), f"dvc status calls {stage} up to date after a kill at {at}"
        KILLS["survived"] += 1
        print(f"{stage}: killed ({what}) at {at}: final outputs absent or complete, stage not up to date")


def check_prepared(r: Repo):
    out = r.root / "build/prepared/birds.h5"
    if out.exists():
        assert len(read_prepared(out, "train")["keys"]) == 24 and len(read_prepared(out, "test")["keys"]) == 8


def check_trained(r: Repo):
    model = r.root / "build/model"
    if model.exists():
        load_generator(model / "generator.pt")
        assert torch.load(model / "checkpoint.pt", weights_only=True)["epoch"] == TINY["train"]["epochs"]
    for ckpt in (r.root / "build/checkpoints").glob("epoch_*.pt"):
        load_checkpoint(ckpt)
    summary = r.root / "dvclive/metrics.json"
    if summary.exists():
        json.loads(summary.read_text())
    for png in [r.root / "reports/train_samples.png", *(r.root / "dvclive/plots/images").rglob("*.png")]:
        if png.exists():
            Image.open(png).load()


def check_evaluated(r: Repo):
    scores, report = r.root / "metrics/scores.json", r.root / "reports/report.md"
    if scores.exists():
        assert json.loads(scores.read_text())["fid"] > 0
    if report.exists():
        assert "real held-out images (ceiling)" in report.read_text()


def test_sigkill_prepare(repo):
    kill_runs(repo, "prepare", ["build/prepared/birds.h5"], lambda: check_prepared(repo))
    repo.dvc("repro", "train-scorer", "real-features")
    check_prepared(repo)
    assert not list(repo.root.glob("build/prepared/.birds.h5.*"))  # the rerun removed the killed runs' temporaries
    assert not repo.not_up_to_date("prepare")


def test_sigkill_train(repo):
    kill_runs(
        repo,
        "train",
        ["build/checkpoints/epoch_*.pt", "build/model"],
        lambda: check_trained(repo),
        fresh=lambda: clear_checkpoints(repo.root / "build/checkpoints"),
    )
    repo.dvc("repro", "generate")
    check_trained(repo)
    assert not list(repo.root.glob("build/.model.*")) and not list(repo.root.glob("build/checkpoints/.epoch_*"))
    assert (repo.root / "build/model/generator.pt").is_file() and not repo.not_up_to_date("train")


def test_sigkill_evaluate_then_two_repros_at_once(repo):
    kill_runs(repo, "evaluate", ["metrics/scores.json", "reports/report.md"], lambda: check_evaluated(repo))
    print(
        f"\nkills tried {KILLS['tried']} / survived {KILLS['survived']} "
        f"(runs that finished before their moment: {KILLS['finished first']})"
    )
    assert KILLS["tried"] >= 6 and KILLS["survived"] == KILLS["tried"]

    # two `dvc repro` started at once: one does the work, the other waits for or stops at DVC's lock
    # (the repository lock, or the read/write lock of an output the other one is using)
    cmd = [sys.executable, "-m", "dvc", "repro"]
    procs = [
        subprocess.Popen(cmd, cwd=repo.root, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for out in outs:
        repo.logs += list(out)
    codes = [p.returncode for p in procs]
    print(f"two dvc repro at once: exit codes {codes}")
    assert 0 in codes, outs
    for code, (out, err) in zip(codes, outs):
        if code != 0:
            assert "Unable to acquire lock" in err or ("is busy" in err and ".dvc/tmp/rwlock" in err), (out, err)
            print(f"the other one stopped: {err.strip().splitlines()[-1][:160]}")
    assert "up to date" in repo.dvc("status", "dvc.yaml").stdout  # (data.dvc: data/ is absent, as in any clone)
    check_evaluated(repo)
    assert not list(repo.root.glob("metrics/.scores.json.*")) and not list(repo.root.glob("reports/.report.md.*"))
    # everything DVC tracks is in its cache and as dvc.lock says (changed against the committed lock of the
    # clone's full-size run); once dvc.lock is committed, nothing is left
    data = json.loads(repo.dvc("data", "status", "--json").stdout)
    assert set(data) <= {"committed"} and set(data.get("committed", {})) <= {"added", "modified"}, data
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "after the kills")
    assert json.loads(repo.dvc("data", "status", "--json", "--untracked-files").stdout) == {}
    assert repo.run("git", "status", "--porcelain", "--untracked-files=all").stdout == ""


def test_no_secret_in_logs_metrics_or_prefect_artifacts(repo, monkeypatch):
    """Every subprocess above ran with AWS_SECRET_ACCESS_KEY set: it is in no output, log or artifact."""
    from flows import tasks as flow

    published = []
    monkeypatch.setattr(flow, "create_table_artifact", lambda **kw: published.append(json.dumps(kw)))
    monkeypatch.setattr(flow, "create_markdown_artifact", lambda **kw: published.append(json.dumps(kw)))
    monkeypatch.setattr(
        flow, "get_run_logger", lambda: type("L", (), {"info": lambda *a: published.append(" ".join(map(str, a)))})()
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    flow.publish_metrics.fn(str(repo.root))
    assert len(published) >= 2 and any("fid" in p for p in published)

    files = [p for d in ("reports", "metrics", "dvclive") for p in (repo.root / d).rglob("*") if p.is_file()]
    files += list(repo.root.parent.glob("*.log"))
    assert len(files) > 10
    leaks = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    leaks += [f"log {i}" for i, text in enumerate(repo.logs + published) if SECRET in text]
    print(f"searched {len(files)} files, {len(repo.logs)} captured outputs, {len(published)} artifacts/log lines")
    assert not leaks, leaks
