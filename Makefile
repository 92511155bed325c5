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

# Reed's configuration on the real data (data.dvc): the seed's full sizes (ngf 128, ndf 64), batch 64,
# 600 epochs with lr halved every 100, and the 30k-sample scoring protocol; no hand edits of params.yaml.
CUB_SETTINGS := -S data.source=cub -S data.raw_dir=data -S model.ngf=128 -S model.ndf=64 \
                -S train.batch_size=64 -S train.lr=0.0002 -S train.beta1=0.5 -S train.epochs=600 -S train.lr_decay_every=100 \
                -S train.captions_per_sample=4 -S train.flip=true -S train.ema_decay=0 \
                -S train.sample_every=10 -S generate.num_samples=30000 -S generate.batch_size=250 \
                -S evaluate.kid_subset_size=1000 -S evaluate.kid_subsets=100

.PHONY: install run test run-cub flow serve clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --progress-bar off -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/dvc repro
	@echo
	@echo "run report:        reports/report.md  (scores with chance and ceiling, links to every picture)"
	@echo "metrics:           metrics/scores.json (text_match, FID, KID, IS), dvclive/metrics.json (training), metrics/scorer.json"
	@echo "generated grid:    reports/generated_grid.png  (test captions x noise)"
	@echo "interpolations:    reports/interp_text.png (GAN-INT, text), reports/interp_noise.png (noise)"
	@echo "learning:          reports/train_progress.gif (last frame: reports/train_samples.png)"
	@echo "loss curves:       dvclive/plots/metrics/*.tsv  (dvc plots show)"
	@echo "validation report: reports/validation/data_docs/index.html (and result.json)"
	@echo "your own grid:     .venv/bin/gancls sample --query \"red body\""

test: $(STAMP)
	$(BIN)/python -m pytest

run-cub: $(STAMP)
	$(BIN)/dvc exp run $(CUB_SETTINGS)

flow: $(STAMP)
	$(BIN)/python -m flows.pipeline

# The scheduled deployment (README "Scheduled runs"): a loopback Prefect server unless PREFECT_API_URL
# is set, the flow.cron schedule, one run at a time; Ctrl-C stops both.
serve: $(STAMP)
	$(BIN)/python -m flows.serve

clean:
	rm -rf build reports metrics
