"""The runtime image's build context: found in a source checkout, generated from an installed wheel.

One ``DockerImageAsset`` serves every function and the CodeBuild project. Its Dockerfile is
package data (``iac_ci_constructs/assets/Dockerfile``, the only copy) and installs the runtime with
``pip`` from the build context. In a source checkout the context is the repository root (narrowed
by ``.dockerignore``) and the Dockerfile is ``CHECKOUT_DOCKERFILE`` in it. A wheel install of this
package has no repository root, so ``image_directory()`` then writes an equivalent context (the
packaged Dockerfile at its root, a ``pyproject.toml`` with the installed distribution's name,
version and runtime dependencies, and a copy of the installed ``lambda_runtime`` package) to a
content-addressed directory under the system temp directory. ``dockerfile()`` names the Dockerfile
relative to the directory ``image_directory()`` returns (``DockerImageAsset(file=...)``). Nothing
is built at synth time: CDK only fingerprints and stages the directory; the image is built at
deploy time (``cdk deploy``/``cdk-assets``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from importlib import metadata, resources
from pathlib import Path

import lambda_runtime

DISTRIBUTION = "iac-ci"
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
EXTRA_MARKER = re.compile(r"\bextra\s*==")

# The Dockerfile is package data of this package, its only copy. In a source checkout the context is
# the repository root and the Dockerfile is this file's path in it; a generated context (wheel
# install) has it at its root, as has an explicit image_directory.
DOCKERFILE_RESOURCE = "assets/Dockerfile"
CHECKOUT_DOCKERFILE = f"{__package__}/{DOCKERFILE_RESOURCE}"
CONTEXT_DOCKERFILE = "Dockerfile"

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


def dockerfile_text() -> str:
    """The runtime image's Dockerfile (package data)."""
    return resources.files(__package__).joinpath(DOCKERFILE_RESOURCE).read_text(encoding="utf-8")


def source_checkout_root() -> Path | None:
    """The repository root when ``lambda_runtime`` is imported from a source checkout (or an
    editable install): the directory holding ``setup.py`` and ``CHECKOUT_DOCKERFILE`` next to it."""
    root = Path(lambda_runtime.__file__).resolve().parent.parent
    if (root / CHECKOUT_DOCKERFILE).is_file() and (root / "setup.py").is_file():
        return root
    return None


def image_directory(explicit: str | None = None) -> Path:
    """Directory to build the runtime image from (see the module docstring)."""
    if explicit is not None:
        path = Path(explicit)
        if not (path / CONTEXT_DOCKERFILE).is_file():
            raise ImageContextError(f"image_directory '{explicit}' has no Dockerfile")
        return path
    return source_checkout_root() or materialize_context()


def dockerfile(explicit: str | None = None) -> str:
    """The Dockerfile of ``image_directory(explicit)``, relative to that directory (the ``file`` of
    the ``DockerImageAsset``): ``CHECKOUT_DOCKERFILE`` in a source checkout, else ``Dockerfile``."""
    if explicit is None and source_checkout_root() is not None:
        return CHECKOUT_DOCKERFILE
    return CONTEXT_DOCKERFILE


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
    generated = {CONTEXT_DOCKERFILE: dockerfile_text(), "pyproject.toml": pyproject_text()}
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
