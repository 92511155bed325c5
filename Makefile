# The two commands of the README: `make run` (pipeline on the embedded sample) and `make test`;
# `make serve` runs it on a schedule (docs/SCHEDULED_RUNS.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: install run test test-fast run-cub sweep flow serve demo demo-shot clean

install: $(STAMP)

# The environment is requirements.lock's: every package at its pinned version, each file checked against the
# lock's sha256 hashes; then the project itself (editable, no dependencies, built with the locked setuptools).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -c 'import sys; v = sys.version_info[:3]; sys.exit(None if (3, 11, 5) <= v < (3, 12) else f"make install: $(PYTHON) is Python {sys.version.split()[0]} ({sys.executable}); requirements.lock needs 3.11.5 or a later 3.11: make PYTHON=/path/to/python3.11")'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --progress-bar off --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --progress-bar off --no-deps --no-build-isolation -e .
	touch $@

# Refreshes requirements.lock from pyproject.toml ([project].dependencies and the test extra, and theirs) with
# pip-tools' pip-compile, pinned, in its own venv (.venv/lock-tools): the lock's pins are kept where
# pyproject.toml still allows them; make lock LOCK_ARGS=--upgrade (or --upgrade-package NAME) moves them to the
# newest allowed. Each pin gets the sha256 of every file of its release on the indexes pip is configured with
# (a few minutes). Then make install; tests/test_lock.py checks that the lock, pyproject.toml and .venv agree.
.PHONY: lock
lock:
	test -x $(VENV)/lock-tools/bin/python || $(PYTHON) -m venv $(VENV)/lock-tools
	$(VENV)/lock-tools/bin/python -m pip install -q --progress-bar off pip-tools==7.7.0 pip==26.3
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/lock-tools/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
	  --strip-extras --extra test --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) -o requirements.lock pyproject.toml
	{ printf '%s\n' '# The environment of make install (pip install --require-hashes --no-deps -r requirements.lock):' \
	  '# the dependencies of pyproject.toml and its test extra, and theirs, each at one version with the sha256' \
	  '# of every file of that release on the indexes pip is configured with. Refresh: make lock (see Makefile).'; \
	  cat requirements.lock; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

run: $(STAMP)
	$(BIN)/dvc repro
	@echo
	@echo "run report:        reports/report.md  (scores with chance and ceiling, links to every picture)"
	@echo "real vs generated: reports/real_vs_generated.png  (the same captions, 2x: what FID compares)"
	@echo "metrics:           metrics/scores.json (text_match, FID and KID with their floor, IS), dvclive/metrics.json (training), metrics/scorer.json, metrics/text_encoder.json"
	@echo "generated grid:    reports/generated_grid.png  (test captions x noise)"
	@echo "interpolations:    reports/interp_text.png (GAN-INT, text), reports/interp_noise.png (noise)"
	@echo "learning:          reports/train_progress.gif (last frame: reports/train_samples.png)"
	@echo "curves:            dvclive/plots/metrics/*.tsv  (losses; KID over training: kid.tsv; dvc plots show)"
	@echo "stage seconds:     metrics/stages/*.json  (the report: \"Where the minutes went\")"
	@echo "validation report: reports/validation/data_docs/index.html (and result.json)"
	@echo "typed sentences:   reports/typed_sentences.png (generate.sentences through the text encoder)"
	@echo "your own sentence: .venv/bin/gancls sample --text \"a small bird with a red body and a blue head\""

# The whole suite (what CI runs); test-fast: the linter and every test that trains no GAN, runs no pipeline
# and starts no server (pytest -m "not slow"; the mark: tests/conftest.py).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not slow"

# Reed's configuration on the real data in data/ (configs/reed_cub.yaml): stops at once, changing nothing,
# when data/ is missing; params.yaml and data.dvc are put back if the run fails.
run-cub: $(STAMP)
	@$(BIN)/gancls experiment --settings configs/reed_cub.yaml

# A sweep file's settings x seeds as DVC experiments (DVC's queue), then reports/sweeps/<name>/ (docs/SWEEPS.md):
# make sweep SWEEP=configs/sweeps/recipe.yaml
SWEEP ?= configs/sweeps/recipe.yaml
sweep: $(STAMP)
	$(BIN)/gancls sweep $(SWEEP)

flow: $(STAMP)
	$(BIN)/python -m flows.pipeline

# The scheduled deployment (docs/SCHEDULED_RUNS.md): a loopback Prefect server unless PREFECT_API_URL
# is set, the flow.cron schedule, one run at a time; Ctrl-C stops both.
serve: $(STAMP)
	$(BIN)/gancls serve

# The demo page (README "Demo page", docs/DEMO.md): the shipped model on demo.host:demo.port (loopback);
# another experiment's: make demo DEMO_ARGS="--exp NAME --port 0". Ctrl-C stops it.
demo: $(STAMP)
	$(BIN)/gancls demo $(DEMO_ARGS)

# The page in headless chromium, the first example drawn, screenshot in reports/demo.png; experiments side
# by side: make demo-shot SHOT_ARGS="--exp A --exp B --out reports/demo_compare.png".
demo-shot: $(STAMP)
	$(BIN)/python -m gancls.drawing.demo_browser --out reports/demo.png $(SHOT_ARGS)

clean:
	rm -rf build reports metrics
