"""SIGKILL of `gancls prepare`, `gancls train` and `gancls evaluate` at seeded random moments and mid-write,
then two `dvc repro` at once, then a search for a secret of the environment in everything the runs left.

One tiny git + DVC repository serves the whole module (the tests run in file order and build on each
other): each stage is killed 3 times (twice after a seeded random delay, once as soon as the temporary
sibling of an output appears, with the move into place held back by tests/reliability/hooks), and after
every kill the stage's final outputs must be absent or complete and `dvc status` must not call the stage
up to date; then `dvc repro` completes it.  The subprocesses carry a fake secret in their environment.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from gancls.checkpoint import load_checkpoint, load_generator
from gancls.prepared import read_prepared

from conftest import TINY, clone_project, env

HOOKS = Path(__file__).parent / "hooks"
SECRET = "sk-test-123-do-not-log"
KILLS = {"tried": 0, "survived": 0, "finished first": 0}


def run_env(pause: float | None = None, names: list[str] | None = None) -> dict:
    e = env()
    e["AWS_SECRET_ACCESS_KEY"] = SECRET
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


def kill_runs(r: Repo, stage: str, delays: tuple[float, float], targets: list[str], check) -> None:
    """Kill `gancls <stage>` 3 times: after two seeded random delays, then when a temporary sibling of one
    of ``targets`` (``.<target>.*``, made by files.atomic_path) appears.  ``check`` inspects the outputs."""
    temp_globs = [str(Path(t).parent / f".{Path(t).name}.*") for t in targets]
    rng = random.Random(f"kill-{stage}")
    lo, hi = delays
    mid = (lo + hi) / 2  # one early, one late moment
    moments = [("random", rng.uniform(lo, mid)), ("random", rng.uniform(mid, hi)), ("mid-write", None)]
    for what, delay in moments:
        log = (r.root.parent / f"{stage}-{KILLS['tried']}.log").open("w")
        stale = {p for g in temp_globs for p in r.root.glob(g)}  # left by earlier kills: not this writer's
        proc = subprocess.Popen(
            ["gancls", stage],
            cwd=r.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=run_env(pause=3.0 if what == "mid-write" else None, names=[Path(t).name for t in targets]),
            start_new_session=True,
        )
        t0, seen = time.time(), None
        while proc.poll() is None and time.time() - t0 < 300:
            if delay is not None and time.time() - t0 >= delay:
                break
            if delay is None:
                seen = next((p for g in temp_globs for p in r.root.glob(g) if p not in stale), None)
                if seen:
                    break
            time.sleep(0.02)
        if proc.poll() is not None:  # it finished before the moment came: not a kill
            log.close()
            KILLS["finished first"] += 1
            print(f"{stage}: finished before the {what} moment ({delay})")
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        KILLS["tried"] += 1
        r.logs.append(Path(log.name).read_text())
        at = f"{time.time() - t0:.1f}s" + (f", {seen.relative_to(r.root)} present" if seen else "")
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
    kill_runs(repo, "prepare", (1.0, 6.0), ["build/prepared/birds.h5"], lambda: check_prepared(repo))
    repo.dvc("repro", "train-scorer", "real-features")
    check_prepared(repo)
    assert not list(repo.root.glob("build/prepared/.birds.h5.*"))  # the rerun removed the killed runs' temporaries
    assert not repo.not_up_to_date("prepare")


def test_sigkill_train(repo):
    kill_runs(repo, "train", (3.0, 12.0), ["build/checkpoints/epoch_*.pt", "build/model"], lambda: check_trained(repo))
    repo.dvc("repro", "generate")
    check_trained(repo)
    assert not list(repo.root.glob("build/.model.*")) and not list(repo.root.glob("build/checkpoints/.epoch_*"))
    assert (repo.root / "build/model/generator.pt").is_file() and not repo.not_up_to_date("train")


def test_sigkill_evaluate_then_two_repros_at_once(repo):
    kill_runs(
        repo, "evaluate", (3.0, 12.0), ["metrics/scores.json", "reports/report.md"], lambda: check_evaluated(repo)
    )
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
