# Two entry points: `make run` (the demo job on embedded AWS) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Byte-code caches on: the suite starts hundreds of Python processes (the CLI, the embedded AWS, the
# workers), and with PYTHONDONTWRITEBYTECODE set each would compile moto, botocore and the engine again
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test lint bench install clean synth

$(STAMP): setup.py pyproject.toml lambda_runtime/requirements-lambda.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# --no-compile: byte-compiling every dependency (botocore, aws-cdk-lib, moto) is most of an install's
	# time; Python compiles what is imported, once, as it is imported
	$(BIN)/pip install --quiet --no-compile -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/iac-ci run examples/demo/job.yaml --ssm /iac-ci/demo/deploy-token=demo-s3cr3t-token

# mypy runs beside the tests, not before them: on a fresh cache it spends minutes on one core reading
# aws-cdk-lib's types. Its report is printed only when it finds something (then the run fails).
test: $(STAMP)
	$(BIN)/ruff check lambda_runtime iac_ci iac_ci_constructs sample_app tests benchmarks
	scripts/actionlint.sh
	@echo "mypy: beside the tests ($(VENV)/mypy.log, printed if it finds anything)"; \
	$(BIN)/mypy > $(VENV)/mypy.log 2>&1 & types=$$!; \
	$(BIN)/pytest -n 3 --dist loadfile -q; tests=$$?; \
	if ! wait $$types; then cat $(VENV)/mypy.log; exit 1; fi; \
	exit $$tests

# The sample app (sample_app/app.py) with the CDK CLI pinned in package.json; no Docker needed to synth.
synth: $(STAMP)
	npm ci --no-audit --no-fund
	npx --no-install cdk synth --quiet --app "$(BIN)/python sample_app/app.py"
	$(BIN)/cfn-lint --non-zero-exit-code error cdk.out/*.template.json

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
