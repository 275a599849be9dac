# TSS-KD Studio. `make run` and `make test` create .venv when it is missing and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: install run demo demo-model test test-fast screenshots lint bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# The studio on http://127.0.0.1:7860 with the demo data and the demo model ready (make run PORT=7861: another port).
PORT ?= 7860
run: install
	$(BIN)/python app.py --host 127.0.0.1 --port $(PORT) --data-root data --runs-dir runs --models-dir models

# A short TSS-KD + RGA run on the demo data from the command line: the quick preset (core.config.PRESETS, as
# the Train tab's), 5 epochs of 1,000 images at 32 px in batches of 32 without KD warm-up; a minute or a few on
# a laptop CPU.
demo: install
	$(BIN)/python -m core.train --preset quick --name demo --runs-dir runs

# The shipped demo model (assets/demo-model.*): TSS-KD + RGA with the studio's defaults (stable KD scaling,
# 10-epoch KD warm-up) on the demo data at 64 px. About 70 s on one H100 beside other runs
# (bench/gpu_session.sh); hours on a laptop CPU. The run fits the out-of-distribution check, export copies it,
# and the example scans are taken from the model's own test split.
demo-model: install
	$(BIN)/python -m core.train --dataset synthetic --image-size 64 --epochs 20 --method tss-kd \
		--name demo-model --runs-dir runs
	$(BIN)/python -m core.export --model "$$(ls -d runs/demo-model-* | tail -n 1)" \
		--out assets/demo-model.safetensors --half
	$(BIN)/python bench/demo_examples.py

test: install
	$(BIN)/python -m pytest -q -ra --durations=20

# Everything but the tests marked slow (trainer subprocesses, torchrun, the studio server, the browser).
test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not slow"

# The README's screenshots, from the headless-browser tests (needs Debian's chromium).
screenshots: install
	STUDIO_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/test_studio_browser.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/throughput.py

clean:
	rm -rf .pytest_cache .ruff_cache
