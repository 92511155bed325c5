"""Shared fixtures: telemetry off, and a clone of this project with tiny params for end-to-end tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gancls.runs import project
from gancls.runs.project import merge, outputs_under

for _var, _value in (
    ("DVC_NO_ANALYTICS", "1"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("GX_ANALYTICS_ENABLED", "false"),
):
    os.environ[_var] = _value

ROOT = Path(__file__).resolve().parents[1]

# The tiny configuration (configs/tiny.yaml): the real stages and libraries, a few dozen images, a narrow model.
TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())

# The two tiers: a test that trains a GAN, runs the pipeline on a clone or starts a server is ``slow``, and
# `make test-fast` leaves it out (`make test` runs everything).  A test that uses one of these fixtures is
# marked here; the others carry ``@pytest.mark.slow`` (or a module's ``pytestmark``) themselves.
SLOW_FIXTURES = {"learned", "tiny_scorer", "tiny_prepared", "project_clone"}


# `make test` runs the suite in two pytest-xdist workers (pyproject.toml: -n 2): the tests of one file share
# a worker (module fixtures are made once), and so do the files that use the session's trained model
# (``learned``, made once).  (xdist's own --dist loadgroup marks do not survive pytest 9's node ids, so the
# grouping is this scheduler's.)  Each worker, and what it starts, uses one thread: two workers on CI's two
# cores.  `pytest -n 0` runs everything in one process at torch's own thread count.
SHARED_MODEL = {"learned", "tiny_scorer"}
SHARED_MODEL_FILES = {"test_scorer.py", "test_diversity.py", "test_learning.py", "test_demo.py", "test_draw.py"}
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# Prefect's client keeps its event workers per process: a test harness opened after test_serve.py's server
# has stopped waited on events for it (seen once under xdist: test_flow.py hung 900 s).  The two files
# share a worker and run in file order, flow first, as in one process.
PREFECT_FILES = {"test_flow.py", "test_serve.py"}


# A worker takes the next group when it is done with one, in collection order: the longest groups go first
# (seconds of one worker on CI's 2 cores, the slowest-durations list of a CI run; rounded), so that the two
# workers finish together rather than one starting a long group when the other is nearly done.
GROUP_SECONDS = {
    "learned": 300,
    "tests/runs/test_sweep.py": 260,
    "prefect": 200,
    "tests/test_pipeline.py": 220,
    "tests/reliability/test_kill.py": 120,
}


def worker_group(nodeid: str) -> str:
    file = nodeid.split(":", 1)[0]
    name = Path(file).name
    return "learned" if name in SHARED_MODEL_FILES else "prefect" if name in PREFECT_FILES else file


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    config.option.loadscopereorder = False  # xdist's own order (most tests first) would undo GROUP_SECONDS's
    return ByGroup(config, log)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: -GROUP_SECONDS.get(worker_group(item.nodeid), 0))  # stable: file order kept
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if SHARED_MODEL & fixtures and worker_group(item.nodeid) != "learned":
            raise pytest.UsageError(f"{item.nodeid} uses the trained model: add its file to SHARED_MODEL_FILES")


# Counted by tests/reliability/test_bad_inputs.py (each case asserts its own error); summed up at the end.
BAD_INPUT_FIGURES = {"tried": 0, "clear": 0, "lost": 0}


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # an xdist worker: its counts go to the controller
        session.config.workeroutput["bad_inputs"] = dict(BAD_INPUT_FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    for key, value in getattr(node, "workeroutput", {}).get("bad_inputs", {}).items():
        BAD_INPUT_FIGURES[key] += value


def pytest_terminal_summary(terminalreporter):
    f = BAD_INPUT_FIGURES
    if f["tried"]:
        terminalreporter.write_line(
            f"bad inputs tried {f['tried']} / clear one-line errors {f['clear']} / outputs lost {f['lost']}"
        )


def section(name: str, **over):
    """One typed section of params.yaml with some values replaced (``section("train", epochs=2)``)."""
    from gancls.config import parse_params

    params = parse_params(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), {name: over}))
    return getattr(params, "validation" if name == "validate" else name)


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def sh(cmd, cwd, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args, cwd, check=True):
    return sh([sys.executable, "-m", "dvc", *args], cwd, check)


def clone_project(repo: Path, overrides: dict | None = None, cache: Path | None = None) -> Path:
    """``repo``: a git clone of this project as committed, with params.yaml made tiny (TINY + ``overrides``)
    and committed; the working tree's uncommitted edits laid on top (``gancls.runs.project.clone_project``).
    ``cache``: the DVC cache it uses (``dvc cache dir --local``) instead of its own ``.dvc/cache``."""
    repo = project.clone_project(ROOT, repo, merge(TINY, overrides or {}))
    if cache is not None:
        (repo / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n", encoding="utf-8")
    return repo


@pytest.fixture(scope="session")
def shared_dvc_cache(tmp_path_factory) -> Path:
    """One DVC cache for the clones of the tiny pipeline that run its stages as they are (both workers):
    a stage that another clone already ran with the same code, params and inputs is restored from DVC's
    run cache, as in a team's repositories sharing a cache (`dvc cache dir`). Not for clones whose tests
    need their own stages to run (test_kill.py), look inside their cache, or set a watching key
    (train.eval_every: DVC would restore a run made without it)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-dvc-cache"


@pytest.fixture
def project_clone(tmp_path):
    """``clone_project``: this repository as committed, with a tiny params.yaml."""

    def make(overrides: dict | None = None, cache: Path | None = None) -> Path:
        return clone_project(tmp_path / "repo", overrides, cache)

    return make


# --- one small trained model per session (learning test, scorer and `gancls sample` tests) -------

# The learning configuration: the default sample, model topology, loss and D, at half the default's widths
# (16: a test session's budget), trained briefly.
LEARN = {
    "model": {"ngf": 16, "ndf": 16},
    "train": {"epochs": 15, "sample_every": 5, "grid_size": 4},
    "generate": {"num_samples": 500, "grid_captions": 4, "grid_noise": 4, "interp_pairs": 3, "interp_steps": 5},
    "scorer": {"epochs": 15},
    "text_encoder": {"epochs": 6},
}


@pytest.fixture(scope="session")
def learned(tmp_path_factory):
    """The default sample, prepared; the scorer and the text encoder trained on it; a GAN-CLS trained
    briefly (LEARN).

    Returns the params (paths point into a session folder) and the paths of what was made.
    """
    from gancls.config import parse_params
    from gancls.data.prepare import prepare
    from gancls.data.synthetic import make_sample
    from gancls.evaluation.scorer import train_scorer
    from gancls.training.train import train
    from gancls.training.train_text_encoder import train_text_encoder

    root = tmp_path_factory.mktemp("learned")
    raw = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), LEARN)
    out = {
        "sample": root / "sample",
        "prepared": root / "birds.h5",
        "scorer": root / "scorer.pt",
        "model": root / "model",
        "reports": root / "reports",
    }
    raw["data"]["raw_dir"] = str(out["sample"])
    raw["prepare"]["out"] = str(out["prepared"])
    raw["scorer"].update(out=str(out["scorer"]), metrics=str(root / "scorer.json"))
    raw["text_encoder"].update(weights=str(root / "text_encoder.pt"), metrics=str(root / "text_encoder.json"))
    outputs_under(raw, root)
    params = parse_params(raw)
    make_sample(params.sample, out["sample"])
    prepare(out["sample"], out["prepared"], params.prepare, "sample")
    out["scorer_summary"] = train_scorer(out["prepared"], params, out["scorer"], root / "scorer.json")
    out["encoder_metrics"] = train_text_encoder(out["prepared"], params)
    out["train_summary"] = train(out["prepared"], params)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out["params"] = params
    out["params_file"] = root / "params.yaml"
    out["root"] = root
    return out


@pytest.fixture(scope="session")
def tiny_scorer(learned):
    return {"path": learned["scorer"], "summary": learned["scorer_summary"]}


# --- the tiny prepared data, for the training-run tests (resume, NaN guard, DDP) ------------------


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    from gancls.config import parse_params
    from gancls.data.prepare import prepare
    from gancls.data.synthetic import make_sample

    root = tmp_path_factory.mktemp("tiny")
    params = parse_params(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY))
    make_sample(params.sample, root / "sample")
    prepare(root / "sample", root / "birds.h5", params.prepare, "sample")
    return root / "birds.h5"


def tiny_run_params(prepared: Path, run_dir: Path, **train):
    """TINY params whose training outputs all go under ``run_dir`` (train keys overridable)."""
    from gancls.config import parse_params

    raw = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    raw["prepare"]["out"] = str(prepared)
    outputs_under(raw, run_dir)["train"].update(device="cpu", **train)
    return parse_params(raw), raw
