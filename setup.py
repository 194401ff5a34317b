"""Packaging for iac-ci: the runtime, the CDK constructs and the ``iac-ci`` command."""
from pathlib import Path

from setuptools import find_packages, setup

RUNTIME = [
    line.strip()
    for line in Path("lambda_runtime/requirements-lambda.txt").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
]
EMBEDDED = [
    "moto[server]>=5.2.5,<6",
    "click>=8.1,<9",
    "rich>=13,<16",
]
CDK = [
    "aws-cdk-lib>=2.170,<3",
    "constructs>=10,<11",
    "cdk-nag>=2.28,<3",
]
DEV = [
    "pytest>=8,<10",
    "pytest-xdist>=3,<4",
    "pytest-timeout>=2,<3",
    "hypothesis>=6,<7",
    "ruff>=0.6,<1",
    "cfn-lint>=1,<2",
]

setup(
    name="iac-ci",
    version="0.1.0",
    description="Serverless continuous delivery for infrastructure as code",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(
        include=["lambda_runtime", "lambda_runtime.*", "iac_ci_constructs", "iac_ci_constructs.*", "iac_ci", "iac_ci.*"]
    ),
    package_data={
        "lambda_runtime": ["py.typed", "watchdog/*.json", "requirements-lambda.txt"],
        "iac_ci_constructs": ["py.typed"],
        "iac_ci": ["py.typed"],
    },
    include_package_data=True,
    install_requires=RUNTIME + EMBEDDED,
    extras_require={"cdk": CDK, "dev": DEV + CDK},
    entry_points={"console_scripts": ["iac-ci=iac_ci.cli:main"]},
)
