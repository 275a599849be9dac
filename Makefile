# TSS-KD Studio. `make run` and `make test` create .venv when it is missing and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: install run demo test lint bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Until the browser studio lands: a short TSS-KD + RGA run on the built-in demo data, then a prediction.
run: demo
demo: install
	$(BIN)/python -m core.train --dataset synthetic --synthetic-train 2000 --synthetic-val 500 --synthetic-test 500 \
		--epochs 3 --batch-size 128 --name demo --runs-dir runs

test: install
	$(BIN)/python -m pytest -q -ra

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/throughput.py

clean:
	rm -rf .pytest_cache .ruff_cache
