# Two entry points: `make run` (the demo job on embedded AWS) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench install clean synth

$(STAMP): setup.py pyproject.toml lambda_runtime/requirements-lambda.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/iac-ci run examples/demo/job.yaml --ssm /iac-ci/demo/deploy-token=demo-s3cr3t-token

test: $(STAMP)
	$(BIN)/ruff check lambda_runtime iac_ci iac_ci_constructs sample_app tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -n 3 --dist loadfile -q

# The sample app (sample_app/app.py) with the CDK CLI pinned in package.json; no Docker needed to synth.
synth: $(STAMP)
	npm ci --no-audit --no-fund
	npx --no-install cdk synth --quiet --app "$(BIN)/python sample_app/app.py"
	$(BIN)/cfn-lint --non-zero-exit-code error cdk.out/*.template.json

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
