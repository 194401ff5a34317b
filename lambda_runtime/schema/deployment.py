"""What the CDK construct and the runtime must agree on about a deployment.

The construct builds one container image and selects each function's handler with the image
command; stack outputs are read back by ``iac-ci submit/status/cancel/smoke``. Both sides
import these names so neither can drift.
"""
from __future__ import annotations

from lambda_runtime.schema import layout

# Image command (handler) of each Lambda function in the single container image.
HANDLERS = {
    "intake": "lambda_runtime.intake.handler.handler",
    "packaging": "lambda_runtime.packaging.handler.handler",
    "orchestrator": "lambda_runtime.orchestrator.handler.handler",
    "worker": "lambda_runtime.worker.handler.handler",
}

# S3 -> SQS notifications on the internal bucket: key prefix -> consuming function.
NOTIFICATIONS = {
    layout.JOBS_PREFIX: "packaging",
    layout.WEBHOOKS_PREFIX: "packaging",
    layout.CALLBACKS_PREFIX: "orchestrator",
}

# HTTP API routes served by the intake function (API Gateway proxy integration), which
# authenticates them itself: an HMAC-signed request, GitHub's webhook signature, or a signed link.
ROUTES = (
    ("POST", "/jobs"),
    ("GET", "/runs/{run_id}"),
    ("POST", "/runs/{run_id}/cancel"),
    ("GET", "/runs/{run_id}/logs"),
    ("GET", "/runs/{run_id}/log"),
    ("GET", "/locks"),
    ("POST", "/locks/release"),
    ("POST", "/webhooks/github"),
)
# Those of ROUTES a browser opens from a link (``intake.log_links``): no headers of ours, the link's
# own expiry and signature authorize it.
LINK_ROUTES = (
    ("GET", "/runs/{run_id}/logs"),
)
# Routes API Gateway authorizes with IAM (SigV4): the caller's principal is the reviewer.
IAM_ROUTES = (
    ("POST", "/runs/{run_id}/approve"),
    ("POST", "/runs/{run_id}/reject"),
)

# Stack outputs (CfnOutput ids) the CLI reads from CloudFormation.
OUTPUT_API_URL = "ApiUrl"
OUTPUT_WEBHOOK_SECRET_ARN = "WebhookSecretArn"
OUTPUT_DONE_BUCKET = "DoneBucket"
OUTPUT_INTERNAL_BUCKET = "InternalBucket"
OUTPUT_STATE_BUCKET = "StateBucket"
OUTPUT_ORDERS_TABLE = "OrdersTable"
OUTPUT_EVENTS_TABLE = "OrderEventsTable"
OUTPUT_GITHUB_WEBHOOK_URL = "GitHubWebhookUrl"
# mutual TLS (``api_domain_name``/``api_mtls_certificates``): what ``iac-ci certs --stack`` manages
OUTPUT_API_DOMAIN_NAME = "ApiDomainName"
OUTPUT_API_DOMAIN_TARGET = "ApiDomainTarget"  # the regional name the domain's DNS record points at
OUTPUT_CERTIFICATES_TABLE = "CertificatesTable"
OUTPUT_TRUSTSTORE_URI = "TruststoreUri"  # s3://<bucket>/<key>
OUTPUT_CA_PARAMETER_PREFIX = "CaParameterPrefix"  # SSM SecureString names of the CA keys start with it
OUTPUT_CA_KEY_ARN = "CaKeyArn"  # the KMS key encrypting them
# The intake function's environment naming the certificates table: set, every request must carry a
# client certificate the table knows and has not revoked (``intake.client_certs``)
ENV_CLIENT_CERTS_TABLE = "IAC_CI_CLIENT_CERTS_TABLE"
# SSM names of the CA keys: ``<CA_PARAMETER_ROOT><stack name>/ca/``, outside every job prefix
CA_PARAMETER_ROOT = "/iac-ci-engine/"

# Worker Lambda: never retried by Lambda (an apply must not run twice), and its timeout is the
# Lambda maximum so an order's own timeout (<= 900 s) is what ends it.
WORKER_ASYNC_RETRIES = 0
WORKER_FUNCTION_TIMEOUT_SECONDS = 900
# The orchestrator's lease must end before SQS redelivers the message of a holder that died
# (queue visibility >= 6 x function timeout, as AWS recommends for event source mappings).
ORCHESTRATOR_TIMEOUT_SECONDS = 120
PACKAGING_TIMEOUT_SECONDS = 900
INTAKE_TIMEOUT_SECONDS = 10
QUEUE_VISIBILITY_FACTOR = 6
