"""End to end: `dvc repro` of the real stages on the tiny configuration, and the bad-input stop."""

import contextlib
import csv
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import h5py
import pytest
import yaml
from PIL import Image

from gancls.data.raw import load_embeddings

from conftest import ROOT, TINY, clone_project, dvc, sh
from test_docs import DOCS, command_lines, doc_blocks, doc_commands

pytestmark = pytest.mark.slow  # the tiny pipeline on a clone


@pytest.fixture(scope="module")
def repro(tmp_path_factory, shared_dvc_cache):
    """A clone of this repository with tiny params after one `dvc repro` of every stage (the quality
    probe on: at the last epoch, and every 20th of the README's longer experiment).

    The stages up to the references may be restored from the session's shared DVC cache (another clone
    ran them alike); train onwards run here: train.eval_every only watches a run, so DVC's run cache
    would restore a train made without the probe."""
    repo = clone_project(tmp_path_factory.mktemp("e2e") / "repo", {"train": {"eval_every": 20}}, shared_dvc_cache)
    dvc("repro", "real-floor", "train-scorer", "train-text-encoder", cwd=repo)
    dvc("repro", "--no-run-cache", cwd=repo)
    return repo


def test_validate_writes_the_gx_result_and_data_docs(repro):
    result = json.loads((repro / "reports/validation/result.json").read_text())
    assert result["success"] is True
    assert (repro / "reports/validation/data_docs/index.html").is_file()


def test_prepare_writes_both_class_disjoint_splits(repro):
    with h5py.File(repro / "build/prepared/birds.h5") as h5:
        assert h5["train/images"].shape[1:] == (76, 76, 3)
        assert h5["train/embeddings"].shape[1:] == (10, 1024)
        assert h5["test/captions"].shape[1] == 10
        assert not set(h5["train/class_ids"][()]) & set(h5["test/class_ids"][()])
        assert len(h5["train/keys"]) + len(h5["test/keys"]) == 32 and len(h5["test/keys"]) == 8


def test_train_writes_the_model_its_history_and_grids(repro):
    assert (repro / "build/model/checkpoint.pt").is_file() and (repro / "build/model/generator.pt").is_file()
    assert not list((repro / "build/checkpoints").glob("*.pt"))  # resume checkpoints go once the run is done
    rows = list(csv.DictReader((repro / "dvclive/plots/metrics/d_loss.tsv").open(), delimiter="\t"))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(float(r["d_loss"]) > 0 for r in rows)
    assert sorted(p.name for p in (repro / "dvclive/plots/images/samples").iterdir()) == ["00001.png", "00002.png"]
    grid = Image.open(repro / "reports/train_samples.png")
    assert grid.height > 3 * 66 and grid.width > 3 * 66 + 300  # captions panel beside 3 x 3 images
    assert Image.open(repro / "reports/train_progress.gif").n_frames == 2  # one frame per sample_every epochs
    kid = list(csv.DictReader((repro / "dvclive/plots/metrics/kid.tsv").open(), delimiter="\t"))
    assert [int(r["step"]) for r in kid] == [2] and float(kid[0]["kid"]) != 0  # the probe's KID, at the last epoch
    summary = json.loads((repro / "dvclive/metrics.json").read_text())
    assert "moving average" in summary["shipped"] and summary["steps"] == 2 * 3  # 24 images / 8
    assert summary["epochs"] == 2 and summary["resumed_from_epoch"] == 0
    shown = json.loads(dvc("metrics", "show", "--json", cwd=repro).stdout)
    assert any("dvclive/metrics.json" in str(v) for v in shown.values())


def test_the_scorer_and_the_text_encoder_are_trained_and_scored(repro):
    scorer = json.loads((repro / "metrics/scorer.json").read_text())
    assert scorer["labels"] == ["body", "wing", "head", "beak"] and scorer["n_heldout"] == 8
    encoder = json.loads((repro / "metrics/text_encoder.json").read_text())
    assert encoder["source"] == "fit" and encoder["test_captions"] == 80 and encoder["train_captions"] == 240
    assert (repro / "build/text_encoder/encoder.pt").is_file()


def test_generate_draws_stored_and_encoded_captions_and_the_grids(repro):
    with h5py.File(repro / "build/generated/images.h5") as h5:
        assert h5["images"].shape == h5["encoded_images"].shape == (12, 64, 64, 3)
        assert len(h5["captions"]) == 12 and h5["image_index"][()].max() < 8
    with h5py.File(repro / "build/generated/noise_sets.h5") as h5:  # every test caption (8), 8 noise vectors
        assert h5["images"].shape == (8, 8, 64, 64, 3) and len(h5["captions"]) == 8
    for name in ("generated_grid", "interp_text", "interp_noise", "typed_sentences"):
        assert Image.open(repro / f"reports/{name}.png").width > 3 * 66, name
    pairs = Image.open(repro / "reports/real_vs_generated.png")  # real | generated, 2x: 2 x (128 + 2) beside the panel
    assert pairs.width == 360 + 2 + 2 * (128 + 2), pairs.size


def test_evaluate_scores_with_the_recorded_extractor_and_reports(repro):
    scores = json.loads((repro / "metrics/scores.json").read_text())
    assert scores["fid"] > 0 and scores["n_fake"] == 12 and scores["n_real"] == 8
    assert scores["feature_extractor"]["sha1"] == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
    assert scores["is"] is None and scores["is_missing_reason"]  # IS missing, with the reason
    tm = scores["text_match"]
    named = ("accuracy", "chance", "real_ceiling", "mismatched_accuracy", "encoded_accuracy")
    assert set(tm) >= set(named) and all(0 <= tm[k] <= 1 for k in named)
    div = scores["diversity"]  # 8 test images in 2 classes: too few agree with a caption for a reference
    assert div["noise_vectors"] == 8 and div["unnamed_distinct"] is None and div["unnamed_missing_reason"]
    assert div["feature_spread"] is None and "no test class has 8 images" in div["feature_missing_reason"]
    floor = json.loads((repro / "metrics/floor.json").read_text())  # 12 new real images against the 8 real ones
    assert floor["n_real"] == 8 and floor["n_other"] == 12 and "new images of the sample's test classes" in floor["how"]
    assert 0 < scores["fid_floor"] == floor["fid_floor"] < scores["fid"], (floor, scores["fid"])
    assert scores["fid_of_floor"] == round(scores["fid"] / floor["fid_floor"], 3) > 1
    report = (repro / "reports/report.md").read_text()
    assert f"FID is **{scores['fid_of_floor']:.1f}x the floor**" in report and "real_vs_generated.png" in report
    assert "real held-out images (ceiling)" in report and "generated_grid.png" in report
    assert "typed_sentences.png" in report and "gancls sample --text" in report
    from gancls.evaluation.stage_times import STAGES

    times = {s: json.loads((repro / f"metrics/stages/{s}.json").read_text()) for s in STAGES if s != "evaluate"}
    assert all(t["seconds"] > 0 for t in times.values()) and times["train"]["seconds"] > times["make-sample"]["seconds"]
    table = report[report.index("## Where the minutes went") :]
    assert all(f"| {s} | {t['seconds']:.1f} |" in table for s, t in times.items())
    assert "| evaluate |" in table and "running (until this report)" in table
    assert json.loads((repro / "metrics/stages/evaluate.json").read_text())["seconds"] > 0


def test_a_second_repro_reruns_nothing(repro):
    assert "up to date" in dvc("status", "dvc.yaml", cwd=repro).stdout
    # only data/ (data.dvc) is missing: `gancls fetch` makes it, the embedded sample does not read it
    assert json.loads(dvc("status", "--json", cwd=repro).stdout) == {
        "data.dvc": [{"changed outs": {"data": "deleted"}}]
    }
    assert "Running stage" not in dvc("repro", cwd=repro).stdout


def test_make_run_in_a_plain_shell_reruns_nothing_and_shows_where_the_results_are(repro):
    """The README's `make run`, pasted into a plain shell on the clone after the fixture's `dvc repro`: it reruns
    nothing and prints where the results are; every file it prints and every file of the README's results
    table is there."""
    out = plain_shell(in_the_clone(readme_line("make run ")), repro).stdout
    assert "Running stage" not in out and "reports/report.md" in out, out
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| what | where |") :].split("\n\n", 1)[0].splitlines()[2:]
    listed = [p for row in table for p in re.findall(r"`([^`\s]+/[^`\s]*)`", row.rsplit("|", 2)[1])]
    printed = re.findall(r"\b(?:reports|metrics|dvclive|build)/[\w./*-]*[\w*/]", out)
    assert len(listed) >= 12 and len(printed) >= 10, (table, out)
    missing = [p for p in listed + printed if not (list(repro.glob(p)) if "*" in p else (repro / p).exists())]
    assert missing == [], missing


def test_the_readme_sample_lines_in_a_plain_shell(repro):
    """The README's `gancls sample --text` and `--caption-id` lines in a plain shell on the clone: each draws a
    captioned grid and prints its path (`--file` and `--query`: tests/drawing/test_draw.py)."""
    with h5py.File(repro / "build/generated/images.h5") as h5:
        key = h5["keys"].asstr()[0]  # "keys: build/generated/images.h5"
    text = readme_line(".venv/bin/gancls sample --text")
    caption = readme_line(".venv/bin/gancls sample --caption-id")
    for line, rows in ((text, 2), (DocText(caption.replace("<key>", key), caption.where), 1)):
        out = plain_shell(line, repro).stdout
        grid = re.search(r": (reports/sample_\S+\.png)", out)
        assert grid, out
        image = Image.open(repro / grid.group(1))
        assert image.width > 8 * 64 and image.height >= rows * 64, (line, image.size)


def test_the_readme_experiment_block_in_a_plain_shell(repro):
    """The README's experiment block, pasted into a plain shell (no environment active) on the clone."""
    sh(["git", "add", "-A"], repro)
    sh(["git", "commit", "-qm", "baseline"], repro)
    block = readme_block("dvc exp run -S train.epochs=")
    out = plain_shell(block, repro)
    # `dvc metrics diff` prints the metrics that changed (the tiny model's text match may stay at its floor)
    table = out.stdout[out.stdout.index("Path ") :]
    assert re.search(r"metrics/scores\.json\s+fid\s", table) and re.search(
        r"dvclive/metrics\.json\s+epochs\s", table
    ), table
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repro).stdout)
    assert diff["metrics/scores.json"]["fid"]["diff"] != 0
    epochs = int(re.search(r"train\.epochs=(\d+)", block).group(1))
    assert diff["dvclive/metrics.json"]["epochs"]["new"] == epochs
    shown = dvc("metrics", "show", "--json", cwd=repro).stdout
    assert '"text_match"' in shown and '"mismatched_accuracy"' in shown and '"test_top1"' in shown


def test_settings_that_watch_or_place_a_run_rerun_no_stage(repro):
    """How a run is watched or placed is not what it computes: `dvc exp run -S` of them reruns nothing."""
    watched = {
        "train.log_every": 10,
        "train.checkpoint_every": 3,
        "train.device": "cpu",
        "train.sample_every": 2,
        "train.checkpoint_dir": "build/other_checkpoints",
    }
    out = dvc("exp", "run", *(a for k, v in watched.items() for a in ("-S", f"{k}={v}")), cwd=repro).stdout
    assert "Running stage" not in out, out
    assert yaml.safe_load((repro / "params.yaml").read_text())["train"]["log_every"] == 10  # the change was made


def test_the_readme_demo_block_in_a_plain_shell(repro, tmp_path):
    """The README's demo block on the clone, each line in a plain shell: `make demo` (on demo.port),
    `gancls demo --exp NAME --port 0` (an experiment of the tests above) and `gancls demo --exp A --exp B`
    (two of them) at once, each page answering at the address it prints until Ctrl-C stops it; then
    `make demo-shot`, where chromium is."""
    from gancls.drawing.demo_browser import CHROMIUM

    demo, exp, both, shot = command_lines(readme_block("make demo-shot"))
    promised = re.search(r"http://([\d.]+):(\d+)/", demo)  # "prints http://127.0.0.1:7860/"
    assert demo.startswith("make demo ") and "--exp NAME" in exp and shot.startswith("make demo-shot"), demo
    assert "--exp A --exp B" in both, both
    with socket.socket() as s:
        if s.connect_ex((promised.group(1), int(promised.group(2)))) == 0 and not os.environ.get("CI"):
            pytest.skip(f"{promised.group(0)} is taken on this machine: `make demo` cannot listen there")
    names = dvc("exp", "list", "--name-only", cwd=repro).stdout.split()
    while len(names) < 2:  # run alone (-k): experiments as the tests above make them (these retrain nothing)
        names.append(f"readme-demo{len(names)}")
        dvc("exp", "run", "-n", names[-1], "-S", f"train.log_every={10 + len(names)}", cwd=repro)
    pair = both.replace("--exp A --exp B", f"--exp {names[0]} --exp {names[1]}")
    lines = [in_the_clone(demo), exp.replace("NAME", names[0]), pair]
    started = []
    try:
        for i, line in enumerate(lines):
            with (tmp_path / f"demo{i}.log").open("w") as log:
                proc = subprocess.Popen(
                    ["bash", "-euo", "pipefail", "-c", line],
                    cwd=repro,
                    env=plain_env(repro),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append((proc, tmp_path / f"demo{i}.log"))
        urls = [printed_address(line, proc, log) for line, (proc, log) in zip(lines, started)]
        assert urls[0] == promised.group(0) and len(set(urls)) == 3
        assert f"experiment {names[0]}" in started[1][1].read_text()
        assert f"experiment {names[0]}" in started[2][1].read_text()
        assert f"experiment {names[1]}" in started[2][1].read_text()
        for url in urls:
            with urllib.request.urlopen(url, timeout=60) as page:
                assert page.status == 200 and "gradio" in page.read().decode().lower()
        for proc, _ in started:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        for (proc, log), url in zip(started, urls):
            proc.wait(timeout=60)
            # a stop that hung past demo.STOP_SECONDS dumps every thread's stack (faulthandler) and exits
            said = log.read_text()
            assert "Traceback" not in said and "most recent call first" not in said, said
            deadline = time.monotonic() + 30
            while listening(url) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not listening(url), f"{url} still answers after Ctrl-C"
    finally:
        for proc, _ in started:  # whatever of a group is left after a failure
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    if not Path(CHROMIUM).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing under CI: .ci/run installs it")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium): `make demo-shot` not run")
    out = plain_shell(in_the_clone(shot), repro).stdout
    assert "reports/demo.png: http://127.0.0.1:" in out and "requests leaving loopback: 0" in out, out
    assert Image.open(repro / "reports/demo.png").width > 0


def printed_address(line: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    """The address a `gancls demo` started by ``line`` prints (`... on http://HOST:PORT/  (Ctrl-C stops it)`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r" on (http://\S+/) ", log.read_text())
        if found:
            return found.group(1)
        assert proc.poll() is None, f"{line} exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"{line} printed no address in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def listening(url: str) -> bool:
    host, port = re.match(r"http://([^/:]+):(\d+)/", url).groups()
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


class DocText(str):
    """A block or a command line of README.md or docs/*.md; ``where`` says which file and line."""

    where: str

    def __new__(cls, text: str, where: str):
        obj = super().__new__(cls, text)
        obj.where = where
        return obj


def readme_block(containing: str) -> DocText:
    """The fenced bash block of README.md or docs/*.md (README first) that holds ``containing``."""
    for block in doc_blocks("bash"):
        if containing in block.text:
            return DocText(block.text, block.where)
    names = ", ".join(str(p.relative_to(ROOT)) for p in DOCS)
    raise AssertionError(f"no bash block of {names} holds {containing!r}")


def readme_line(starting: str) -> DocText:
    """The first command line of those bash blocks that starts with ``starting`` (continuations joined)."""
    for block, line in doc_commands():
        if line.startswith(starting):
            return DocText(line, block.where)
    names = ", ".join(str(p.relative_to(ROOT)) for p in DOCS)
    raise AssertionError(f"no command line of a bash block of {names} starts with {starting!r}")


def in_the_clone(line: str) -> str:
    """A `make` line of the docs as run on a clone: -o, the clone uses the project's installed environment as
    it is (its .venv is a link to it) rather than reinstalling it."""
    return re.sub(r"^make ", "make -o .venv/.installed ", line)


def plain_env(repo) -> dict:
    """The environment of a plain shell in ``repo`` after the README's set-up (``.venv`` there): the project's
    venv is not on PATH and none is active."""
    if not (repo / ".venv").exists():
        (repo / ".venv").symlink_to(Path(sys.executable).parents[1])  # what `make` set up, not reinstalled
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    assert shutil.which("gancls", path=env["PATH"]) is None, "a plain shell here has gancls on PATH: no test"
    return env


def plain_shell(script: str, repo, check=True) -> subprocess.CompletedProcess:
    """``script`` in bash, in ``repo``, in a plain shell (``plain_env``)."""
    env = plain_env(repo)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=repo, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        where = f" ({script.where})" if isinstance(script, DocText) else ""
        raise AssertionError(
            f"{script}{where}\nfailed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def corrupt_copy(repo):
    """make-sample, then a copy of the sample as the raw folder (data.raw_dir = bad_raw)."""
    dvc("repro", "make-sample", cwd=repo)
    bad = repo / "bad_raw"
    shutil.copytree(repo / "build/sample", bad)
    return bad


def test_corrupt_jpeg_stops_pipeline(project_clone):
    repo = project_clone({"data": {"raw_dir": "bad_raw"}})
    bad = corrupt_copy(repo)
    victim = sorted((bad / "CUB_200_2011/images").rglob("*.jpg"))[3]
    victim.write_bytes(victim.read_bytes()[:200])
    proc = dvc("repro", cwd=repo, check=False)
    assert proc.returncode != 0
    assert victim.name in proc.stderr + proc.stdout
    assert not (repo / "build/prepared/birds.h5").exists()
    assert not (repo / "build/model").exists()


def test_wrong_embedding_shape_stops_pipeline(project_clone):
    repo = project_clone({"data": {"raw_dir": "bad_raw"}})
    bad = corrupt_copy(repo)
    emb = load_embeddings(bad, "test")
    pick = bad / "test/char-CNN-RNN-embeddings.pickle"
    pick.write_bytes(pickle.dumps(emb[:, :, :512].copy(), protocol=2))
    proc = dvc("repro", cwd=repo, check=False)
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert "char-CNN-RNN-embeddings.pickle" in out or "10x512" in out
    assert not (repo / "build/prepared/birds.h5").exists()


# --- make run-cub: without data/, and Reed's settings at tiny sizes on a CUB-layout stand-in --------


def test_run_cub_without_data_stops_at_once_and_changes_nothing(project_clone):
    repo = project_clone()
    before = sh(["git", "status", "--porcelain"], repo).stdout
    # the Makefile's target itself (-o: the clone uses the project's installed environment as it is)
    proc = plain_shell("make -o .venv/.installed run-cub", repo, check=False)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("gancls")]
    assert len(ours) == 1 and "data/" in ours[0] and "gancls fetch" in ours[0], proc.stderr
    assert "Traceback" not in proc.stderr and "Running stage" not in proc.stdout
    assert sh(["git", "status", "--porcelain"], repo).stdout == before  # params.yaml and data.dvc untouched
    assert not (repo / "build").exists()


def reed_cub_at_tiny_sizes() -> list[str]:
    """configs/reed_cub.yaml's keys that size a run, at TINY's sizes; on a subset of CUB's classes."""
    from gancls.runs.experiment import settings_file, settings_of

    tiny = dict(s.split("=", 1) for s in settings_of(TINY))
    reed = dict(s.split("=", 1) for s in settings_file(ROOT / "configs/reed_cub.yaml"))
    sized = [f"{k}={tiny[k]}" for k in reed if k in tiny]
    assert "model.ngf=8" in sized and "train.epochs=2" in sized
    return [a for s in sized + ["validate.cub_counts=false"] for a in ("-S", s)]


def test_run_cub_settings_end_to_end_on_a_cub_layout_stand_in(project_clone):
    """validate -> prepare -> the class-based scorer -> train -> generate -> evaluate with data.source cub,
    the data at data/ as `gancls fetch` leaves it (dvc add data): a run that fails puts params.yaml and
    data.dvc back; the run that completes ends with the class text match and a finite FID."""
    repo = project_clone()
    dvc("repro", "make-sample", cwd=repo)
    shutil.copytree(repo / "build/sample", repo / "data")  # 8 of "CUB's" classes, in CUB's layout
    embeddings = repo / "data/test/char-CNN-RNN-embeddings.pickle"
    kept = embeddings.read_bytes()
    embeddings.unlink()
    from reed_t7_files import bare_encoder, random_weights, write_t7

    reed_t7 = repo / "data" / yaml.safe_load((repo / "params.yaml").read_text())["text_encoder"]["reed_t7"]
    reed_t7.parent.mkdir()
    write_t7(reed_t7, bare_encoder(random_weights(out=1024)))  # Reed's layout, as gancls fetch places it
    dvc("add", "data", cwd=repo)
    run_cub = ["gancls", "experiment", "--settings", "configs/reed_cub.yaml", *reed_cub_at_tiny_sizes()]
    saved = {f: (repo / f).read_bytes() for f in ("params.yaml", "data.dvc")}

    failed = sh(run_cub, repo, check=False)
    assert failed.returncode != 0 and "char-CNN-RNN-embeddings.pickle" in failed.stdout + failed.stderr
    assert "put back as they were: params.yaml" in failed.stderr
    assert {f: (repo / f).read_bytes() for f in saved} == saved

    embeddings.write_bytes(kept)
    dvc("add", "data", cwd=repo)
    sh(run_cub, repo)
    validation = json.loads((repo / "reports/validation/result.json").read_text())
    assert validation["success"] and validation["source"] == "cub" and validation["n_classes"] == 8
    scorer = json.loads((repo / "metrics/scorer.json").read_text())
    assert scorer["labels"] == ["class"]
    scores = json.loads((repo / "metrics/scores.json").read_text())
    assert scores["source"] == "cub" and 0 <= scores["text_match"]["accuracy"] <= 1
    assert set(scores["text_match"]["per_kind"]) == {"class"}
    assert scores["fid"] > 0 and scores["fid"] < float("inf")
    train = json.loads((repo / "dvclive/metrics.json").read_text())
    assert train["epochs"] == 2
    encoder = json.loads((repo / "metrics/text_encoder.json").read_text())
    assert encoder["source"] == "reed" and encoder["test_captions"] > 0  # Reed's .t7, imported by the stage
    assert scores["text_match"]["encoded_accuracy"] is not None
    params = (repo / "params.yaml").read_text()
    assert "source: cub" in params and "captions_per_sample: 4" in params  # the workspace holds the experiment
