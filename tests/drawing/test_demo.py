"""`gancls demo`: the page in a real headless browser, the CLI's errors, and `--exp` through dvc.api."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gancls.cli import main
from gancls.config import load_params
from gancls.drawing.demo import DemoError, Shipped, experiment_model, start, workspace_model
from gancls.drawing.demo_browser import CHROMIUM, open_page, press, read_gallery

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


def test_exp_reads_an_experiment_without_touching_the_workspace(learned, tmp_path):
    repo = tmp_path / "repo"
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
    other = tmp_path / "other.pt"  # the experiment's generator: another file, so its digest differs
    other.write_bytes((learned["model"] / "generator.pt").read_bytes() + b"\0")
    put(0.75, other)
    sh(*dvc, "exp", "save", "-q", "-n", "wider")
    sh("git", "checkout", "-q", "--", ".")
    sh(*dvc, "checkout", "-q")
    before = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout

    ws_params = load_params(repo / "params.yaml")
    got = experiment_model("wider", ws_params, tmp_path / "into", repo=repo)
    assert got.generator.read_bytes() == other.read_bytes()
    assert json.loads(got.scores_file.read_text())["text_match"]["accuracy"] == 0.75
    assert got.source == "experiment wider"
    here = workspace_model(ws_params, repo / "params.yaml")
    assert (repo / here.generator).read_bytes() == (learned["model"] / "generator.pt").read_bytes()
    assert subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout == before
    with pytest.raises(DemoError, match="no such experiment"):
        experiment_model("no-such-exp", ws_params, tmp_path / "none", repo=repo)
