# The two commands of the README: `make run` (pipeline on the embedded sample) and `make test`;
# `make serve` runs it on a schedule (README "Scheduled runs").
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: install run test run-cub flow serve demo demo-shot clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --progress-bar off -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/dvc repro
	@echo
	@echo "run report:        reports/report.md  (scores with chance and ceiling, links to every picture)"
	@echo "metrics:           metrics/scores.json (text_match, FID, KID, IS), dvclive/metrics.json (training), metrics/scorer.json, metrics/text_encoder.json"
	@echo "generated grid:    reports/generated_grid.png  (test captions x noise)"
	@echo "interpolations:    reports/interp_text.png (GAN-INT, text), reports/interp_noise.png (noise)"
	@echo "learning:          reports/train_progress.gif (last frame: reports/train_samples.png)"
	@echo "loss curves:       dvclive/plots/metrics/*.tsv  (dvc plots show)"
	@echo "validation report: reports/validation/data_docs/index.html (and result.json)"
	@echo "typed sentences:   reports/typed_sentences.png (generate.sentences through the text encoder)"
	@echo "your own sentence: .venv/bin/gancls sample --text \"a small bird with a red body and a blue head\""

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Reed's configuration on the real data in data/ (configs/reed_cub.yaml): stops at once, changing nothing,
# when data/ is missing; params.yaml and data.dvc are put back if the run fails.
run-cub: $(STAMP)
	@$(BIN)/gancls experiment --settings configs/reed_cub.yaml

flow: $(STAMP)
	$(BIN)/python -m flows.pipeline

# The scheduled deployment (README "Scheduled runs"): a loopback Prefect server unless PREFECT_API_URL
# is set, the flow.cron schedule, one run at a time; Ctrl-C stops both.
serve: $(STAMP)
	$(BIN)/gancls serve

# The demo page (README "Demo page"): the shipped model on demo.host:demo.port (loopback);
# another experiment's: make demo DEMO_ARGS="--exp NAME --port 0". Ctrl-C stops it.
demo: $(STAMP)
	$(BIN)/gancls demo $(DEMO_ARGS)

# The page in headless chromium, the first example drawn, screenshot in reports/demo.png.
demo-shot: $(STAMP)
	$(BIN)/python -m gancls.demo_browser --out reports/demo.png

clean:
	rm -rf build reports metrics
