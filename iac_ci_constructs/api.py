"""The ``Api`` namespace: the REST API every client (the CLI, CI systems, GitHub) calls.

Job, status and cancel requests are authenticated by the intake function (an HMAC signature over
timestamp, method, path and body), not by API Gateway. The approve and reject routes are
authorized by API Gateway with IAM (SigV4): the caller's principal is the reviewer, and
``IacCiPipeline.grant_approve`` gives a principal the right to call them. The stage is throttled
and logged, and path parameters are checked by a request validator.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from iac_ci_constructs import defaults, nag
from iac_ci_constructs.props import IacCiPipelineProps
from lambda_runtime.schema import deployment

API_STAGE = "v1"


@dataclass(frozen=True)
class Api:
    rest_api: apigw.RestApi
    request_validator: apigw.RequestValidator
    intake_integration: apigw.LambdaIntegration

    def add_route(self, method: str, path: str, integration: apigw.Integration | None = None, *,
                  iam_authorized: bool = False) -> apigw.Method:
        """``method path`` on the API; default: proxied to the intake function."""
        resource = self.rest_api.root.resource_for_path(path)
        added = resource.add_method(
            method.upper(), integration or self.intake_integration,
            authorization_type=apigw.AuthorizationType.IAM if iam_authorized else apigw.AuthorizationType.NONE,
            request_validator=self.request_validator,
        )
        nag.suppress_method(added, iam_authorized=iam_authorized)
        return added

    def decision_routes_arn(self) -> str:
        """The execute-api ARN pattern of the approve and reject routes of this stage."""
        return self.rest_api.arn_for_execute_api("POST", "/runs/*/*", API_STAGE)


def build_api(scope: Construct, props: IacCiPipelineProps, *, intake: lambda_.IFunction) -> Api:
    """``scope/Api`` with the routes of ``schema.deployment.ROUTES``, all proxied to ``intake``."""
    group = Construct(scope, "Api")
    access_logs = defaults.log_group(group, "AccessLogs", retention=props.log_retention,
                                     removal_policy=props.removal_policy)
    rest_api = apigw.RestApi(
        group, "RestApi",
        description="iac-ci: submit, follow and cancel runs (HMAC-signed requests)",
        endpoint_types=[apigw.EndpointType.REGIONAL],
        cloud_watch_role=props.api_cloud_watch_role,
        cloud_watch_role_removal_policy=props.removal_policy if props.api_cloud_watch_role else None,
        deploy_options=apigw.StageOptions(
            stage_name=API_STAGE,
            throttling_rate_limit=props.api_throttling_rate_limit_per_second,
            throttling_burst_limit=props.api_throttling_burst_limit,
            access_log_destination=apigw.LogGroupLogDestination(access_logs),
            access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                caller=False, http_method=True, ip=True, protocol=True, request_time=True,
                resource_path=True, response_length=True, status=True, user=False),
            logging_level=apigw.MethodLoggingLevel.ERROR, data_trace_enabled=False,
            metrics_enabled=True, tracing_enabled=True,
        ),
    )
    validator = rest_api.add_request_validator(
        "RequestValidator", validate_request_parameters=True, validate_request_body=False)
    api = Api(rest_api=rest_api, request_validator=validator,
              intake_integration=apigw.LambdaIntegration(intake, allow_test_invoke=False))
    for method, path in deployment.ROUTES:
        api.add_route(method, path)
    for method, path in deployment.IAM_ROUTES:
        api.add_route(method, path, iam_authorized=True)
    return api
