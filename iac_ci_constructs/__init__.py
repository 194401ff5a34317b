"""CDK constructs of iac-ci: ``IacCiPipeline`` deploys the whole engine in one statement.

    from iac_ci_constructs import IacCiPipeline
    IacCiPipeline(stack, "IacCi")                      # secure defaults
    IacCiPipeline(stack, "IacCi", allowed_role_arns=["arn:aws:iam::123456789012:role/deploy-*"])

Properties (all optional, keyword-only) are the fields of ``IacCiPipelineProps``; invalid values
raise ``IacCiPipelinePropsError`` listing every problem. cdk-nag (AwsSolutions, v2) suppressions
for the construct's own resources ship with it (``iac_ci_constructs.nag``).
"""

from iac_ci_constructs.image import ImageContextError
from iac_ci_constructs.pipeline import IacCiPipeline
from iac_ci_constructs.props import IacCiPipelineProps, IacCiPipelinePropsError
from lambda_runtime.pipelines.schedules import ScheduledJob
from lambda_runtime.schema.images import WorkerImage

__all__ = ["IacCiPipeline", "IacCiPipelineProps", "IacCiPipelinePropsError", "ImageContextError", "ScheduledJob",
           "WorkerImage"]
