"""The mTLS service's Lambda: API Gateway has already verified the client certificate against the
truststore (ca-bootstrap publishes it); the handler only maps the certificate's subject to a client."""
import json
import os

ALLOWED = {cn.strip() for cn in os.environ.get("ALLOWED_CLIENT_CNS", "").split(",") if cn.strip()}


def handler(event, context):
    cert = event.get("requestContext", {}).get("authentication", {}).get("clientCert", {})
    subject = cert.get("subjectDN", "")
    cn = subject.removeprefix("CN=").split(",")[0]
    if cn not in ALLOWED:
        return {"statusCode": 403, "body": json.dumps({"error": f"client {cn or '?'} is not provisioned"})}
    return {"statusCode": 200, "body": json.dumps({"client": cn, "path": event.get("rawPath", "/")})}
