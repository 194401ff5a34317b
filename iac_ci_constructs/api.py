"""The ``Api`` namespace: the REST API every client (the CLI, CI systems, GitHub) calls.

Job, status and cancel requests are authenticated by the intake function (an HMAC signature over
timestamp, method, path and body), not by API Gateway. The approve and reject routes are
authorized by API Gateway with IAM (SigV4): the caller's principal is the reviewer, and
``IacCiPipeline.grant_approve`` gives a principal the right to call them. The logs route is opened
by a browser from a PR comment: the intake function checks the link's own signature and expiry.
The stage is throttled and logged, and path parameters are checked by a request validator.

With ``api_domain_name`` the API is served on that custom domain only (the execute-api endpoint is
disabled), with mutual TLS against the truststore of ``certificates.py``; its base path maps the
stage at the root, so the routes and their signed paths are the same as on execute-api.

The REST API is created before the functions (``build_api``) and given its routes after
(``Api.serve``): the functions' environment names the API's public URL (``Api.public_url``),
which must not depend on the methods that depend on the intake function.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Fn, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from iac_ci_constructs import defaults, nag
from iac_ci_constructs.certificates import Certificates
from iac_ci_constructs.props import IacCiPipelineProps
from lambda_runtime.schema import deployment

API_STAGE = "v1"


@dataclass
class Api:
    rest_api: apigw.RestApi
    request_validator: apigw.RequestValidator
    intake_integration: apigw.LambdaIntegration | None = None  # set by ``serve``
    domain: apigw.DomainName | None = None  # ``api_domain_name``: the only way in, with mutual TLS

    def add_route(self, method: str, path: str, integration: apigw.Integration | None = None, *,
                  iam_authorized: bool = False) -> apigw.Method:
        """``method path`` on the API; default: proxied to the intake function."""
        target = integration or self.intake_integration
        if target is None:
            raise RuntimeError("Api.add_route before Api.serve: no intake function to proxy to")
        resource = self.rest_api.root.resource_for_path(path)
        added = resource.add_method(
            method.upper(), target,
            authorization_type=apigw.AuthorizationType.IAM if iam_authorized else apigw.AuthorizationType.NONE,
            request_validator=self.request_validator,
        )
        nag.suppress_method(added, iam_authorized=iam_authorized,
                            signed_link=(method.upper(), path) in deployment.LINK_ROUTES)
        return added

    def serve(self, intake: lambda_.IFunction) -> None:
        """The routes of ``schema.deployment``, all proxied to ``intake``."""
        self.intake_integration = apigw.LambdaIntegration(intake, allow_test_invoke=False)
        for method, path in deployment.ROUTES:
            self.add_route(method, path)
        for method, path in deployment.IAM_ROUTES:
            self.add_route(method, path, iam_authorized=True)

    def public_url(self) -> str:
        """The stage's base URL (no trailing slash) from the API's id and the stage's name, not from
        the stage resource (``RestApi.url``): the stage depends on the deployment, the deployment on
        the methods and the methods on the intake function, whose environment holds this URL. With a
        custom domain, that domain's URL (the execute-api endpoint is disabled)."""
        if self.domain is not None:
            return f"https://{self.domain.domain_name}"
        stack = Stack.of(self.rest_api)
        return Fn.join("", ["https://", self.rest_api.rest_api_id, ".execute-api.", stack.region, ".",
                            stack.url_suffix, "/", API_STAGE])

    def decision_routes_arn(self) -> str:
        """The execute-api ARN pattern of the approve and reject routes of this stage."""
        return self.rest_api.arn_for_execute_api("POST", "/runs/*/*", API_STAGE)


def build_api(scope: Construct, props: IacCiPipelineProps, *, certificates: Certificates | None = None) -> Api:
    """``scope/Api``: the REST API and its stage, without routes yet (``Api.serve`` adds them); with
    ``api_domain_name``, its custom domain with mutual TLS against ``certificates``' truststore."""
    group = Construct(scope, "Api")
    domain = _domain_options(props, certificates)
    access_logs = defaults.log_group(group, "AccessLogs", retention=props.log_retention,
                                     removal_policy=props.removal_policy)
    rest_api = apigw.RestApi(
        group, "RestApi",
        description="iac-ci: submit, follow and cancel runs (HMAC-signed requests)",
        endpoint_types=[apigw.EndpointType.REGIONAL],
        cloud_watch_role=props.api_cloud_watch_role,
        cloud_watch_role_removal_policy=props.removal_policy if props.api_cloud_watch_role else None,
        disable_execute_api_endpoint=True if domain is not None else None, domain_name=domain,  # None: as before
        deploy_options=apigw.StageOptions(
            stage_name=API_STAGE,
            throttling_rate_limit=props.api_throttling_rate_limit_per_second,
            throttling_burst_limit=props.api_throttling_burst_limit,
            access_log_destination=apigw.LogGroupLogDestination(access_logs),
            access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                caller=False, http_method=True, ip=True, protocol=True, request_time=True,
                resource_path=True, response_length=True, status=True, user=False),
            logging_level=apigw.MethodLoggingLevel.ERROR, data_trace_enabled=False,
            metrics_enabled=True, tracing_enabled=props.tracing,
        ),
    )
    validator = rest_api.add_request_validator(
        "RequestValidator", validate_request_parameters=True, validate_request_body=False)
    return Api(rest_api=rest_api, request_validator=validator, domain=rest_api.domain_name)


def _domain_options(props: IacCiPipelineProps, certificates: Certificates | None) -> apigw.DomainNameOptions | None:
    """A regional custom domain, TLS 1.2, mutual TLS against the truststore object (API Gateway reads
    the version current at deployment; ``iac-ci certs`` tells it each later one)."""
    if props.api_domain_name is None or props.api_domain_certificate is None:
        return None
    assert certificates is not None  # created whenever a domain is set (certificates.mtls_enabled)
    return apigw.DomainNameOptions(
        domain_name=props.api_domain_name, certificate=props.api_domain_certificate,
        endpoint_type=apigw.EndpointType.REGIONAL, security_policy=apigw.SecurityPolicy.TLS_1_2,
        mtls=apigw.MTLSConfig(bucket=certificates.truststore_bucket, key=certificates.truststore_key),
    )
