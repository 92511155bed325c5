"""The scheduled deployment on a real local Prefect server, on the tiny pipeline.

One server, one served deployment (``gancls serve --interval``) and one tiny repository for
the whole module; the tests run in order: the first scheduled run does the real work, later ones
reuse DVC's cache.
"""

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from gancls.runs.worktree import processes_in

from conftest import clone_project, dvc, env, sh

pytestmark = pytest.mark.slow  # a Prefect server and the tiny pipeline

DEPLOYMENT = "gancls-scheduled/nightly"
INTERVAL = 15  # seconds between scheduled runs


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def assert_group_gone(pgid: int, what: str, wait: float = 20) -> None:
    """No process of the group is left (children get a moment to exit after their parent)."""
    deadline = time.monotonic() + wait
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(pgid):
        ps = subprocess.run(["ps", "-eo", "pgid=,pid=,args="], capture_output=True, text=True).stdout
        left = [line for line in ps.splitlines() if line.split()[0] == str(pgid)]
        raise AssertionError(f"processes started by {what} are left: {left}")


def stop_group(proc: subprocess.Popen, sig=signal.SIGINT, wait: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise AssertionError(f"{proc.args} did not stop within {wait} s of {sig!r}") from None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``prefect server start`` on a free loopback port, its SQLite database in a temporary PREFECT_HOME, kept
    running as `gancls serve` keeps the server it starts (``KeptServer``: started again when it dies)."""
    home = tmp_path_factory.mktemp("prefect-home")
    from gancls.runs.serve import KeptServer

    settings = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}
    settings["PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"] = "5"
    said = []
    kept = KeptServer(
        "127.0.0.1", 0, home, 180, 1, say=lambda *a, **k: said.append(" ".join(map(str, a))), extra_env=settings
    )
    try:
        yield {"api": kept.api, "home": home, "kept": kept, "said": said}
    finally:
        pgid = kept.proc.pid
        kept.stop()
        assert_group_gone(pgid, "prefect server")


@pytest.fixture(scope="module")
def client_env(server):
    """This process's Prefect client talks to the test server (prefect reads its settings at import)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server["api"], PREFECT_HOME: str(server["home"])}):
        yield server


# The clone's committed metrics are those of the full default run; its tiny runs score far below them
# (text match ~0.1 against 0.71, FID ~450 against 229), so HEAD is judged with wide limits here.  The
# branch `good` commits scores that no run reaches (FID 0), past these limits too.
WIDE_LIMITS = {"flow": {"regression": {"text_match.accuracy": {"max_drop": 0.8}, "fid": {"max_rise": 350.0}}}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, shared_dvc_cache):
    """A clone of this project with tiny params, plus a branch ``good`` whose committed scores no run can reach."""
    repo = clone_project(tmp_path_factory.mktemp("serve") / "repo", WIDE_LIMITS, shared_dvc_cache)
    sh(["git", "checkout", "-q", "-b", "good"], repo)
    (repo / "metrics/scores.json").write_text(json.dumps({"fid": 0.0, "text_match": {"accuracy": 1.0}}))
    sh(["git", "commit", "-qam", "perfect scores"], repo)
    sh(["git", "checkout", "-q", "-"], repo)
    return repo


def snapshot(repo: Path) -> tuple[str, dict, bytes, bytes]:
    """git status, dvc status, and the bytes of dvc.lock and params.yaml."""
    return (
        sh(["git", "status", "--porcelain"], repo).stdout,
        json.loads(dvc("status", "--json", cwd=repo).stdout),
        (repo / "dvc.lock").read_bytes(),
        (repo / "params.yaml").read_bytes(),
    )


@pytest.fixture(scope="module")
def served(client_env, repo):
    """``gancls serve --interval 15`` in the clone, against the test server."""
    before = snapshot(repo)
    serve_env = dict(
        env(),
        PREFECT_API_URL=client_env["api"],
        PREFECT_HOME=str(client_env["home"]),
        PREFECT_RUNNER_POLL_FREQUENCY="2",
    )
    log_path = client_env["home"] / "serve.log"
    # what `make serve` runs, in the clone: its flows/ serve its own repository
    proc = subprocess.Popen(
        [sys.executable, "-m", "gancls.cli", "serve", "--interval", str(INTERVAL)],
        cwd=repo,
        env=serve_env,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deployment = wait_for(lambda: _deployment(), 120, "the deployment was never created", proc, log_path)
        yield {"proc": proc, "deployment": deployment, "before": before, "log": log_path, "env": serve_env}
    finally:
        stop_group(proc, signal.SIGINT)
        assert_group_gone(proc.pid, "gancls serve")


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _deployment():
    from prefect.exceptions import ObjectNotFound

    with _client() as client:
        try:
            return client.read_deployment_by_name(DEPLOYMENT)
        except ObjectNotFound:
            return None


def wait_for(check, timeout: float, what: str, proc=None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"gancls serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(1)
    tail = log.read_text()[-3000:] if log else ""
    raise AssertionError(f"{what} within {timeout} s\n{tail}")


def runs_of(deployment_id, **filters):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.client.schemas.sorting import FlowRunSort

    with _client() as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )


def run(run_id):
    with _client() as client:
        return client.read_flow_run(run_id)


def states_of(run_id) -> set[str]:
    """The names of every state a flow run has been in."""
    with _client() as client:
        return {st.name for st in client.read_flow_run_states(run_id)}


def artifacts(run_id) -> dict:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client() as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return {a.key: a for a in arts}


def set_paused(deployment_id, paused: bool) -> None:
    with _client() as client:
        (client.pause_deployment if paused else client.resume_deployment)(deployment_id)


def quiesce(deployment_id) -> None:
    """No run of the deployment left but finished ones (call it with the deployment paused).

    Nothing is cancelled: pausing deletes the future scheduled runs, and the ones already due are let run
    (each a quick "nothing changed").  A run forced to Cancelled while the runner is starting it begins
    anyway, outside the deployment's concurrency slot, and holds the flow's lock while the next test's
    runs start (seen: a later run refused with RunRefused).
    """

    def settled():
        return all(r.state.is_final() for r in runs_of(deployment_id))

    wait_for(settled, 300, "runs of the deployment did not settle")


def test_scheduled_run_reproduces_records_and_compares(served, repo):
    dep = served["deployment"]
    assert dep.global_concurrency_limit.limit == 1

    def first_scheduled_done():
        runs = [r for r in runs_of(dep.id) if r.auto_scheduled and r.state and r.state.is_final()]
        if any(r.auto_scheduled and r.state.is_running() for r in runs_of(dep.id)):
            set_paused(dep.id, True)  # no backlog of scheduled runs while the first one works
        return runs[0] if runs else None

    first = wait_for(first_scheduled_done, 480, "no scheduled run finished", served["proc"], served["log"])
    set_paused(dep.id, True)
    quiesce(dep.id)
    assert first.state.is_completed(), f"{first.state.type}: {first.state.message}"
    arts = artifacts(first.id)
    table = {(row["file"], row["metric"]): row["value"] for row in json.loads(arts["gancls-metrics"].data)}
    diff = arts["gancls-diff"].data
    experiment = re.search(r"experiment `([^`]+)`", diff).group(1)
    assert "No regression against `HEAD`" in diff and "| metrics/scores.json | fid |" in diff
    assert "validation passed" in diff and "reports/generated_grid.png" in diff
    assert arts["gancls-train-progress"].type == "progress" and float(arts["gancls-train-progress"].data) == 100.0
    # recorded as a DVC experiment of the user's repository, with this run's scores
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    exps = {e["name"]: e for base in shown for e in (base.get("experiments") or [])}
    assert experiment in exps
    scores = exps[experiment]["revs"][0]["data"]["metrics"]["metrics/scores.json"]["data"]
    assert table[("metrics/scores.json", "fid")] == scores["fid"]
    # the workspace is as it was: same files, same DVC status; no worktree left
    assert snapshot(repo) == served["before"]
    assert sh(["git", "worktree", "list", "--porcelain"], repo).stdout.count("worktree ") == 1


def test_scheduled_run_with_nothing_changed_is_quick(served):
    dep = served["deployment"]
    done = [r.id for r in runs_of(dep.id) if r.state.is_final()]
    set_paused(dep.id, False)

    def next_scheduled_done():
        runs = [r for r in runs_of(dep.id) if r.auto_scheduled and r.state.is_final() and r.id not in done]
        return runs[0] if runs else None

    nothing = wait_for(next_scheduled_done, 120, "no further scheduled run finished", served["proc"], served["log"])
    set_paused(dep.id, True)
    quiesce(dep.id)
    assert nothing.state.is_completed(), nothing.state.message
    diff = artifacts(nothing.id)["gancls-diff"].data
    assert "Nothing changed since experiment" in diff and "No regression against `HEAD`" in diff
    took = (nothing.end_time - nothing.start_time).total_seconds()
    print(f"nothing-changed scheduled run: {took:.1f} s")
    assert took < 30


def test_regression_fails_the_run_and_a_second_run_waits(served, repo):
    from prefect.deployments import run_deployment

    dep = served["deployment"]
    quiesce(dep.id)
    # a change that reruns evaluate only; the baseline `good` holds scores no run reaches
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("kid_subsets: 5", "kid_subsets: 4", 1))
    sh(["git", "commit", "-qam", "kid_subsets 4"], repo)
    first = run_deployment(DEPLOYMENT, parameters={"baseline": "good"}, timeout=0)
    wait_for(
        lambda: run(first.id).state.is_running(), 120, "the first run never started", served["proc"], served["log"]
    )
    second = run_deployment(DEPLOYMENT, timeout=0)
    seen = set()
    while not run(first.id).state.is_final():
        a, b = run(first.id), run(second.id)
        seen.add(b.state.name)
        assert not (a.state.is_running() and b.state.is_running()), "two runs of the deployment ran at once"
        time.sleep(1)
    first = run(first.id)
    assert first.state.is_failed() and "regressed against good" in first.state.message
    diff = artifacts(first.id)["gancls-diff"].data
    assert "**REGRESSION**" in diff and re.search(r"text_match\.accuracy: 1 -> [0-9.]+, dropped by", diff)
    # the polls above can miss a short wait on a slow machine: the second run's recorded states hold it
    seen |= states_of(second.id)
    assert "AwaitingConcurrencySlot" in seen, seen
    second = wait_for(
        lambda: (r := run(second.id)).state.is_final() and r,
        180,
        "the second run never finished",
        served["proc"],
        served["log"],
    )
    assert second.state.is_completed(), second.state.message
    assert second.start_time >= first.end_time - timedelta(seconds=1)
    assert sh(["git", "status", "--porcelain"], repo).stdout == ""


def running_in(path: Path, command: bytes) -> bool:
    """A process whose command line holds ``command`` (NUL-separated words) runs with its cwd under ``path``."""
    for pid in processes_in(path):
        try:
            if command in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def test_serve_killed_mid_run_then_started_again_runs_the_next(server, served, repo):
    """SIGKILL of `gancls serve` (its process group: the runner and the flow run it executes) while a run
    evaluates: the run's worktree is left and the run stays Running on the server, holding the
    deployment's concurrency slot. `gancls serve` started again sets it Crashed (the slot free), and the
    next run goes through: no worktree, no held flow lock, no experiment of the killed run is left.
    Then the Prefect server killed (SIGKILL of its group) while that next run evaluates: ``KeptServer``
    starts it again on the same port and database, and the run goes on and completes."""
    from prefect.deployments import run_deployment

    dep = served["deployment"]
    set_paused(dep.id, True)  # no scheduled run in between
    quiesce(dep.id)
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("kid_subsets: 4", "kid_subsets: 3", 1))  # evaluate reruns
    sh(["git", "commit", "-qam", "kid_subsets 3"], repo)
    runs_dir = repo / ".dvc/tmp/gancls-flow/runs"
    killed = run_deployment(DEPLOYMENT, timeout=0)
    wait_for(
        lambda: running_in(runs_dir, b"gancls\0evaluate"),
        240,
        "the run never evaluated",
        served["proc"],
        served["log"],
    )
    os.killpg(served["proc"].pid, signal.SIGKILL)
    served["proc"].wait(timeout=30)
    assert_group_gone(served["proc"].pid, "the killed gancls serve")
    left = [p.name for p in runs_dir.iterdir()]
    assert len(left) == 1 and run(killed.id).state.is_running(), (left, run(killed.id).state)

    log_path = served["log"].with_name("serve-again.log")
    again = subprocess.Popen(
        [sys.executable, "-m", "gancls.cli", "serve", "--interval", "3600"],
        cwd=repo,
        env=served["env"],
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: run(killed.id).state.is_final(), 120, "the killed run was never set Crashed", again, log_path)
        assert run(killed.id).state.name == "Crashed" and killed.name in log_path.read_text()
        nxt = run_deployment(DEPLOYMENT, timeout=0)
        # the Prefect server killed in the middle of this run: started again, the run goes on and completes.
        # (the killed run's stages, in their own process group, outlived it: this run killed them first)
        wait_for(
            lambda: (
                run(nxt.id).state.is_running()
                and not (runs_dir / left[0]).exists()
                and running_in(runs_dir, b"gancls\0evaluate")
            ),
            240,
            "the next run never evaluated",
            again,
            log_path,
        )
        kept, dead = server["kept"], server["kept"].proc.pid
        leases = server["home"] / "concurrency_leases"  # the run's concurrency lease is on disk, not in memory
        lease = str(run(nxt.id).state.state_details.deployment_concurrency_lease_id)
        assert list(json.loads((leases / "expirations.json").read_text())) == [lease]
        os.killpg(dead, signal.SIGKILL)
        wait_for(lambda: any("started again" in line for line in server["said"]), 120, "the server never came back")
        assert kept.proc.pid != dead and any(f"pid {dead}) exited with status -9" in line for line in server["said"])
        assert_group_gone(dead, "the killed prefect server")
        nxt = wait_for(
            lambda: (r := run(nxt.id)).state.is_final() and r, 300, "the next run never ended", again, log_path
        )
        assert nxt.state.is_completed(), nxt.state.message
        # the restarted server knew the run's lease and released it with the run's end
        assert {p.name for p in leases.glob("*.json")} == {"expirations.json"}
        assert json.loads((leases / "expirations.json").read_text()) == {}
    finally:
        stop_group(again)
        assert_group_gone(again.pid, "gancls serve started again")
    assert not list(runs_dir.iterdir()) and not processes_in(runs_dir)  # no worktree, no orphan stage
    said = re.search(
        rf"removed the worktree {left[0]} that a killed run left \((\d+) of its processes killed\)",
        log_path.read_text(),
    )
    assert said, log_path.read_text()[-3000:]
    print(f"the killed run's orphans killed by the next run: {said[1]}")
    assert sh(["git", "worktree", "list", "--porcelain"], repo).stdout.count("worktree ") == 1
    with open(repo / ".dvc/tmp/gancls-flow.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if a run still held it
    experiments = dvc("exp", "list", "--all-commits", "--name-only", cwd=repo).stdout.split()
    last = json.loads((repo / ".dvc/tmp/gancls-flow/last.json").read_text())["experiment"]
    assert left[0] not in experiments and last in experiments and last != left[0]
    assert sh(["git", "status", "--porcelain"], repo).stdout == ""


def test_a_task_past_its_timeout_fails_the_run_and_leaves_nothing(client_env, repo):
    """A run past its `check` timeout fails and leaves no worktree, its own nor one a killed run left."""
    from flows.scheduled import scheduled

    # what a run killed by SIGKILL leaves (its clean-up never ran): its worktree, registered with git
    killed = repo / ".dvc/tmp/gancls-flow/runs/nightly-killed"
    sh(["git", "worktree", "add", "--detach", str(killed), "HEAD"], repo)
    params = (repo / "params.yaml").read_text()
    assert "    check: 600" in params
    (repo / "params.yaml").write_text(params.replace("    check: 600", "    check: 0.5", 1))  # flow: no stage reads it
    try:
        state = scheduled(root=str(repo), return_state=True)
    finally:
        (repo / "params.yaml").write_text(params)
    assert state.is_failed() and "timeout" in state.message.lower(), state.message
    assert sh(["git", "status", "--porcelain"], repo).stdout == ""
    assert sh(["git", "worktree", "list", "--porcelain"], repo).stdout.count("worktree ") == 1
    assert not list((repo / ".dvc/tmp/gancls-flow/runs").iterdir())


def test_prefect_yaml_deploys_to_a_process_pool(client_env, repo, tmp_path):
    project = clone_project(tmp_path / "project")  # `prefect deploy` where a user runs it: the project's root
    cli_env = dict(
        env(),
        PREFECT_API_URL=client_env["api"],
        PREFECT_HOME=str(client_env["home"]),
        GANCLS_ROOT=str(repo),
        PYTHONPATH=os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")]),
    )
    prefect = [sys.executable, "-m", "prefect"]
    for cmd in (
        ["work-pool", "create", "gancls-process", "--type", "process"],
        ["--no-prompt", "deploy", "--name", "nightly"],
        ["--no-prompt", "deploy", "--name", "sweep"],
    ):
        proc = subprocess.run(prefect + cmd, cwd=project, env=cli_env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    dep = _deployment()
    assert dep.work_pool_name == "gancls-process" and dep.entrypoint == "flows/scheduled.py:scheduled"
    assert dep.schedules[0].schedule.cron == "0 2 * * *" and dep.global_concurrency_limit.limit == 1
    assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(repo)}}]
    with _client() as client:
        sweep = client.read_deployment_by_name("gancls-sweep/sweep")
    assert sweep.work_pool_name == "gancls-process" and sweep.entrypoint == "flows/sweep.py:sweep"
    assert sweep.parameters == {"file": "configs/sweeps/recipe.yaml", "root": "."} and not sweep.schedules
    assert sweep.global_concurrency_limit.limit == 1
