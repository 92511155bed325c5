"""`gancls demo`: the page in a real headless browser, the CLI's errors, and `--exp` through dvc.api."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gancls.cli import main
from gancls.config import load_params
from gancls.drawing.demo import DemoError, Shipped, experiment_model, sentence_gallery, start, workspace_model
from gancls.drawing.demo_browser import CHROMIUM, draw, open_page, press, read_gallery
from gancls.drawing.demo_browser import models as models_shown
from gancls.drawing.demo_load import run_load
from gancls.models.generator_file import load_generator, save_generator

from conftest import ROOT, section

SENTENCE = "a small bird with a red body and a blue head"


def needs_chromium():
    """CI (`.ci/run` sets CI=1 and installs chromium) fails without the browser; elsewhere it skips."""
    if not Path(CHROMIUM).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing under CI: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")


def cli_message(params_file: Path, text: str, capsys) -> str:
    """What `gancls sample --text TEXT` says about a bad sentence, after its `gancls sample: error: `."""
    assert main(["--params", str(params_file), "sample", "--text", text]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gancls sample: error: "), err
    return err.removeprefix("gancls sample: error: ")


def test_page_draws_sentences_in_a_real_browser(learned, tmp_path, capsys):
    needs_chromium()
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"text_match": {"accuracy": 0.4321, "chance": 0.1, "real_ceiling": 0.8}}))
    shipped = Shipped(
        "workspace",
        learned["model"] / "generator.pt",
        Path(learned["params"].text_encoder.weights),
        learned["params_file"],
        scores,
    ).load("cpu")
    cfg = section("demo", port=0, n_images=8, interp_steps=5)
    bad = {text: cli_message(learned["params_file"], text, capsys) for text in ("", "日本語")}
    app, url = start(shipped, cfg)
    try:
        assert url.startswith("http://127.0.0.1:")
        with open_page(url) as page:
            info = page.inner_text("#model-info")
            assert str(shipped.generator) in info and shipped.digest(shipped.generator) in info
            assert shipped.digest(shipped.encoder) in info and "0.432" in info

            page.fill("#sentence textarea", SENTENCE)
            got = press(page, "#draw", "#status", "#gallery", cfg.n_images)
            assert got["state"] == "gallery", got["status"]
            images = np.stack(got["images"])
            assert images.shape == (8, 64, 64, 3)
            assert len({img.tobytes() for img in images}) > 1, "the 8 images are all the same"
            assert images.std() > 5, "flat images"
            assert got["captions"] == [SENTENCE] * 8
            assert "error" not in got["status"] and got["toasts"] == []
            page.screenshot(path=tmp_path / "demo.png", full_page=True)

            for text, message in bad.items():
                page.fill("#sentence textarea", text)
                got = press(page, "#draw", "#status", "#gallery", cfg.n_images)
                assert got["state"] == "error"
                assert got["status"] == f"error: {message}"
                assert got["images"] == []

            page.get_by_role("tab", name="Interpolate (GAN-INT)").click()
            page.fill("#to textarea", "this bird is yellow with black wings")
            got = press(page, "#interpolate", "#interp-status", "#interp-gallery", cfg.interp_steps)
            assert got["state"] == "gallery", got["status"]
            ends = np.stack(got["images"])
            assert ends.shape == (5, 64, 64, 3) and not np.array_equal(ends[0], ends[-1])
            assert page.gancls["errors"] == [] and page.gancls["outside"] == []
            assert read_gallery(page, "#interp-status", "#interp-gallery")["toasts"] == []
    finally:
        app.close()


def test_demo_names_a_missing_generator(tmp_path, capsys):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["out_dir"] = str(tmp_path / "model")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--params", str(tmp_path / "params.yaml"), "demo", "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gancls demo: error: ") and len(err.splitlines()) == 1
    assert str(tmp_path / "model" / "generator.pt") in err and "make run" in err


@pytest.fixture(scope="module")
def experiments(learned, tmp_path_factory):
    """A git + DVC repository whose commit holds the learned generator (text match 0.25) and two saved
    experiments: ``same`` (that generator, other bytes: its digest differs) and ``other`` (its weights
    moved: other birds, text match 0.75). The workspace is back at the commit."""
    root = tmp_path_factory.mktemp("experiments")
    repo = root / "repo"
    repo.mkdir()
    dvc = [sys.executable, "-m", "dvc"]

    def sh(*cmd):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)

    def put(accuracy: float, generator: Path):
        (repo / "build/model").mkdir(parents=True, exist_ok=True)
        shutil.copy(generator, repo / "build/model/generator.pt")
        (repo / "metrics").mkdir(exist_ok=True)
        (repo / "metrics/scores.json").write_text(json.dumps({"text_match": {"accuracy": accuracy}}))
        sh(*dvc, "add", "-q", "build/model/generator.pt")

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "t@example.com")
    sh("git", "config", "user.name", "t")
    sh(*dvc, "init", "-q")
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    (repo / "build/text_encoder").mkdir(parents=True)
    shutil.copy(learned["params"].text_encoder.weights, repo / "build/text_encoder/encoder.pt")
    sh(*dvc, "add", "-q", "build/text_encoder/encoder.pt")
    put(0.25, learned["model"] / "generator.pt")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "baseline")
    same = root / "same.pt"
    same.write_bytes((learned["model"] / "generator.pt").read_bytes() + b"\0")
    put(0.25, same)
    sh(*dvc, "exp", "save", "-q", "-n", "same")
    g, mcfg = load_generator(learned["model"] / "generator.pt")
    with torch.no_grad():
        for w in g.parameters():
            w.add_(0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(1)))
    other = root / "other.pt"
    save_generator(g, mcfg, other)
    put(0.75, other)
    sh(*dvc, "exp", "save", "-q", "-n", "other")
    sh("git", "checkout", "-q", "--", ".")
    sh(*dvc, "checkout", "-q")
    return {"repo": repo, "same": same, "other": other}


def git_status(repo: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout


def test_exp_reads_an_experiment_without_touching_the_workspace(learned, experiments, tmp_path):
    repo = experiments["repo"]
    before = git_status(repo)
    ws_params = load_params(repo / "params.yaml")
    got = experiment_model("other", ws_params, tmp_path / "into", repo=repo)
    assert got.generator.read_bytes() == experiments["other"].read_bytes()
    assert json.loads(got.scores_file.read_text())["text_match"]["accuracy"] == 0.75
    assert got.source == "experiment other"
    here = workspace_model(ws_params, repo / "params.yaml")
    assert (repo / here.generator).read_bytes() == (learned["model"] / "generator.pt").read_bytes()
    assert git_status(repo) == before
    with pytest.raises(DemoError, match="no such experiment"):
        experiment_model("no-such-exp", ws_params, tmp_path / "none", repo=repo)


def test_page_compares_experiments_side_by_side(experiments, tmp_path):
    """`gancls demo --exp same --exp other`: the same sentence, number and seed drawn by each, under each
    one's digests and scores; the same weights draw the same birds, other weights other birds."""
    needs_chromium()
    repo = experiments["repo"]
    before = git_status(repo)
    params = load_params(repo / "params.yaml")
    models = [experiment_model(e, params, tmp_path / e, repo=repo).load("cpu") for e in ("same", "other")]
    app, url = start(models, section("demo", port=0, n_images=4))
    try:
        with open_page(url) as page:
            assert models_shown(page) == 2
            for i, m in enumerate(models):
                info = page.inner_text("#model-info" + ("-1" if i else ""))
                assert f"experiment {m.source.split()[-1]}" in info and m.digest(m.generator) in info, info
            assert "0.750" in page.inner_text("#model-info-1") and "0.250" in page.inner_text("#model-info")
            got = draw(page, SENTENCE, 4, 7)
            page.screenshot(path=tmp_path / "compare.png", full_page=True)
            assert page.gancls["errors"] == [] and page.gancls["outside"] == []
    finally:
        app.close()
    assert got["state"] == "gallery" and len(got["others"]) == 1, got["status"]
    first, second = np.stack(got["images"]), np.stack(got["others"][0]["images"])
    assert first.shape == second.shape == (4, 64, 64, 3)
    alone = np.stack([img for img, _ in sentence_gallery(models[0], SENTENCE, 4, 7)[0]])
    assert np.array_equal(first, alone), "the page's seed is not the seed the model was asked for"
    assert np.abs(first.astype(int) - second).mean() > 2, "other weights drew the same birds"
    assert "by each of 2 models" in got["status"] and got["others"][0]["captions"] == [SENTENCE] * 4
    assert git_status(repo) == before


def test_demo_refuses_an_experiment_named_twice(capsys):
    assert main(["demo", "--exp", "a", "--exp", "a", "--port", "0"]) == 1
    assert capsys.readouterr().err.strip() == "gancls demo: error: --exp: each experiment once (a, a)"


@pytest.fixture
def served(learned):
    shipped = Shipped(
        "workspace",
        learned["model"] / "generator.pt",
        Path(learned["params"].text_encoder.weights),
        learned["params_file"],
        learned["root"] / "no-scores.json",
    ).load("cpu")
    app, url = start(shipped, section("demo", port=0))
    yield url
    app.close()


BAD_REQUESTS = [
    ("count 0", SENTENCE, 0, 0),
    ("count 65", SENTENCE, 65, 0),
    ("seed not a number", SENTENCE, 4, "abc"),
    ("seed 1.5", SENTENCE, 4, 1.5),
    ("negative seed", SENTENCE, 4, -1),
    ("only spaces", "     ", 4, 0),
]


def test_bad_requests_get_the_clis_one_line(learned, served, tmp_path, capsys):
    """Requests the page's widgets would not send (Gradio's API takes any JSON) get the line `gancls
    sample` prints for the same arguments, and no image; a 10,000-character sentence is drawn from its
    first 201 characters with the CLI's warning, as the CLI does."""
    from gradio_client import Client

    client = Client(served, verbose=False, download_files=False)

    def cli(text, n, seed):
        code = main(
            [
                "--params",
                str(learned["params_file"]),
                "sample",
                "--text",
                text,
                "--n",
                str(n),
                "--seed",
                str(seed),
                "--out",
                str(tmp_path / "cli.png"),
            ]
        )
        return code, [line.split(": ", 2)[2] for line in capsys.readouterr().err.strip().splitlines()]

    for what, text, n, seed in BAD_REQUESTS:
        code, said = cli(text, n, seed)
        assert code == 1 and len(said) == 1, (what, said)
        *galleries, status = client.predict(text, n, seed, api_name="/draw")
        assert galleries == [[]], what
        assert html.unescape(re.sub(r"<[^>]+>", "", status)) == f"error: {said[0]}", what
    long = "a small bird with a red body " * 345  # 10,005 characters
    code, said = cli(long[:10000], 2, 0)
    assert code == 0 and len(said) == 1 and "10000 characters long" in said[0], said
    *galleries, status = client.predict(long[:10000], 2, 0, api_name="/draw")
    assert len(galleries[0]) == 2 and html.unescape(re.sub(r"<[^>]+>", "", status)).startswith(f"warning: {said[0]}")
    client.close()


def test_sixteen_users_at_once(served):
    """16 users of Gradio's client draw at once (the page's queue, demo.concurrency 1): every request is
    answered with its images, none errs, all within the bound. The latency figures: benchmarks/demo_load.py."""
    got = run_load(served, users=16, rounds=1, n=2, timeout_s=120)
    assert got["errors"] == [] and got["answered"] == 16, got
    assert 0 < got["p50_s"] <= got["p95_s"] <= got["max_s"] < 120
