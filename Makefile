# Two entry points: `make run` (the demo job on embedded AWS) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench install clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/iac-ci run examples/demo/job.yaml --ssm /iac-ci/demo/deploy-token=demo-s3cr3t-token

test: $(STAMP)
	$(BIN)/ruff check lambda_runtime tests benchmarks
	$(BIN)/pytest -n 2 --dist loadfile -q

bench: $(STAMP)
	$(BIN)/python benchmarks/dag_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
