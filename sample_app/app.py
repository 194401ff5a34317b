"""Sample CDK app: the whole iac-ci engine with its defaults, checked by cdk-nag (AwsSolutions).

    make synth                                  # npm ci, cdk synth (no Docker needed), cfn-lint
    npx cdk deploy --app ".venv/bin/python sample_app/app.py"   # builds the image, needs Docker

The account and region come from the CDK CLI's environment (CDK_DEFAULT_ACCOUNT/REGION);
the stack name from IAC_CI_STACK_NAME (default: IacCi), the name the iac-ci CLI looks up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout without installing

from aws_cdk import App, Aspects, Environment, Stack  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from iac_ci_constructs import IacCiPipeline  # noqa: E402


def build(app: App) -> Stack:
    stack = Stack(
        app,
        os.environ.get("IAC_CI_STACK_NAME", "IacCi"),
        description="iac-ci: serverless continuous delivery for infrastructure as code",
        env=Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")),
    )
    IacCiPipeline(stack, "IacCi")
    Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return stack


if __name__ == "__main__":
    app = App()
    build(app)
    app.synth()
